"""The work of both passes; plain functions (Ray Data maps call them).

Pass 1 (`scan_unit`) reads one file and returns integer statistics. Pass 2 (`build_unit`)
reads a group of consecutive files again (see plan.group_files), keeps the documents the
plan selects, tokenizes them in batches, packs full chunks into `train/part-NNNNN.parquet`
(NNNNN = the group's index, so paths are deterministic) and leaves the trailing partial
chunk, the band documents (plan.py) and the validation documents in
`_work/unit-NNNNN.carry.npz.zst` for the driver;
`_work/unit-NNNNN.json`, written last, marks the group done so a rerun skips it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longreach.contract.common import StorageSpec
from longreach.contract.datamixture import SourceSpec
from longreach.contract.errors import InputError
from longreach.contract.storage import filesystem, join, write_bytes, write_json
from longreach.jobs.mixture.pack import (
    Chunk,
    Packer,
    cut_pieces,
    document_ids,
    parquet_bytes,
    shard_entry,
)
from longreach.jobs.mixture.plan import WHAT, DomainPlan, place
from longreach.jobs.mixture.readers import FileUnit, documents
from longreach.jobs.mixture.selection import DomainStats, OrderHistogram, Scorer, bin_of
from longreach.jobs.mixture.tokenizer import TokenizerInfo

MAX_EXAMPLES = 5
# Text per domain, kind of document (long, short) and file tokenized in pass 1 to calibrate the
# length estimate: bounded per file, so it stays a small share of the corpus.
SAMPLE_CHARS = 8_192


def unit_name(index: int) -> str:
    return f"unit-{index:05d}"


def train_shard_path(index: int) -> str:
    return f"train/part-{index:05d}.parquet"


@dataclass
class FileScan:
    """What pass 1 gathers from one file."""

    stats: dict[str, DomainStats] = field(default_factory=dict)
    order: dict[str, dict[str, tuple[list[int], list[int]]]] = field(default_factory=dict)
    samples: dict[tuple[str, bool], list[str]] = field(default_factory=dict)
    room: dict[tuple[str, bool], int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(
        default_factory=lambda: {k: [] for k in ("index", "domain", "est", "hash", "coin")}
    )
    """Every good line's number, domain (index into `stats`' order of arrival), estimate and
    keys: what pass 2 needs to place it without parsing it (plan.place)."""
    domains: dict[str, int] = field(default_factory=dict)

    def add(
        self, scorer: Scorer, index: int, domain: str, text: str, hash_: int, coin: int
    ) -> None:
        est = scorer.estimate(text)
        long = scorer.is_long(est)
        lines = self.lines
        lines["index"].append(index)
        lines["domain"].append(self.domains.setdefault(domain, len(self.domains)))
        lines["est"].append(est)
        lines["hash"].append(hash_)
        lines["coin"].append(coin)
        self.stats.setdefault(domain, DomainStats()).add(est, scorer.specials, long)
        if scorer.eligible(est, coin):
            name, b = ("eligible_long" if long else "eligible_short"), bin_of(hash_)
        else:
            name, b = "rest", bin_of(coin)
        bins, tokens = self.order.setdefault(domain, {}).setdefault(name, ([], []))
        bins.append(b)
        tokens.append(est + scorer.specials)
        left = self.room.setdefault((domain, long), SAMPLE_CHARS)
        if left > 0:
            self.samples.setdefault((domain, long), []).append(text[:left])
            self.room[(domain, long)] = left - len(text)

    def line_arrays(self) -> dict[str, np.ndarray]:
        """The record of every line as arrays (what plan.place takes)."""
        types = {"index": np.int64, "domain": np.int16, "est": np.int64}
        return {k: np.array(v, types.get(k, np.uint64)) for k, v in self.lines.items()}

    def lines_bytes(self) -> bytes:
        """The record of every line, for `read_lines`."""
        names = np.array(list(self.domains), dtype=np.str_)
        return npz_bytes({**self.line_arrays(), "names": names})


def lines_uri(output_uri: str, file: int) -> str:
    """Where pass 1 leaves its record of input file `file`'s lines for pass 2."""
    return join(output_uri, "_work", f"lines-{file:05d}.npz.zst")


def read_lines(uri: str, storage: StorageSpec | None) -> tuple[list[str], dict[str, np.ndarray]]:
    """(domain names, arrays) of pass 1's record of a file's lines."""
    arrays = read_npz(uri, storage)
    return arrays.pop("names").tolist(), arrays


