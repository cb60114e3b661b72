"""How much GPU memory a ContextExtension needs, whether it fits, and the smallest Ulysses degree
that would fit. Pure Python (no torch): `longreach plan FILE.yaml` and the controller use it.

The model, per GPU, for bf16 training with AdamW (fp32 master weights and two moments):

- parameters 2 B, gradients 2 B and optimizer state 12 B per parameter, divided over all ranks
  by ZeRO stage (1: optimizer; 2: + gradients; 3: + parameters, plus the gathered working set of
  about two layers); optimizer offload moves the 12 B to CPU memory.
- activations at the per-GPU sequence length s = sequenceLength / sequenceParallel, with
  FlashAttention/SDPA (no s² term). A Llama layer keeps about 9h + 3h_kv + 4i bf16 values per
  token for its backward pass: 5h + 3h_kv on the attention side (normed input, q, k, v, output,
  the residual), 4h + 4i in the norms and the MLP (gate, up, the activation, their product;
  2i with Liger's SwiGLU, which recomputes the activation). By `deepspeed.activationCheckpointing`:
  none keeps all of it; full keeps each layer's input (h) plus one layer recomputed during the
  backward pass and its gradients; every:K keeps all of it in the other layers; selective keeps
  the attention side plus the three inputs of the recomputed norms and MLP (3h), plus one MLP
  recomputed. auto takes the mode with the least recomputation (forward FLOPs, see
  `recompute_flops`) that fits resources.gpuMemoryGiB.
- the loss: s × vocabulary × 4 B (bf16 logits and their gradient), plus one 4096-position chunk
  × vocabulary × 12 B for the float32 loss the job computes chunk by chunk. Liger-Kernel's fused
  linear cross-entropy (training.kernels: liger) never holds the logits: one float32 chunk of
  s / ceil(vocabulary / h) positions and the hidden states' gradient, about 8 s h bytes.
  kernels: auto counts the unfused loss: whether the image has liger-kernel is known only there.
- a fixed 2 GiB for the CUDA context, communication buffers and allocator slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from longreach.contract.contextextension import (
    ContextExtensionSpec,
    checkpointed_layers,
)

GiB = 2**30
OVERHEAD_GIB = 2.0
LOSS_CHUNK = 4096  # positions per float32 loss chunk, as jobs/train/compute.py computes it

# LLaMA-2 7B, the paper's model, when the model's config.json cannot be read.
ASSUMED = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kvHeads: int
    headDim: int
    vocab: int
    tied: bool

    @property
    def layerParameters(self) -> int:
        q = self.heads * self.headDim
        kv = 2 * self.kvHeads * self.headDim
        return (
            self.hidden * (q + kv)
            + q * self.hidden
            + 3 * self.hidden * self.intermediate
            + 2 * self.hidden
        )

    @property
    def parameters(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * self.layerParameters + self.hidden


def shape_of(config: dict[str, Any] | None) -> tuple[Shape, list[str]]:
    """The architecture numbers, and which of them were assumed."""
    source = config.get("text_config", config) if config else {}
    assumed = [k for k in ASSUMED if k not in source]
    merged = {**ASSUMED, **{k: v for k, v in source.items() if v is not None}}
    heads = int(merged["num_attention_heads"])
    hidden = int(merged["hidden_size"])
    shape = Shape(
        hidden=hidden,
        intermediate=int(merged["intermediate_size"]),
        layers=int(merged["num_hidden_layers"]),
        heads=heads,
        kvHeads=int(merged.get("num_key_value_heads") or heads),
        headDim=int(merged.get("head_dim") or hidden // heads),
        vocab=int(merged["vocab_size"]),
        tied=bool(merged.get("tie_word_embeddings", False)),
    )
    return shape, assumed


@dataclass
class Plan:
    """The estimate for one spec."""

    world: int
    sequenceParallel: int
    sequenceLength: int
    parameters: int
    checkpointing: str
    """The activation checkpointing counted: the spec's, or for auto the planner's choice."""
    fusedLoss: bool
    """Whether the loss is Liger's fused linear cross-entropy (training.kernels: liger)."""
    memoryGiB: dict[str, float]
    """Per GPU: parameters, gradients, optimizer, activations, logits, overhead, total."""
    gpuMemoryGiB: float
    fits: bool
    smallestSequenceParallel: int | None
    """The smallest Ulysses degree whose estimate fits; None when none does."""
    cpuOptimizerGiBPerNode: float
    onCpu: bool
    assumed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for a refusal or a status message."""
        total = self.memoryGiB["total"]
        if self.fits:
            return f"fits: about {total:.1f} GiB of {self.gpuMemoryGiB:g} GiB per GPU"
        hint = (
            f"; deepspeed.sequenceParallel={self.smallestSequenceParallel} would fit"
            if self.smallestSequenceParallel
            else "; no sequence-parallel degree fits these GPUs: add GPUs, enable ZeRO-3, "
            "offload or activation checkpointing, or shorten sequenceLength"
        )
        return (
            f"does not fit: about {total:.1f} GiB per GPU needed, resources.gpuMemoryGiB is "
            f"{self.gpuMemoryGiB:g} (parameters {self.memoryGiB['parameters']:.1f}, activations "
            f"{self.memoryGiB['activations']:.1f}, logits {self.memoryGiB['logits']:.1f}){hint}"
        )


def fused_loss(spec: ContextExtensionSpec) -> bool:
    """Whether the job is sure to run Liger's fused loss (auto depends on the image)."""
    return spec.training.kernels == "liger" and spec.resources.gpusPerNode > 0


