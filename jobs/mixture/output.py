"""The output location: a finished manifest, and the driver's last shards.

Per-group shards are written by the build pass; the driver then packs what each group left
over (its trailing partial chunk, the band documents fill.py took, and its validation
documents) in group order, streaming full shards out as it goes so its memory stays at one
shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from longreach.contract.common import StorageSpec
from longreach.contract.datamixture import DataMixtureSpec
from longreach.contract.storage import join, read_json_if_exists, write_bytes
from longreach.jobs.mixture.pack import Chunk, Packer, parquet_bytes, shard_entry
from longreach.jobs.mixture.units import CarryIndex, read_carry, read_carry_index, unit_name

SHARD_BYTES = 256 << 20


def finished_manifest(spec: DataMixtureSpec) -> dict[str, Any] | None:
    """The committed manifest, when this config's output is already finished (the owner record,
    claimed before, guarantees that it is this config's)."""
    return read_json_if_exists(join(spec.output.uri, "manifest.json"), spec.storage)


@dataclass
class ShardWriter:
    """Writes chunks as `folder/part-NNNNN.parquet` of about SHARD_BYTES, numbered from `next`."""

    out: str
    folder: str
    next: int
    sequence_length: int
    storage: StorageSpec | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    _pending: list[Chunk] = field(default_factory=list)

    def add(self, chunks: list[Chunk]) -> None:
        self._pending.extend(chunks)
        self.rows += len(chunks)
        if len(self._pending) >= max(1, SHARD_BYTES // (4 * self.sequence_length)):
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = parquet_bytes(self._pending, self.sequence_length)
        path = f"{self.folder}/part-{self.next:05d}.parquet"
        write_bytes(join(self.out, path), data, self.storage)
        self.entries.append(shard_entry(path, data, len(self._pending)))
        self.next += 1
        self._pending = []


def carry_uri(spec: DataMixtureSpec, unit: int) -> str:
    return join(spec.output.uri, "_work", f"{unit_name(unit)}.carry.npz.zst")


def carry_indexes(spec: DataMixtureSpec, units: int) -> Iterator[tuple[int, list[CarryIndex]]]:
    """Every unit's carry rows without their ids, for fill.py."""
    for i in range(units):
        yield i, read_carry_index(carry_uri(spec, i), spec.storage)


def finish(
    spec: DataMixtureSpec, summaries: list[dict[str, Any]], taken: set[tuple[int, int]]
) -> dict[str, Any]:
    """Pack the groups' tails and the band rows `taken` (unit, row) in group order, and the
    validation documents; write them. Validation chunks are packed per domain, so each holds
    one domain."""
    seq, storage, out = spec.sequenceLength, spec.storage, spec.output.uri
    tail = Packer(seq)
    train = ShardWriter(out, "train", len(summaries), seq, storage)
    val_packers: dict[str, Packer] = {}
    val_chunks: dict[str, list[Chunk]] = {}
    for i in range(len(summaries)):
        for row, c in enumerate(read_carry(carry_uri(spec, i), storage)):
            if c.kind == "train" or (c.kind == "band" and (i, row) in taken):
                train.add(tail.add(c.domain, c.ids))
            elif c.kind == "validation":
                packer = val_packers.setdefault(c.domain, Packer(seq))
                val_chunks.setdefault(c.domain, []).extend(packer.add(c.domain, c.ids))
    train.flush()
    validation = ShardWriter(out, "validation", 0, seq, storage)
    for domain in sorted(val_chunks):
        validation.add(val_chunks[domain])
    validation.flush()
    chunks = sum(s["chunks"] for s in summaries) + train.rows
    return {
        "shards": {
            "train": [s["shard"] for s in summaries if s["shard"]] + train.entries,
            "validation": validation.entries,
        },
        "counts": {
            "tokens": chunks * seq,
            "chunks": chunks,
            "validationTokens": validation.rows * seq,
            "validationChunks": validation.rows,
            "droppedTokens": {
                "train": tail.held,
                "remnants": sum(s["remnantTokens"] for s in summaries),
                "validation": sum(p.held for p in val_packers.values()),
            },
        },
        "validationDomains": {d: len(v) for d, v in sorted(val_chunks.items())},
    }