def scan_unit(
    unit: FileUnit,
    source: SourceSpec,
    storage: StorageSpec | None,
    scorer: Scorer,
    tokenizer: TokenizerInfo,
    record_uri: str,
) -> dict[str, Any]:
    """Pass 1: per-domain statistics of every document, estimated tokens along the order
    keys, and a calibration sample (the first SAMPLE_CHARS of long and of short documents'
    text per domain, tokenized); the record of its lines goes to `record_uri`."""
    scan = FileScan()
    records = corrupt = 0
    examples: list[str] = []
    identity = scorer.identities(unit.source, unit.relpath)
    try:
        for index, text, domain in documents(unit, source, storage):
            records += 1
            if text is None:
                corrupt += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append(f"{unit.uri} line {index + 1}: {domain}")
                continue
            scan.add(scorer, index, domain, text, *identity(index))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{unit.uri}: cannot read it after {records} records ({type(exc).__name__}: {exc})"
        ) from exc
    _calibrate(scan, scorer, tokenizer)
    write_bytes(record_uri, scan.lines_bytes(), storage)
    return {
        "tokens": {d: s.tokens for d, s in sorted(scan.stats.items())},
        "stats": {d: s.to_json() for d, s in sorted(scan.stats.items())},
        "order": {d: OrderHistogram.of(o).to_json() for d, o in sorted(scan.order.items())},
        "records": records,
        "corrupt": corrupt,
        "examples": examples,
    }


def _calibrate(scan: FileScan, scorer: Scorer, tokenizer: TokenizerInfo) -> None:
    if not scan.samples:
        return
    tok = tokenizer.load()
    for (domain, long), texts in sorted(scan.samples.items()):
        encoded = tok.encode_batch(texts, add_special_tokens=False)
        est = sum(scorer.estimate(t) + scorer.specials for t in texts)
        real = sum(len(e.ids) + scorer.specials for e in encoded)
        s = scan.stats[domain]
        if long:
            s.sample_long_estimated += est
            s.sample_long_tokens += real
        else:
            s.sample_short_estimated += est
            s.sample_short_tokens += real


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


@dataclass(frozen=True)
class Selected:
    """A document pass 2 keeps (train), hands to the driver (band) or holds out (validation)."""

    what: str
    domain: str
    text: str
    est: int
    stage: int
    key: int


def _selected(
    file: int, unit: FileUnit, source: SourceSpec, settings: BuildSettings
) -> Iterator[Selected]:
    """Every document the plan selects, in file order; only those lines are parsed."""
    names, lines = read_lines(lines_uri(settings.output_uri, file), settings.storage)
    what, stage, key = place(settings.plans, names, lines, settings.scorer)
    chosen = np.flatnonzero(what)
    wanted = dict(zip(lines["index"][chosen].tolist(), chosen.tolist(), strict=True))
    for index, text, domain in documents(unit, source, settings.storage, wanted=wanted):
        k = wanted[index]
        if text is None or domain != names[lines["domain"][k]]:
            raise InputError(
                f"{unit.uri} line {index + 1}: the file changed after pass 1 read it; inputs "
                f"must not change while a mixture runs (delete {settings.output_uri}/_work to "
                "start over)"
            )
        yield Selected(
            WHAT[what[k]], domain, text, int(lines["est"][k]), int(stage[k]), int(key[k])
        )


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def pieces_of(
    doc: Selected, ids: list[int], settings: BuildSettings
) -> list[tuple[np.ndarray, int]]:
    """The document's pieces (one, or cutTokens-long ones for strategy cut), each with its
    estimated tokens: for cut, the document's estimate split in proportion to the pieces."""
    bos, eos = settings.tokenizer.document_bos, settings.tokenizer.document_eos
    if settings.cut_tokens is None:
        return [(document_ids(ids, bos, eos), doc.est)]
    pieces = list(cut_pieces(ids, settings.cut_tokens, bos, eos))
    specials = settings.scorer.specials
    return [(p, round(doc.est * (len(p) - specials) / max(1, len(ids)))) for p in pieces]


def add_after(
    stats: dict[str, DomainStats], domain: str, est: int, tokens: int, scorer: Scorer
) -> None:
    """Count a kept piece in the after statistics, by estimate and by tokenizer."""
    stats.setdefault(domain, DomainStats()).add(
        est, scorer.specials, scorer.is_long(est), actual=tokens
    )


