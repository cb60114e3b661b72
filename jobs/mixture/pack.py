"""The pure core of packing: documents' token ids in, fixed-length chunks with spans out.

Documents are concatenated across boundaries into chunks of exactly `sequence_length`
tokens (the paper's packing); each chunk lists the spans `{domain, start, end}` of the
pieces of documents in it, so per-domain statistics survive packing. A span that begins a
chunk may continue a document from the previous chunk; every other span begins a document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Span = dict[str, Any]


@dataclass
class Chunk:
    input_ids: np.ndarray
    """int32, exactly sequence_length long."""
    spans: list[Span]
    """{domain, start, end} per piece of a document, in order, tiling the chunk."""


@dataclass
class Packer:
    """Concatenates pieces and cuts full chunks; what is left is `tail()`."""

    sequence_length: int
    _ids: list[np.ndarray] = field(default_factory=list)
    _domains: list[str] = field(default_factory=list)
    _held: int = 0
    _continued: bool = False
    """Whether the first held piece is the rest of a document already partly in a chunk."""

    def add(self, domain: str, ids: np.ndarray) -> list[Chunk]:
        """Append one document (or piece); return the chunks it completed."""
        if len(ids) == 0:
            return []
        self._ids.append(np.asarray(ids, dtype=np.int32))
        self._domains.append(domain)
        self._held += len(ids)
        out = []
        while self._held >= self.sequence_length:
            out.append(self._cut())
        return out

    def _cut(self) -> Chunk:
        n, spans, parts = self.sequence_length, [], []
        pos = 0
        while pos < n:
            ids, domain = self._ids[0], self._domains[0]
            take = min(len(ids), n - pos)
            parts.append(ids[:take])
            spans.append({"domain": domain, "start": pos, "end": pos + take})
            pos += take
            if take == len(ids):
                self._ids.pop(0)
                self._domains.pop(0)
                self._continued = False
            else:
                self._ids[0] = ids[take:]
                self._continued = True
        self._held -= n
        return Chunk(np.concatenate(parts), spans)

    def tail(self) -> list[tuple[str, np.ndarray]]:
        """The pieces not yet in a full chunk (the trailing partial chunk)."""
        return list(zip(self._domains, self._ids, strict=True))

    def whole_tail(self) -> tuple[list[tuple[str, np.ndarray]], int]:
        """The tail's whole documents, and the tokens of the leading remnant of a document
        cut by the last chunk: packed elsewhere it would sit mid-chunk, detached from its
        start, so it is dropped (and counted) instead."""
        pieces = self.tail()
        if self._continued and pieces:
            return pieces[1:], len(pieces[0][1])
        return pieces, 0

    @property
    def held(self) -> int:
        return self._held


def document_ids(ids: list[int], bos: int | None, eos: int | None) -> np.ndarray:
    """A document's ids with BOS before and EOS after, where configured."""
    arr = np.empty(len(ids) + (bos is not None) + (eos is not None), np.int32)
    start = 0
    if bos is not None:
        arr[0] = bos
        start = 1
    arr[start : start + len(ids)] = ids
    if eos is not None:
        arr[-1] = eos
    return arr


def cut_pieces(
    ids: list[int], piece: int, bos: int | None, eos: int | None
) -> Iterator[np.ndarray]:
    """Strategy `cut`: a document as independent pieces of at most `piece` tokens, each with
    its own BOS (and EOS), so no dependency spans more than `piece` tokens."""
    room = piece - (bos is not None) - (eos is not None)
    if room < 1:
        raise ValueError(f"strategy.cutTokens {piece} leaves no room for text beside BOS/EOS")
    for start in range(0, max(len(ids), 1), room):
        yield document_ids(ids[start : start + room], bos, eos)


def chunks_table(chunks: list[Chunk], sequence_length: int) -> Any:
    """A pyarrow table: `input_ids` list<int32>, `spans` list<struct<domain, start, end>>.
    Built from numpy buffers: pyarrow's conversion of Python objects imports pandas, which
    costs a small job more than its packing does."""
    import pyarrow as pa

    values = (
        np.concatenate([c.input_ids for c in chunks]) if chunks else np.zeros(0, np.int32)
    ).astype(np.int32, copy=False)
    offsets = np.arange(len(chunks) + 1, dtype=np.int32) * sequence_length
    input_ids = pa.ListArray.from_arrays(_int32(offsets), _int32(values))
    spans = [span for c in chunks for span in c.spans]
    names = [s["domain"].encode() for s in spans]
    domain = pa.StringArray.from_buffers(
        len(spans),
        pa.py_buffer(np.concatenate([[0], np.cumsum([len(n) for n in names])]).astype(np.int32)),
        pa.py_buffer(b"".join(names)),
    )
    fields = [domain] + [
        _int32(np.array([s[k] for s in spans], np.int32)) for k in ("start", "end")
    ]
    span_offsets = np.concatenate([[0], np.cumsum([len(c.spans) for c in chunks])]).astype(np.int32)
    structs = pa.StructArray.from_arrays(fields, names=["domain", "start", "end"])
    return pa.table(
        {
            "input_ids": input_ids,
            "spans": pa.ListArray.from_arrays(_int32(span_offsets), structs),
        }
    )


def _int32(values: np.ndarray) -> Any:
    import pyarrow as pa

    data = np.ascontiguousarray(values, dtype=np.int32)
    return pa.Array.from_buffers(pa.int32(), len(data), [None, pa.py_buffer(data)])


def parquet_bytes(chunks: list[Chunk], sequence_length: int) -> bytes:
    """The chunks as one Parquet file (deterministic bytes for the same chunks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    rows_per_group = max(1, (64 << 20) // (4 * sequence_length))
    pq.write_table(
        chunks_table(chunks, sequence_length),
        sink,
        compression="zstd",
        row_group_size=rows_per_group,
    )
    return sink.getvalue().to_pybytes()


def shard_entry(path: str, data: bytes, rows: int) -> dict[str, Any]:
    return {
        "path": path,
        "rows": rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
