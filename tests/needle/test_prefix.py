"""Prefix reuse in the transformers backend, on a tiny random Llama on CPU: the same responses
and scores as the plain path, bit for bit, with fewer prompt tokens through the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from longreach.jobs.needle.backends import TransformersBackend
from longreach.jobs.needle.job import run

from .conftest import job_config

pytestmark = pytest.mark.integration


def cells_of(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "results.json").read_text())["cells"]


def counted(backend: TransformersBackend) -> list[int]:
    """Tokens through the model per forward call (a hook on the embedding)."""
    calls: list[int] = []
    backend.model.model.embed_tokens.register_forward_hook(
        lambda _m, args, _out: calls.append(args[0].numel())
    )
    return calls


@pytest.mark.parametrize(("harness", "batch"), [("clean", 1), ("paper", 3)])
def test_prefix_reuse_gives_the_plain_paths_responses_bit_for_bit(
    tiny_model: Path,
    haystack_dir: Path,
    tmp_path: Path,
    tokenizer: Any,
    harness: str,
    batch: int,
) -> None:
    def config(out: str) -> Any:
        return job_config(
            str(tiny_model),
            str(haystack_dir),
            str(tmp_path / out),
            harness=harness,
            lengths={"values": [400, 800]},
            depths={"count": 5},
            batchSize=batch,
            maxNewTokens=8,
        )

    plain = TransformersBackend(str(tiny_model), tokenizer, prefix_reuse=False)
    # small prefill chunks, so that a prefix and a suffix each take several
    reuse = TransformersBackend(str(tiny_model), tokenizer, chunk=64)
    plain_calls, reuse_calls = counted(plain), counted(reuse)
    run(config("plain"), backend=plain)
    run(config("reuse"), backend=reuse)
    a, b = cells_of(tmp_path / "plain"), cells_of(tmp_path / "reuse")
    assert len(a) == len(b) == 10
    for x, y in zip(a, b, strict=True):
        assert (x["length"], x["depth"]) == (y["length"], y["depth"])
        assert x["response"] == y["response"] and x["response"]
        assert (x["score"], x["paperScore"]) == (y["score"], y["paperScore"])
    assert max(reuse_calls) <= 64  # every prefill went in chunks
    if batch == 1:
        # same responses, so the same decoding steps: the difference is the prompts' share.
        # Depths 0, 25, 50, 75, 100 share 0, 1/4, 1/2, 3/4 and 3/4 of the haystack with a
        # neighbour, 9/4 in all, of which the chain computes 3/4 once: 3/2 of 5 prompts saved
        prompts = sum(c["contextTokens"] for c in a)
        assert sum(plain_calls) - sum(reuse_calls) > 0.25 * prompts


def test_a_batch_that_runs_out_of_memory_is_split(
    tiny_model: Path, haystack_dir: Path, tmp_path: Path, tokenizer: Any
) -> None:
    """A GPU's out-of-memory error cannot happen on CPU: the model raises it, as a card would,
    for more than two rows at once; the batch halves until it fits and gives the same cells."""
    import torch

    class TwoRows(TransformersBackend):
        def _generate(self, cells: list[Any], max_new_tokens: int) -> list[str]:
            if len(cells) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return super()._generate(cells, max_new_tokens)

    def config(out: str, batch: int) -> Any:
        return job_config(
            str(tiny_model),
            str(haystack_dir),
            str(tmp_path / out),
            lengths={"values": [400]},
            depths={"count": 5},
            batchSize=batch,
        )

    small = TwoRows(str(tiny_model), tokenizer)
    run(config("split", 5), backend=small)
    assert small.fits == 2
    run(config("whole", 2), backend=TransformersBackend(str(tiny_model), tokenizer))
    assert cells_of(tmp_path / "split") == cells_of(tmp_path / "whole")
