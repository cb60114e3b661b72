"""The numbers a run is made of, derived once from the spec: batch arithmetic, the learning-rate
schedule and the DeepSpeed config. Pure: no torch, no I/O, unit-tested per combination."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from longreach.contract.contextextension import ContextExtensionSpec
from longreach.contract.errors import InputError


@dataclass(frozen=True)
class Batch:
    """How one optimizer step is cut into micro-batches across ranks."""

    world: int
    """Training processes."""
    sequenceParallel: int
    """Ranks sharing one sequence (Ulysses)."""
    dataParallel: int
    """Independent replicas: world / sequenceParallel."""
    microBatch: int
    """Sequences per data-parallel rank per forward pass."""
    accumulation: int
    """Micro-batches per optimizer step."""
    sequenceLength: int
    """Tokens per sequence."""
    totalSteps: int
    """Optimizer steps of the whole run."""

    @property
    def sequencesPerStep(self) -> int:
        return self.microBatch * self.accumulation * self.dataParallel

    @property
    def tokensPerStep(self) -> int:
        return self.sequencesPerStep * self.sequenceLength

    @property
    def localSequenceLength(self) -> int:
        """Tokens of one sequence that one rank holds."""
        return self.sequenceLength // self.sequenceParallel


def derive_batch(spec: ContextExtensionSpec) -> Batch:
    """Micro-batch and accumulation from `batchTokens`, `sequenceLength` and the world size.

    `batchTokens` is rounded down to whole sequences, then to a multiple of micro-batch ×
    data-parallel ranks, as the spec documents; anything that rounds to zero is an error."""
    seq = spec.sequenceLength
    sp = spec.deepspeed.sequenceParallel
    world = spec.world_size()
    if seq % sp:
        raise InputError(
            f"sequenceLength: {seq} is not divisible by deepspeed.sequenceParallel={sp}; "
            f"pick a length that is a multiple of {sp}"
        )
    if world % sp:
        raise InputError(
            f"deepspeed.sequenceParallel: {sp} does not divide the {world} training processes "
            "(resources.nodes × resources.gpusPerNode)"
        )
    dp = world // sp
    micro = spec.training.microBatchSize
    sequences = spec.training.batchTokens // seq
    if sequences < 1:
        raise InputError(
            f"training.batchTokens: {spec.training.batchTokens} tokens is smaller than one sequence "
            f"of sequenceLength={seq}; set batchTokens to at least {seq}"
        )
    accumulation = sequences // (micro * dp)
    if accumulation < 1:
        raise InputError(
            f"training.batchTokens: {spec.training.batchTokens} tokens is {sequences} sequence(s) per "
            f"step, fewer than training.microBatchSize ({micro}) × {dp} data-parallel ranks; set "
            f"batchTokens to at least {micro * dp * seq} or lower microBatchSize"
        )
    tokens_per_step = accumulation * micro * dp * seq
    steps = spec.training.tokens // tokens_per_step
    if steps < 1:
        raise InputError(
            f"training.tokens: {spec.training.tokens} is less than one optimizer step of "
            f"{tokens_per_step} tokens; raise training.tokens or lower training.batchTokens"
        )
    return Batch(world, sp, dp, micro, accumulation, seq, steps)


def lr_at(spec: ContextExtensionSpec, total_steps: int, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up, then constant or
    cosine decay to minLearningRate. Our own so that warmupSteps=0 means none (DeepSpeed's
    WarmupLR forces at least two warm-up steps)."""
    t = spec.training
    if step < t.warmupSteps:
        return t.learningRate * (step + 1) / (t.warmupSteps + 1)
    if t.schedule == "constant":
        return t.learningRate
    span = max(total_steps - t.warmupSteps, 1)
    progress = min((step - t.warmupSteps) / span, 1.0)
    return t.minLearningRate + 0.5 * (t.learningRate - t.minLearningRate) * (
        1 + math.cos(math.pi * progress)
    )


def deepspeed_config(spec: ContextExtensionSpec, batch: Batch, *, gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config of this run. The scheduler is ours (`lr_at`), passed separately.

    On CPU (gpusPerNode 0) optimizer offload is meaningless and bf16 unsupported: both are off."""
    ds = spec.deepspeed
    offload = ds.offloadOptimizer and gpu and ds.zeroStage >= 1
    zero: dict[str, Any] = {"stage": ds.zeroStage}
    if ds.zeroStage >= 1:
        zero.update(overlap_comm=gpu, contiguous_gradients=True)
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.zeroStage == 3:
        # final/ needs whole weights; gather them on save instead of writing ZeRO shards.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": batch.sequencesPerStep,
        "train_micro_batch_size_per_gpu": batch.microBatch,
        "gradient_accumulation_steps": batch.accumulation,
        "gradient_clipping": spec.training.gradientClipping,
        "sequence_parallel_size": batch.sequenceParallel,
        "zero_optimization": zero,
        "bf16": {"enabled": gpu},
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": spec.training.learningRate,
                "betas": [0.9, 0.95],
                "eps": 1e-8,
                "weight_decay": spec.training.weightDecay,
                # Without a GPU there is no fused Adam; with offload DeepSpeed picks CPU Adam.
                "torch_adam": not gpu,
            },
        },
        "seed": spec.training.seed,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def sequence_parallel_grad_scale(zero_stage: int, sequence_parallel: int) -> float:
    """Factor on each rank's loss so that the reduced gradient is the full sequence's.

    Each sequence-parallel rank back-propagates its share of the sequence's mean loss, so the
    shares must be *summed* over the SP ranks and averaged over data-parallel ranks. DeepSpeed
    0.19's ZeRO-0/1/2 reductions divide by data-parallel ranks only (right), but ZeRO-3's
    default reduce-scatter divides by all ranks, SP ranks included (measured: SP=2 gave exactly
    half the one-rank gradient norm). Scaling the loss by SP there restores the sum; it equals
    ArcticTraining's differentiable all-gather of the loss. Checked by the Ulysses test."""
    return float(sequence_parallel) if zero_stage == 3 else 1.0
