"""The DataMixture's Parquet shards as a deterministic, resumable sequence of training samples.

A sample is `sequenceLength` consecutive tokens of one shard's rows laid end to end, so a
training length different from the mixture's re-chunks within each shard (a shard's trailing
partial sample is dropped). The order is a seeded permutation per epoch: shards first, then
samples inside a shard, so a rank reads one shard at a time. The *data position* is the number
of samples consumed so far; step `s` takes positions [p, p + sequencesPerStep), which makes a
resumed run see no sample twice and skip none.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.errors import InputError
from longreach.jobs.train.derive import Batch

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Shard:
    uri: str
    rows: int


@dataclass(frozen=True)
class Mixture:
    """A DataMixture output folder, as far as training needs it."""

    uri: str
    sequenceLength: int
    train: tuple[Shard, ...]
    validation: tuple[Shard, ...]
    manifest: dict


def open_mixture(uri: str, store: StorageSpec | None) -> Mixture:
    """Read manifest.json and the shard list; the manifest is written last, so its presence
    means the shards are complete."""
    manifest = storage.read_json_if_exists(storage.join(uri, "manifest.json"), store)
    if manifest is None:
        raise InputError(
            f"data: no manifest.json under {uri}; point data.uri at a DataMixture output "
            "(or wait until the DataMixture has succeeded)"
        )
    length = manifest.get("sequenceLength")
    if not isinstance(length, int) or length < 2:
        raise InputError(f"data: {uri}/manifest.json has no integer sequenceLength")
    return Mixture(
        uri,
        length,
        _shards(uri, "train", manifest, store),
        _shards(uri, "validation", manifest, store),
        manifest,
    )


def _shards(uri: str, split: str, manifest: dict, store: StorageSpec | None) -> tuple[Shard, ...]:
    """The manifest's shard list ({"train": [{"path", "rows"}, ...]}), which is authoritative;
    without one, the split's part-*.parquet files and their Parquet row counts."""
    listed = manifest.get("shards")
    if isinstance(listed, dict) and isinstance(listed.get(split), list):
        try:
            return tuple(Shard(storage.join(uri, e["path"]), int(e["rows"])) for e in listed[split])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(
                f"data: {uri}/manifest.json has a malformed shards.{split} list: {e}"
            ) from e
    return _listed_shards(uri, split, store)


def _listed_shards(uri: str, split: str, store: StorageSpec | None) -> tuple[Shard, ...]:
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(storage.join(uri, split), store)
    found = sorted(fs.glob(f"{path}/part-*.parquet"))
    out = []
    for p in found:
        with fs.open(p, "rb") as f:
            rows = pq.ParquetFile(f).metadata.num_rows
        out.append(Shard(storage.join(uri, split, p.rsplit("/", 1)[1]), rows))
    return tuple(out)


def _permutation(n: int, *seed: int) -> np.ndarray:
    import numpy as np

    return np.random.default_rng(list(seed)).permutation(n)


