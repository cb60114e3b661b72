"""The memory planner behind `longreach plan` and the controller's refusal."""

from __future__ import annotations

from typing import Any

import pytest

from longreach.contract.contextextension import ContextExtensionSpec
from longreach.operator.contextextension.memory import plan, render, shape_of

pytestmark = pytest.mark.unit

LLAMA2_7B = {
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
}  # fmt: skip


def spec(length: int, **over: Any) -> ContextExtensionSpec:
    base: dict[str, Any] = {
        "model": {"uri": "s3://m"}, "data": {"uri": "s3://d"}, "sequenceLength": length,
        "rope": {"theta": 2e6}, "training": {"tokens": "5B"}, "output": {"uri": "s3://o"},
    }  # fmt: skip
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v}
    return ContextExtensionSpec.model_validate(base)


def test_parameter_count_of_llama2_7b() -> None:
    shape, assumed = shape_of(LLAMA2_7B)
    assert assumed == []
    assert shape.parameters == 6_738_415_616  # the published LLaMA-2 7B count


def test_the_papers_setting_fits_and_128k_needs_sequence_parallel() -> None:
    # 7B at 80K on 8×80 GB with ZeRO-3, offload and checkpointing: the paper's limit.
    assert plan(spec(81920), LLAMA2_7B).fits
    p = plan(spec(131072), LLAMA2_7B)
    assert not p.fits and p.smallestSequenceParallel == 2
    assert "deepspeed.sequenceParallel=2 would fit" in p.message
    assert "resources.gpuMemoryGiB is 80" in p.message
    assert plan(spec(131072, deepspeed={"sequenceParallel": 2}), LLAMA2_7B).fits


def test_memory_terms_follow_zero_stage_and_offload() -> None:
    def mem(**ds: Any) -> dict[str, float]:
        return plan(spec(8192, deepspeed=ds), LLAMA2_7B).memoryGiB

    z0, z1, z2, z3 = (mem(zeroStage=s, offloadOptimizer=False) for s in range(4))
    assert z0["optimizer"] == pytest.approx(8 * z1["optimizer"])
    assert z1["gradients"] == pytest.approx(8 * z2["gradients"])
    assert z3["parameters"] < z2["parameters"] / 4
    assert mem(zeroStage=3, offloadOptimizer=True)["optimizer"] == 0
    ckpt = mem(activationCheckpointing=True)["activations"]
    assert mem(activationCheckpointing=False)["activations"] > 4 * ckpt


def test_activations_and_logits_shrink_with_sequence_parallel() -> None:
    one = plan(spec(65536), LLAMA2_7B).memoryGiB
    four = plan(spec(65536, deepspeed={"sequenceParallel": 4}), LLAMA2_7B).memoryGiB
    assert four["activations"] == pytest.approx(one["activations"] / 4)
    assert four["logits"] < one["logits"] / 2  # the loss chunk's float32 buffer stays


def test_nothing_fits_says_so() -> None:
    p = plan(spec(1048576, resources={"nodes": 1, "gpusPerNode": 1}), LLAMA2_7B)
    assert not p.fits and p.smallestSequenceParallel is None
    assert "no sequence-parallel degree fits" in p.message


def test_unknown_model_states_the_assumption() -> None:
    p = plan(spec(8192))
    assert p.assumed and "assumed LLaMA-2 7B" in render(p)


def test_cpu_runs_are_not_refused() -> None:
    p = plan(spec(8192, resources={"gpusPerNode": 0}), LLAMA2_7B)
    assert p.fits and "CPU run" in render(p)


def test_render_shows_every_term() -> None:
    text = render(plan(spec(81920), LLAMA2_7B))
    for word in (
        "parameters",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "total",
        "OK fits",
    ):
        assert word in text