def layer_values(shape: Shape, fused: bool) -> tuple[int, int]:
    """bf16 values per token a layer keeps for its backward pass: (attention side, norms+MLP)."""
    attention = 5 * shape.hidden + 3 * shape.kvHeads * shape.headDim
    mlp = 4 * shape.hidden + (2 if fused else 4) * shape.intermediate
    return attention, mlp


def activation_bytes(shape: Shape, s: int, mode: str, fused: bool) -> float:
    """Bytes of saved activations at `s` tokens per GPU under checkpointing `mode`."""
    attention, mlp = layer_values(shape, fused)
    whole = 2 * s * (attention + mlp)
    if mode == "none":
        return shape.layers * whole
    if mode == "selective":
        working = 2 * s * (mlp + shape.hidden)  # one MLP and norm recomputed, and their gradient
        return shape.layers * 2 * s * (attention + 3 * shape.hidden) + working
    recomputed = sum(checkpointed_layers(mode, shape.layers))
    kept = recomputed * s * shape.hidden * 2 + (shape.layers - recomputed) * whole
    working = whole + 4 * s * shape.hidden * 2  # one layer recomputed + its gradients
    return kept + working


def recompute_flops(shape: Shape, length: int, mode: str) -> float:
    """Forward FLOPs per token that `mode` computes a second time in the backward pass: whole
    layers (matrix products and causal attention over half the keys on average) for full and
    every:K, the MLP alone for selective. At 128K attention is most of a layer's work, which
    is why selective is the cheap one there."""
    attention = 2 * length * shape.heads * shape.headDim
    layer = 2 * shape.layerParameters + attention
    if mode == "none":
        return 0.0
    if mode == "selective":
        return float(shape.layers * 2 * 3 * shape.hidden * shape.intermediate)
    return float(sum(checkpointed_layers(mode, shape.layers)) * layer)


AUTO_CANDIDATES = ("none", "selective", "every:4", "every:3", "every:2", "full")


def memory(
    spec: ContextExtensionSpec, shape: Shape, sp: int, mode: str | None = None
) -> dict[str, float]:
    """GiB per GPU at sequence-parallel degree `sp` under checkpointing `mode` (default: the
    spec's, auto resolved by `choose_checkpointing`); everything else from the spec."""
    ds = spec.deepspeed
    if mode is None:
        mode = ds.checkpointing()
        if mode == "auto":
            mode = choose_checkpointing(spec, shape, sp)
    world = max(spec.world_size(), 1)
    p = shape.parameters
    s = spec.sequenceLength // sp * spec.training.microBatchSize
    stage = ds.zeroStage
    offload = ds.offloadOptimizer and stage >= 1 and spec.resources.gpusPerNode > 0
    params = 2 * p / world if stage == 3 else 2 * p
    if stage == 3:  # about two layers (and the embeddings at the ends) gathered at a time
        params += 2 * 2 * max(shape.layerParameters, shape.vocab * shape.hidden)
    grads = 2 * p / world if stage >= 2 else 2 * p
    optimizer = 0.0 if offload else (12 * p / world if stage >= 1 else 12 * p)
    fused = fused_loss(spec)
    activations = activation_bytes(shape, s, mode, fused)
    if fused:
        logits = 8 * s * shape.hidden
    else:
        logits = s * shape.vocab * 4 + min(s, LOSS_CHUNK) * shape.vocab * 12
    out = {
        "parameters": params / GiB,
        "gradients": grads / GiB,
        "optimizer": optimizer / GiB,
        "activations": activations / GiB,
        "logits": logits / GiB,
        "overhead": OVERHEAD_GIB,
    }
    out["total"] = sum(out.values())
    return out


