"""The work of both passes; plain functions (Ray Data maps call them).

Pass 1 (`scan_unit`) reads one file and returns integer statistics. Pass 2 (`build_unit`)
reads a group of consecutive files again (see plan.group_files), keeps the documents the
plan selects, tokenizes them in batches, packs full chunks into `train/part-NNNNN.parquet`
(NNNNN = the group's index, so paths are deterministic) and leaves the trailing partial
chunk and the validation documents in `_work/unit-NNNNN.carry.parquet` for the driver;
`_work/unit-NNNNN.json`, written last, marks the group done so a rerun skips it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from longreach.contract.common import StorageSpec
from longreach.contract.datamixture import SourceSpec
from longreach.contract.errors import InputError
from longreach.contract.storage import join, write_bytes, write_json
from longreach.jobs.mixture.pack import (
    Chunk,
    Packer,
    cut_pieces,
    document_ids,
    parquet_bytes,
    shard_entry,
)
from longreach.jobs.mixture.readers import FileUnit, documents
from longreach.jobs.mixture.selection import DomainPlan, DomainStats, Scorer
from longreach.jobs.mixture.tokenizer import TokenizerInfo

MAX_EXAMPLES = 5
# Text per domain and file tokenized in pass 1 to calibrate the length estimate: bounded
# per file, so it stays a small share of the corpus (~0.3% of a SlimPajama file).
SAMPLE_CHARS = 16_384


def unit_name(index: int) -> str:
    return f"unit-{index:05d}"


def train_shard_path(index: int) -> str:
    return f"train/part-{index:05d}.parquet"


def scan_unit(
    unit: FileUnit,
    source: SourceSpec,
    storage: StorageSpec | None,
    scorer: Scorer,
    tokenizer: TokenizerInfo,
) -> dict[str, Any]:
    """Pass 1: per-domain statistics of every document, of the eligible ones per bucket, and
    a calibration sample (the first SAMPLE_CHARS of eligible text per domain, tokenized)."""
    stats: dict[str, DomainStats] = {}
    samples: dict[str, list[str]] = {}
    room: dict[str, int] = {}
    records = corrupt = 0
    examples: list[str] = []
    try:
        for index, text, domain in documents(unit, source, storage):
            records += 1
            if text is None:
                corrupt += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append(f"{unit.uri} line {index + 1}: {domain}")
                continue
            est = scorer.estimate(text)
            bucket, coin = scorer.identity(unit.source, unit.relpath, index)
            s = stats.setdefault(domain, DomainStats())
            s.add(est, scorer.specials, est >= scorer.short_tokens)
            if scorer.eligible(est, coin):
                s.eligible[bucket] += est + scorer.specials
                left = room.setdefault(domain, SAMPLE_CHARS)
                if left > 0:
                    samples.setdefault(domain, []).append(text[:left])
                    room[domain] = left - len(text)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{unit.uri}: cannot read it after {records} records ({type(exc).__name__}: {exc})"
        ) from exc
    _calibrate(stats, samples, scorer, tokenizer)
    return {
        "eligibleTokens": {d: int(s.eligible.sum()) for d, s in sorted(stats.items())},
        "stats": {d: s.to_json() for d, s in sorted(stats.items())},
        "records": records,
        "corrupt": corrupt,
        "examples": examples,
    }


def _calibrate(
    stats: dict[str, DomainStats],
    samples: dict[str, list[str]],
    scorer: Scorer,
    tokenizer: TokenizerInfo,
) -> None:
    if not samples:
        return
    tok = tokenizer.load()
    for domain, texts in samples.items():
        encoded = tok.encode_batch(texts, add_special_tokens=False)
        s = stats[domain]
        s.sample_estimated += sum(scorer.estimate(t) + scorer.specials for t in texts)
        s.sample_tokens += sum(len(e.ids) + scorer.specials for e in encoded)


@dataclass(frozen=True)
class BuildSettings:
    """Everything pass 2 needs beside the file itself."""

    scorer: Scorer
    plans: dict[str, DomainPlan]
    tokenizer: TokenizerInfo
    sequence_length: int
    cut_tokens: int | None
    """Piece length for strategy cut; None keeps documents whole."""
    output_uri: str
    storage: StorageSpec | None
    batch_size: int = 256
    """Documents per tokenizer batch; does not change the output."""


def _selected(
    unit: FileUnit, source: SourceSpec, settings: BuildSettings
) -> Iterator[tuple[str, str, str, int]]:
    """(kind, domain, text, est) of every kept document in file order; kind is train or
    validation."""
    scorer = settings.scorer
    for index, text, domain in documents(unit, source, settings.storage):
        plan = settings.plans.get(domain) if text is not None else None
        if plan is None or text is None:
            continue
        est = scorer.estimate(text)
        bucket, coin = scorer.identity(unit.source, unit.relpath, index)
        if not scorer.eligible(est, coin):
            continue
        if bucket < plan.train_end:
            yield "train", domain, text, est
        elif bucket >= plan.validation_start:
            yield "validation", domain, text, est


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pieces(ids: list[int], settings: BuildSettings) -> list[np.ndarray]:
    bos, eos = settings.tokenizer.document_bos, settings.tokenizer.document_eos
    if settings.cut_tokens is None:
        return [document_ids(ids, bos, eos)]
    return list(cut_pieces(ids, settings.cut_tokens, bos, eos))


def build_unit(
    index: int, files: list[tuple[FileUnit, SourceSpec]], settings: BuildSettings
) -> dict[str, Any]:
    """Pass 2 on one group of files, packed in file order into one shard; returns (and
    writes as `_work/unit-NNNNN.json`) its summary."""
    tokenizer = settings.tokenizer.load()
    packer = Packer(settings.sequence_length)
    chunks: list[Chunk] = []
    validation: list[tuple[str, np.ndarray]] = []
    after: dict[str, DomainStats] = {}
    short = settings.scorer.short_tokens
    selected = (doc for unit, source in files for doc in _selected(unit, source, settings))
    for batch in _batches(selected, settings.batch_size):
        encoded = tokenizer.encode_batch(
            [text for _, _, text, _ in batch], add_special_tokens=False
        )
        for (kind, domain, _, est), enc in zip(batch, encoded, strict=True):
            pieces = _pieces(enc.ids, settings)
            n = sum(len(p) for p in pieces)
            if kind == "validation":
                validation.extend((domain, p) for p in pieces)
                continue
            s = after.setdefault(domain, DomainStats())
            s.add(est, settings.scorer.specials, est >= short and settings.cut_tokens is None)
            s.actual_tokens += n
            s.actual_long_tokens += n if n >= short and settings.cut_tokens is None else 0
            for piece in pieces:
                chunks.extend(packer.add(domain, piece))
    shard = None
    if chunks:
        data = parquet_bytes(chunks, settings.sequence_length)
        path = train_shard_path(index)
        write_bytes(join(settings.output_uri, path), data, settings.storage)
        shard = shard_entry(path, data, len(chunks))
    tail, remnant = packer.whole_tail()
    carry = [("train", d, ids) for d, ids in tail] + [
        ("validation", d, ids) for d, ids in validation
    ]
    work = join(settings.output_uri, "_work")
    write_bytes(
        join(work, f"{unit_name(index)}.carry.parquet"), carry_bytes(carry), settings.storage
    )
    summary = {
        "unit": index,
        "shard": shard,
        "chunks": len(chunks),
        "tailTokens": packer.held - remnant,
        "remnantTokens": remnant,
        "after": {d: s.to_json(with_buckets=False) for d, s in sorted(after.items())},
    }
    write_json(join(work, f"{unit_name(index)}.json"), summary, settings.storage)
    return summary


def carry_bytes(pieces: list[tuple[str, str, np.ndarray]]) -> bytes:
    """The pieces a unit hands to the driver, as Parquet: kind, domain, ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [p[2] for p in pieces]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
    values = np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32)
    table = pa.table(
        {
            "kind": pa.array([p[0] for p in pieces], pa.string()),
            "domain": pa.array([p[1] for p in pieces], pa.string()),
            "ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32())),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def read_carry(uri: str, storage: StorageSpec | None) -> list[tuple[str, str, np.ndarray]]:
    import pyarrow.parquet as pq

    from longreach.contract.storage import filesystem

    fs, path = filesystem(uri, storage)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    kinds, domains = table.column("kind").to_pylist(), table.column("domain").to_pylist()
    col = table.column("ids").combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return [
        (k, d, values[offsets[i] : offsets[i + 1]])
        for i, (k, d) in enumerate(zip(kinds, domains, strict=True))
    ]
