"""The GPU path: bf16, FlashAttention-2 where installed, generation on the card."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from .conftest import job_config

pytestmark = [pytest.mark.gpu, pytest.mark.integration]


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


def test_transformers_backend_runs_bf16_on_the_gpu(tiny_model: Path, tokenizer: Any) -> None:
    import torch

    from longreach.jobs.needle.backends import TransformersBackend

    backend = TransformersBackend(str(tiny_model), tokenizer)
    assert backend.device.type == "cuda" and backend.model.dtype == torch.bfloat16
    assert backend.attn == (
        "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    )


def test_full_run_on_the_gpu(tiny_model: Path, haystack_dir: Path, tmp_path: Path) -> None:
    from longreach.jobs.needle.job import run

    stats = run(job_config(str(tiny_model), str(haystack_dir), str(tmp_path / "out")))
    assert stats["generated"] == 9 and stats["summary"]["backend"] in ("transformers", "vllm")
    assert (tmp_path / "out" / "results.json").exists()


def test_prefix_reuse_on_the_gpu(
    tiny_model: Path, haystack_dir: Path, tmp_path: Path, tokenizer: Any
) -> None:
    """bf16 on the card: the split prefill changes summation order, and a random model's
    logits are near ties, so most (not necessarily all) responses equal the plain path's."""
    import json

    from longreach.jobs.needle.backends import TransformersBackend
    from longreach.jobs.needle.job import run

    responses = {}
    for reuse in (False, True):
        out = tmp_path / f"reuse-{reuse}"
        backend = TransformersBackend(str(tiny_model), tokenizer, prefix_reuse=reuse, chunk=128)
        run(job_config(str(tiny_model), str(haystack_dir), str(out)), backend=backend)
        cells = json.loads((out / "results.json").read_text())["cells"]
        responses[reuse] = [c["response"] for c in cells]
    same = sum(a == b for a, b in zip(responses[False], responses[True], strict=True))
    assert len(responses[True]) == 9 and same >= 7