def choose_checkpointing(spec: ContextExtensionSpec, shape: Shape, sp: int) -> str:
    """For `auto`: of none, selective, every:K and full, the one with the least recomputation
    whose estimate fits resources.gpuMemoryGiB; full when none does (or on CPU, where nothing
    is checked and full is the safe default)."""
    if spec.resources.gpusPerNode == 0:
        return "full"
    limit = spec.resources.gpuMemoryGiB
    ranked = sorted(
        AUTO_CANDIDATES,
        key=lambda m: (recompute_flops(shape, spec.sequenceLength, m), AUTO_CANDIDATES.index(m)),
    )
    for mode in ranked:
        if memory(spec, shape, sp, mode)["total"] <= limit:
            return mode
    return "full"


def _degrees(spec: ContextExtensionSpec, shape: Shape) -> list[int]:
    """Ulysses degrees that are legal for this spec and model, smallest first."""
    world = spec.world_size()
    return [
        d
        for d in range(1, world + 1)
        if world % d == 0
        and spec.sequenceLength % d == 0
        and shape.heads % d == 0
        and (shape.kvHeads % d == 0 or d % shape.kvHeads == 0)
    ]


def plan(spec: ContextExtensionSpec, model_config: dict[str, Any] | None = None) -> Plan:
    """The estimate for `spec`; `model_config` is the model's config.json when readable."""
    shape, assumed = shape_of(model_config)
    sp = spec.deepspeed.sequenceParallel
    on_cpu = spec.resources.gpusPerNode == 0
    mode = spec.deepspeed.checkpointing()
    auto = mode == "auto"
    if auto:
        mode = choose_checkpointing(spec, shape, sp)
    mem = memory(spec, shape, sp, mode)
    limit = spec.resources.gpuMemoryGiB
    fits = on_cpu or mem["total"] <= limit
    smallest = next(
        (d for d in _degrees(spec, shape) if memory(spec, shape, d)["total"] <= limit), None
    )
    offload = spec.deepspeed.offloadOptimizer and spec.deepspeed.zeroStage >= 1 and not on_cpu
    cpu = (
        12 * shape.parameters / max(spec.world_size(), 1) * max(spec.resources.gpusPerNode, 1) / GiB
    )
    notes = []
    if assumed:
        notes.append("model config.json not read: assumed LLaMA-2 7B for " + ", ".join(assumed))
    if on_cpu:
        notes.append("gpusPerNode is 0: a CPU run, no GPU memory check")
    if spec.deepspeed.offloadOptimizer and spec.deepspeed.zeroStage == 0:
        notes.append("offloadOptimizer needs ZeRO stage 1 or more; ignored at stage 0")
    if auto:
        notes.append(
            f"activationCheckpointing auto: {mode}, the least recomputation that fits"
            + ("" if fits or on_cpu else " (none fits: full)")
        )
    if spec.training.kernels == "auto" and not on_cpu:
        s = spec.sequenceLength // sp * spec.training.microBatchSize
        saved = mem["logits"] - 8 * s * shape.hidden / GiB
        notes.append(
            "kernels auto: the unfused loss is counted; where the image has liger-kernel the "
            f"fused loss needs about {saved:.1f} GiB less (kernels: liger counts it)"
        )
    return Plan(
        world=spec.world_size(),
        sequenceParallel=sp,
        sequenceLength=spec.sequenceLength,
        parameters=shape.parameters,
        checkpointing=mode,
        fusedLoss=fused_loss(spec),
        memoryGiB=mem,
        gpuMemoryGiB=limit,
        fits=fits,
        smallestSequenceParallel=smallest,
        cpuOptimizerGiBPerNode=cpu if offload else 0.0,
        onCpu=on_cpu,
        assumed=assumed,
        notes=notes,
    )


def render(p: Plan) -> str:
    """The plan as a short table for `longreach plan`."""
    lines = [
        f"model: {p.parameters / 1e9:.2f}B parameters; {p.world} GPU(s), sequence parallel "
        f"{p.sequenceParallel}, {p.sequenceLength // p.sequenceParallel} tokens per GPU",
        "memory per GPU (GiB, estimate):",
    ]
    labels = {
        "activations": f"checkpointing {p.checkpointing}",
        "logits": "fusedLoss: Liger linear cross-entropy"
        if p.fusedLoss
        else "logits and the chunked float32 loss",
    }
    for key in ("parameters", "gradients", "optimizer", "activations", "logits", "overhead"):
        lines.append(f"  {key:<12} {p.memoryGiB[key]:8.1f}   {labels.get(key, '')}".rstrip())
    lines.append(f"  {'total':<12} {p.memoryGiB['total']:8.1f}   of {p.gpuMemoryGiB:g} per GPU")
    if p.cpuOptimizerGiBPerNode:
        lines.append(
            f"optimizer state offloaded to CPU: {p.cpuOptimizerGiBPerNode:.1f} GiB per node"
        )
    lines.append(("OK " if p.fits else "NO ") + p.message)
    if p.smallestSequenceParallel is not None:
        lines.append(f"smallest sequence-parallel degree that fits: {p.smallestSequenceParallel}")
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)
