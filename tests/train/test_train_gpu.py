"""The GPU path (bf16, FlashAttention-2 where installed, MFU and peak memory in the metrics).
Runs only where CUDA is available."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_setup, metrics, progress, run, tail

pytestmark = [pytest.mark.gpu, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


def test_one_gpu_bf16_run(tmp_path: Path, tiny_model: Path, vocab_size: int) -> None:
    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size,
        deepspeed={"zeroStage": 3, "offloadOptimizer": False}, resources={"nodes": 1, "gpusPerNode": 1},
    )  # fmt: skip
    proc = run(setup)
    assert proc.returncode == 0, tail(proc)
    lines = metrics(setup)
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert all(m["peakMemoryGiB"] > 0 for m in lines)
    assert progress(setup).state == "succeeded"
    assert '"bf16": {"enabled": true}' in proc.stdout