def build_unit(
    index: int, files: list[tuple[int, FileUnit, SourceSpec]], settings: BuildSettings
) -> dict[str, Any]:
    """Pass 2 on one group of files, packed in file order into one shard; returns (and
    writes as `_work/unit-NNNNN.json`) its summary."""
    tokenizer = settings.tokenizer.load()
    packer = Packer(settings.sequence_length)
    chunks: list[Chunk] = []
    band: list[Carry] = []
    validation: list[Carry] = []
    after: dict[str, DomainStats] = {}
    top_coin: dict[str, int] = {}
    selected = (doc for i, unit, source in files for doc in _selected(i, unit, source, settings))
    for batch in _batches(selected, settings.batch_size):
        encoded = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encoded, strict=True):
            pieces = pieces_of(doc, enc.ids, settings)
            if doc.what != "train":
                into = band if doc.what == "band" else validation
                into.extend(
                    Carry(doc.what, doc.domain, p, doc.stage, doc.key, e) for p, e in pieces
                )
                continue
            if doc.stage == 1:
                top_coin[doc.domain] = max(top_coin.get(doc.domain, 0), doc.key)
            for piece, est in pieces:
                add_after(after, doc.domain, est, len(piece), settings.scorer)
                chunks.extend(packer.add(doc.domain, piece))
    shard = None
    if chunks:
        data = parquet_bytes(chunks, settings.sequence_length)
        path = train_shard_path(index)
        write_bytes(join(settings.output_uri, path), data, settings.storage)
        shard = shard_entry(path, data, len(chunks))
    tail, remnant = packer.whole_tail()
    carry = [Carry("train", d, ids) for d, ids in tail] + band + validation
    work = join(settings.output_uri, "_work")
    write_bytes(
        join(work, f"{unit_name(index)}.carry.npz.zst"), carry_bytes(carry), settings.storage
    )
    summary = {
        "unit": index,
        "shard": shard,
        "chunks": len(chunks),
        "tailTokens": packer.held - remnant,
        "remnantTokens": remnant,
        "after": {d: s.to_json() for d, s in sorted(after.items())},
        "topCoin": {d: str(c) for d, c in sorted(top_coin.items())},
    }
    write_json(join(work, f"{unit_name(index)}.json"), summary, settings.storage)
    return summary


@dataclass(frozen=True)
class Carry:
    """A piece a unit hands to the driver: the tail of its train chunks, a band document's
    piece (with its order stage and key, and estimate), or a validation document's piece."""

    kind: str
    domain: str
    ids: np.ndarray
    stage: int = 0
    key: int = 0
    est: int = 0


@dataclass(frozen=True)
class CarryIndex:
    """A carry row without its ids."""

    kind: str
    domain: str
    stage: int
    key: int
    est: int
    tokens: int


def carry_bytes(pieces: list[Carry]) -> bytes:
    """The pieces a unit hands to the driver: numpy arrays (kind and domain as indexes into
    name lists, stage, key, est, tokens, and the ids with their offsets) in a zstd-compressed
    .npz. Not Parquet: the driver reads every unit's carry, and pyarrow's Parquet reader
    imports pandas, which a small job's driver would pay for."""
    kinds = {k: i for i, k in enumerate(sorted({p.kind for p in pieces}))}
    domains = {d: i for i, d in enumerate(sorted({p.domain for p in pieces}))}
    lengths = np.array([len(p.ids) for p in pieces], np.int64)
    arrays = {
        "kinds": np.array(list(kinds), dtype=np.str_),
        "domains": np.array(list(domains), dtype=np.str_),
        "kind": np.array([kinds[p.kind] for p in pieces], np.int8),
        "domain": np.array([domains[p.domain] for p in pieces], np.int16),
        "stage": np.array([p.stage for p in pieces], np.int8),
        "key": np.array([p.key for p in pieces], np.uint64),
        "est": np.array([p.est for p in pieces], np.int64),
        "tokens": lengths,
        "ids": np.concatenate([p.ids for p in pieces]).astype(np.int32)
        if pieces
        else np.zeros(0, np.int32),
    }
    return npz_bytes(arrays)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as a zstd-compressed .npz."""
    import zstandard

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return zstandard.ZstdCompressor(level=3).compress(buffer.getvalue())


def read_npz(uri: str, storage: StorageSpec | None) -> dict[str, np.ndarray]:
    import zstandard

    fs, path = filesystem(uri, storage)
    with fs.open(path, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    with np.load(io.BytesIO(raw)) as npz:
        return {k: npz[k] for k in npz.files}


def _index(a: dict[str, np.ndarray]) -> list[CarryIndex]:
    kinds, domains = a["kinds"].tolist(), a["domains"].tolist()
    return [
        CarryIndex(kinds[k], domains[d], stage, key, est, tokens)
        for k, d, stage, key, est, tokens in zip(
            a["kind"].tolist(),
            a["domain"].tolist(),
            a["stage"].tolist(),
            a["key"].tolist(),
            a["est"].tolist(),
            a["tokens"].tolist(),
            strict=True,
        )
    ]


def read_carry_index(uri: str, storage: StorageSpec | None) -> list[CarryIndex]:
    """A unit's carry without the token ids."""
    return _index(read_npz(uri, storage))


def read_carry(uri: str, storage: StorageSpec | None) -> list[Carry]:
    """A unit's carry, in the order it was written."""
    a = read_npz(uri, storage)
    offsets = np.concatenate([[0], np.cumsum(a["tokens"])]).astype(np.int64)
    return [
        Carry(r.kind, r.domain, a["ids"][offsets[i] : offsets[i + 1]], r.stage, r.key, r.est)
        for i, r in enumerate(_index(a))
    ]