class SampleIndex:
    """Maps a data position to (shard, sample in shard). `seed=None` keeps file order (validation)."""

    def __init__(
        self, shards: tuple[Shard, ...], mixture_length: int, length: int, seed: int | None
    ):
        self.shards = shards
        self.length = length
        self.seed = seed
        self.per_shard = [s.rows * mixture_length // length for s in shards]
        self.total = sum(self.per_shard)
        self._epoch_cache: dict[int, tuple[list[int], list[int]]] = {}
        self._inner: tuple[tuple[int, int], np.ndarray] | None = None

    def _order(self, epoch: int) -> tuple[list[int], list[int]]:
        """Shard order of an epoch and the cumulative sample counts in that order."""
        if epoch not in self._epoch_cache:
            n = len(self.shards)
            order = (
                list(range(n)) if self.seed is None else _permutation(n, self.seed, epoch).tolist()
            )
            cumulative, acc = [], 0
            for i in order:
                acc += self.per_shard[i]
                cumulative.append(acc)
            self._epoch_cache.clear()  # one epoch at a time is all a run needs
            self._epoch_cache[epoch] = (order, cumulative)
        return self._epoch_cache[epoch]

    def locate(self, position: int) -> tuple[int, int]:
        """(shard index, sample index inside the shard) of a data position."""
        epoch, offset = divmod(position, self.total)
        order, cumulative = self._order(epoch)
        slot = bisect.bisect_right(cumulative, offset)
        shard = order[slot]
        local = offset - (cumulative[slot - 1] if slot else 0)
        if self.seed is not None:
            if self._inner is None or self._inner[0] != (epoch, shard):
                perm = _permutation(self.per_shard[shard], self.seed, epoch, shard + 1)
                self._inner = ((epoch, shard), perm)
            local = int(self._inner[1][local])
        return shard, local


class Reader:
    """Loads one shard's tokens at a time and cuts samples out of them."""

    def __init__(
        self, index: SampleIndex, mixture_length: int, vocab_size: int, store: StorageSpec | None
    ):
        self.index = index
        self.mixture_length = mixture_length
        self.vocab_size = vocab_size
        self.store = store
        self._cached: tuple[int, np.ndarray] | None = None
        self._domains: tuple[int, np.ndarray] | None = None

    def sample(self, position: int) -> np.ndarray:
        shard, local = self.index.locate(position)
        tokens = self._tokens(shard)
        n = self.index.length
        return tokens[local * n : (local + 1) * n]

    def domains(self, position: int, names: tuple[str, ...]) -> np.ndarray:
        """The domain of every token of a sample, as an index into `names` (-1 outside any
        span), from the chunks' `spans` column: for validation loss by domain."""
        shard, local = self.index.locate(position)
        if self._domains is None or self._domains[0] != shard:
            flat = load_domains(self.index.shards[shard], self.mixture_length, names, self.store)
            self._domains = (shard, flat)
        n = self.index.length
        return self._domains[1][local * n : (local + 1) * n]

    def _tokens(self, shard: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != shard:
            self._cached = (
                shard,
                load_tokens(
                    self.index.shards[shard], self.mixture_length, self.vocab_size, self.store
                ),
            )
        return self._cached[1]


def load_tokens(
    shard: Shard, length: int, vocab_size: int, store: StorageSpec | None
) -> np.ndarray:
    """A shard's `input_ids` flattened to one int64 array, checked against the mixture's length
    and the model's vocabulary."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(shard.uri, store)
    with fs.open(path, "rb") as f:
        column = pq.read_table(f, columns=["input_ids"]).column("input_ids").combine_chunks()
    lengths = pc.list_value_length(column)
    if column.null_count or pc.min(lengths).as_py() != length or pc.max(lengths).as_py() != length:
        raise InputError(
            f"data: {shard.uri} has input_ids rows that are not {length} tokens long "
            "(the manifest's sequenceLength); rebuild the DataMixture"
        )
    flat = np.asarray(pc.list_flatten(column).to_numpy(zero_copy_only=False), dtype=np.int64)
    check_vocabulary(flat, vocab_size, shard.uri)
    return flat


def load_domains(
    shard: Shard, length: int, names: tuple[str, ...], store: StorageSpec | None
) -> np.ndarray:
    """A shard's per-token domain indices, flattened like its tokens (see `load_tokens`)."""
    import numpy as np
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(shard.uri, store)
    with fs.open(path, "rb") as f:
        rows = pq.read_table(f, columns=["spans"]).column("spans").to_pylist()
    index = {name: i for i, name in enumerate(names)}
    out = np.full(len(rows) * length, -1, dtype=np.int16)
    for r, spans in enumerate(rows):
        for span in spans or []:
            out[r * length + span["start"] : r * length + span["end"]] = index.get(
                span["domain"], -1
            )
    return out


def check_vocabulary(tokens: np.ndarray, vocab_size: int, where: str) -> None:
    if tokens.size and (int(tokens.max()) >= vocab_size or int(tokens.min()) < 0):
        raise InputError(
            f"model: the tokenizer/embedding has {vocab_size} ids but {where} holds token id "
            f"{int(tokens.max())}; train on a DataMixture made with this model's tokenizer"
        )


def micro_batches(position: int, batch: Batch, dp_rank: int) -> list[list[int]]:
    """The data positions this data-parallel rank trains on in the step starting at `position`:
    one list of `microBatch` positions per accumulation step."""
    out = []
    for m in range(batch.accumulation):
        start = position + (m * batch.dataParallel + dp_rank) * batch.microBatch
        out.append(list(range(start, start + batch.microBatch)))
    return out
