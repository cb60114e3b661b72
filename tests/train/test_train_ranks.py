"""Two ranks under torchrun (gloo, CPU): data parallel with ZeRO-2 and ZeRO-3 trains and matches
one rank, and DeepSpeed-Ulysses with two sequence-parallel ranks gives one rank's losses,
gradient norms and validation losses. The one-rank run is the session's `reference`."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import Setup, make_setup, metrics, progress, run, tail

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def losses(setup: Setup) -> list[float]:
    return [m["loss"] for m in metrics(setup)]


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_data_parallel(
    stage: int, reference: Setup, tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size, name=f"dp-z{stage}",
        deepspeed={"zeroStage": stage}, resources={"nodes": 2, "gpusPerNode": 0},
    )  # fmt: skip
    proc = run(setup, nproc=2)
    assert proc.returncode == 0, tail(proc)
    got = losses(setup)
    assert got[-1] < got[0] - 1.0, got
    # The same sequences per step, split over two ranks: the same mean loss as one rank.
    assert got == pytest.approx(losses(reference), rel=1e-4)
    assert progress(setup).state == "succeeded"
    # final/ holds whole weights even when ZeRO-3 partitioned them over the ranks.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "store" / "out" / "final"))
    assert model.config.rope_parameters["rope_theta"] == 40000
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(str(tiny_model)).parameters()
    )


@pytest.mark.parametrize("stage", [2, 3])
def test_ulysses_matches_one_rank(
    stage: int, reference: Setup, tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size, name=f"sp2-z{stage}",
        deepspeed={"zeroStage": stage, "sequenceParallel": 2}, resources={"nodes": 2, "gpusPerNode": 0},
    )  # fmt: skip
    proc = run(setup, nproc=2)
    assert proc.returncode == 0, tail(proc)
    assert losses(setup) == pytest.approx(losses(reference), rel=1e-4)
    # Adam hides a wrongly scaled gradient; the clipped global norm does not.
    norms = [m["gradNorm"] for m in metrics(setup)]
    assert norms == pytest.approx([m["gradNorm"] for m in metrics(reference)], rel=1e-3)
    val, ref = (
        progress(setup).result.validationLoss,  # type: ignore[union-attr]
        progress(reference).result.validationLoss,  # type: ignore[union-attr]
    )
    assert val == pytest.approx(ref, rel=1e-4)
    by_domain, ref_domain = (
        progress(setup).result.validationLossByDomain,  # type: ignore[union-attr]
        progress(reference).result.validationLossByDomain,  # type: ignore[union-attr]
    )
    assert by_domain and by_domain == pytest.approx(ref_domain, rel=1e-4)
