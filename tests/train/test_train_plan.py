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


TINYLLAMA_1B = {
    "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
    "num_key_value_heads": 4, "vocab_size": 32000,
}  # fmt: skip
ONE_H200 = {"nodes": 1, "gpusPerNode": 1, "gpuMemoryGiB": 139}


def test_activations_by_checkpointing_mode() -> None:
    def act(mode: Any) -> float:
        s = spec(65536, deepspeed={"activationCheckpointing": mode}, resources=ONE_H200)
        return plan(s, TINYLLAMA_1B).memoryGiB["activations"]

    assert act(True) == act("full") and act(False) == act("none") and act("every:1") == act("full")
    assert act("none") > act("every:2") > act("selective") > act("full")
    # every:2 keeps 11 of the 22 layers whole, plus one recomputed layer's working set
    assert act("every:2") == pytest.approx(act("none") * 12 / 22, rel=0.1)


def test_auto_takes_the_least_recomputation_that_fits() -> None:
    def auto(length: int, gib: float) -> str:
        s = spec(length, deepspeed={"activationCheckpointing": "auto", "offloadOptimizer": False},
                 resources={**ONE_H200, "gpuMemoryGiB": gib})  # fmt: skip
        p = plan(s, TINYLLAMA_1B)
        assert p.memoryGiB == plan(
            spec(length, deepspeed={"activationCheckpointing": p.checkpointing, "offloadOptimizer": False},
                 resources={**ONE_H200, "gpuMemoryGiB": gib}), TINYLLAMA_1B,
        ).memoryGiB  # fmt: skip
        assert f"activationCheckpointing auto: {p.checkpointing}" in render(p)
        return p.checkpointing

    assert auto(32768, 139) == "none"
    assert auto(65536, 139) == "selective"  # none needs ~140 GiB
    assert auto(131072, 139) == "selective"
    assert auto(131072, 80) == "full"  # selective needs ~136 GiB there
    assert auto(131072, 10) == "full"  # nothing fits: the safest


def test_selective_is_cheaper_to_recompute_than_whole_layers_at_long_lengths() -> None:
    from longreach.operator.contextextension.memory import recompute_flops

    shape, _ = shape_of(TINYLLAMA_1B)
    modes = ("none", "selective", "every:2", "full")
    long = [recompute_flops(shape, 131072, m) for m in modes]
    assert long == sorted(long) and long[0] == 0
    # at 8K attention is a small part of a layer: half the layers cost less than every MLP
    short = dict(zip(modes, (recompute_flops(shape, 8192, m) for m in modes), strict=True))
    assert short["every:2"] < short["selective"] < short["full"]


def test_the_loss_path_is_in_the_plan() -> None:
    unfused = plan(spec(131072, resources=ONE_H200), TINYLLAMA_1B)
    fused = plan(spec(131072, resources=ONE_H200, training={"kernels": "liger"}), TINYLLAMA_1B)
    assert not unfused.fusedLoss and fused.fusedLoss
    assert unfused.memoryGiB["logits"] > 15 > 3 > fused.memoryGiB["logits"]
    assert "fusedLoss: Liger" in render(fused) and "chunked float32 loss" in render(unfused)
    # auto counts the unfused loss (liger-kernel is in the image or not) and says what it saves
    assert "kernels auto: the unfused loss is counted" in render(unfused)
    # liger's SwiGLU keeps two intermediate-sized tensors instead of four
    none = {"activationCheckpointing": "none"}
    assert (
        plan(spec(8192, resources=ONE_H200, deepspeed=none, training={"kernels": "liger"}),
             TINYLLAMA_1B).memoryGiB["activations"]
        < plan(spec(8192, resources=ONE_H200, deepspeed=none), TINYLLAMA_1B).memoryGiB["activations"]
    )  # fmt: skip


def test_the_operator_resolves_auto_for_the_job(tiny_model: Any) -> None:
    """The job cannot import the planner: the operator writes its choice into the job's config
    (not part of the output's identity); unreadable model shapes leave the job at full."""
    from longreach.contract.contextextension import TrainJobConfig
    from longreach.operator.contextextension.adapter import ContextExtensionAdapter

    def config(model: dict[str, str | None], mode: Any) -> TrainJobConfig:
        s = spec(4096, model=model, deepspeed={"activationCheckpointing": mode},
                 resources={"gpusPerNode": 1, "gpuMemoryGiB": 40})  # fmt: skip
        return ContextExtensionAdapter().job_config("x", "ns", "uid", s, {})

    auto = config({"uri": str(tiny_model)}, "auto")
    assert auto.checkpointing == "none" and auto.checkpointing_mode() == "none"  # a tiny model
    hub = config({"uri": None, "name": "meta-llama/Llama-2-7b-hf"}, "auto")
    assert hub.checkpointing is None and hub.checkpointing_mode() == "full"
    assert config({"uri": str(tiny_model)}, "selective").checkpointing_mode() == "selective"
    assert auto.output_config() == auto.model_copy(update={"checkpointing": "full"}).output_config()
