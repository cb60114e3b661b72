"""A small DataMixture output folder with a learnable pattern, for tests and benchmarks.

Every row walks a fixed cycle of token ids from a random starting point, so the next token is
a function of the current one: a tiny model's loss falls visibly within a few steps. The layout
is the DataMixture's (train/ and validation/ Parquet shards with input_ids and spans, then
manifest.json written last)."""

from __future__ import annotations

import io
from typing import Any

from longreach.contract import storage
from longreach.contract.common import StorageSpec

FIRST_ID = 4  # after <unk>, <s>, </s>, <pad>


def pattern_rows(
    rows: int, length: int, vocab_size: int, seed: int, split: int = 0, period: int = 64
) -> Any:
    """`rows` × `length` int32 token ids following the cycle of `period` ids that `seed` picks;
    `split` only changes the starting points (validation follows the same cycle as train)."""
    import numpy as np

    span = min(period, vocab_size - FIRST_ID)
    cycle = np.random.default_rng(seed).permutation(np.arange(FIRST_ID, vocab_size))[:span]
    starts = np.random.default_rng([seed, split]).integers(0, span, size=rows)
    index = (starts[:, None] + np.arange(length)[None, :]) % span
    return cycle[index].astype(np.int32)


def _shard(tokens: Any, domains: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    length = tokens.shape[1]
    spans = [[{"domain": d, "start": 0, "end": length}] for d in domains]
    table = pa.table(
        {
            "input_ids": pa.array(list(tokens), type=pa.list_(pa.int32())),
            "spans": pa.array(
                spans,
                type=pa.list_(
                    pa.struct([("domain", pa.string()), ("start", pa.int64()), ("end", pa.int64())])
                ),
            ),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_mixture(
    uri: str,
    *,
    sequence_length: int,
    vocab_size: int,
    train_rows: int,
    validation_rows: int = 4,
    rows_per_shard: int = 8,
    seed: int = 0,
    tokenizer_uri: str = "",
    store: StorageSpec | None = None,
) -> str:
    """Write the folder and return `uri`."""
    domains = ("RedPajamaBook", "RedPajamaArXiv")
    shards: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for split, rows, offset in (("train", train_rows, 0), ("validation", validation_rows, 1)):
        tokens = pattern_rows(rows, sequence_length, vocab_size, seed, offset)
        for n, start in enumerate(range(0, rows, rows_per_shard)):
            part = tokens[start : start + rows_per_shard]
            names = [domains[(start + i) % 2] for i in range(len(part))]
            path = f"{split}/part-{n:05d}.parquet"
            storage.write_bytes(storage.join(uri, path), _shard(part, names), store)
            shards[split].append({"path": path, "rows": len(part)})
    manifest = {
        "sequenceLength": sequence_length,
        "tokenizer": {"uri": tokenizer_uri},
        "seed": seed,
        "shards": shards,
        "tokens": train_rows * sequence_length,
        "chunks": train_rows,
        "domains": {d: {} for d in domains},
    }
    storage.write_json(storage.join(uri, "manifest.json"), manifest, store)
    return uri
