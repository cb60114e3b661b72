"""Prefix reuse for the transformers backend.

The cells of one length share their prompt up to the shallower needle (Cell.shared_prefix,
found by comparing the cells' ids). The KV cache of that shared part is computed once, as a
chain that grows from cell to cell (the job runs a length's depths in ascending order, so
each cell's shared part extends the previous one's); each cell then computes only the rest.
Exact by construction: the same ids at the same positions; only the split of the prefill
into pieces differs from one pass over the whole prompt (floating-point summation order).
On CPU the greedy responses equal the plain path's, bit for bit (tested).

A batch: each cell is prefilled alone up to its last token, the caches are left-padded into
one (the padding masked, as generate() masks left padding), and generate() decodes the cells
together from their last tokens.

Prefill runs in chunks: with a cache, a chunk has fewer queries than keys, and SDPA then
needs an explicit queries x keys mask (8K x 128K booleans is 1 GiB per row).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from longreach.jobs.needle.grid import Cell, common_prefix

CHUNK = 8192


def cache_keyword(model: Any) -> str:
    """transformers 5.2x renamed forward's `past_key_values` to `cache` (the old name goes
    in 5.40); the GPU machines may run an older 5.x."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def reusable(model: Any) -> bool:
    """Whether the model's cache keeps every position (no sliding-window or linear-attention
    layers), so that caches can be copied, extended and left-padded as this module does."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in new_cache(model).layers)


def prefill(model: Any, cache: Any, ids: list[int], chunk: int) -> None:
    """Run `ids` through the model after what `cache` holds; the cache grows by their keys and
    values. One row, no padding, so positions follow from the cache's length."""
    import torch

    if not ids:
        return
    tokens = torch.tensor([ids], device=model.device)
    kw = cache_keyword(model)
    with torch.inference_mode():
        for a in range(0, len(ids), chunk):
            model(
                input_ids=tokens[:, a : a + chunk], use_cache=True, logits_to_keep=1, **{kw: cache}
            )


class PrefixChain:
    """The KV cache of one token prefix, extended as the cells of a length go by."""

    def __init__(self, model: Any, chunk: int = CHUNK):
        self.model, self.chunk = model, chunk
        self.ids: list[int] = []
        self.cache: Any = None

    def extend_to(self, ids: list[int]) -> Any:
        """The cache of `ids`, computed from the current one when it is a prefix of `ids`,
        from scratch otherwise (a new length: its cells share only the template's head)."""
        if self.cache is None or common_prefix(self.ids, ids) < len(self.ids):
            self.cache, self.ids = new_cache(self.model), []
        try:
            prefill(self.model, self.cache, ids[len(self.ids) :], self.chunk)
        except BaseException:
            self.cache, self.ids = None, []  # a half-grown cache matches no ids
            raise
        self.ids = list(ids)
        return self.cache


def _pad_left(tensor: Any, width: int) -> Any:
    import torch.nn.functional as F

    # [batch, heads, positions, head_dim]: zeros in front of the positions
    return F.pad(tensor, (0, 0, width - tensor.shape[-2], 0))


def batch_caches(model: Any, caches: list[Any]) -> Any:
    """One cache for a batch: each cell's cache left-padded with zeros to the longest. Reads
    the layers' `keys` and `values` (transformers' DynamicLayer); frees each as it goes."""
    import torch

    width = max(c.get_seq_length() for c in caches)
    merged = new_cache(model)
    for i in range(len(caches[0].layers)):
        layers = [c.layers[i] for c in caches]
        keys = torch.cat([_pad_left(layer.keys, width) for layer in layers])
        values = torch.cat([_pad_left(layer.values, width) for layer in layers])
        for layer in layers:
            layer.keys = layer.values = None
        merged.update(keys, values, i)
    return merged


def prefilled_cache(chain: PrefixChain, cells: list[Cell]) -> Any:
    """The cache of every cell's prompt but its last token, the shared parts from the chain."""
    caches = []
    for cell in cells:
        start = min(cell.shared_prefix, len(cell.input_ids) - 1)
        own = copy.deepcopy(chain.extend_to(cell.input_ids[:start]))
        prefill(chain.model, own, cell.input_ids[start:-1], chain.chunk)
        caches.append(own)
    return caches[0] if len(caches) == 1 else batch_caches(chain.model, caches)
