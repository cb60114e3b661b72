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


def test_fast_settings_compute_the_same_loss(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    """Selective checkpointing under ZeRO-3, SDPA held to its flash kernel, and Liger (fused
    loss included) where installed: the same first-step loss as the plain settings, and the
    metrics say what ran."""
    import importlib.util

    def first_loss(tag: str, training: dict[str, str], checkpointing: str) -> list[dict]:
        setup = make_setup(
            str(tmp_path / tag), tmp_path, tiny_model, vocab_size, name=tag, training=training,
            deepspeed={"zeroStage": 3, "offloadOptimizer": False, "activationCheckpointing": checkpointing},
            resources={"nodes": 1, "gpusPerNode": 1},
        )  # fmt: skip
        proc = run(setup)
        assert proc.returncode == 0, tail(proc)
        return metrics(setup)

    plain = first_loss("plain", {"attention": "sdpa", "kernels": "none"}, "none")
    fast = first_loss("fast", {"attention": "sdpa-flash", "kernels": "auto"}, "selective")
    liger = "liger" if importlib.util.find_spec("liger_kernel") else "none"
    assert (fast[0]["attention"], fast[0]["kernels"], fast[0]["checkpointing"]) == (
        "sdpa-flash", liger, "selective",
    )  # fmt: skip
    assert fast[0]["loss"] == pytest.approx(plain[0]["loss"], rel=2e-2)
    assert fast[-1]["loss"] < fast[0]["loss"]
