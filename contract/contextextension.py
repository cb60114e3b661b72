"""The ContextExtension contract: spec and status (the CRD is generated from them), the
training job's config and its progress.json report."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from longreach.contract.common import (
    Model,
    OutputSpec,
    Placement,
    Quantity,
    Round1,
    Round3,
    StatusBase,
    Tokens,
    rule,
)
from longreach.contract.kind import JobConfig, KindContract, column
from longreach.contract.report import Report

RopeType = Literal["default", "linear", "dynamic", "yarn", "llama3", "longrope"]

Attention = Literal["auto", "flash_attention_2", "sdpa", "sdpa-flash", "sdpa-cudnn"]
"""The attention kernel: `auto` (measured fastest for the card and length), FlashAttention-2
(the flash-attn package), PyTorch SDPA letting PyTorch choose, or SDPA held to one backend."""

Kernels = Literal["auto", "liger", "none"]
"""Fused Triton kernels: Liger-Kernel where installed (`auto`), required (`liger`) or never."""

CHECKPOINTING_PATTERN = r"^(auto|full|none|selective|every:[1-9][0-9]*)$"
CHECKPOINTING_FIX = (
    "deepspeed.activationCheckpointing is true, false, or one of full, none, selective, "
    "every:K (K a whole number, e.g. every:2) and auto"
)


def _check_checkpointing(value: bool | str) -> bool | str:
    if isinstance(value, str) and not re.match(CHECKPOINTING_PATTERN, value):
        raise ValueError(f"{value!r}: {CHECKPOINTING_FIX}")
    return value


# true/false as before (full/none), or a named mode. The value is kept as written (the output's
# config hash of existing runs stays); `checkpointing_mode` gives the normal form. A bool-or-string
# field has no structural-schema type and the API server compiles no CEL rule on an untyped
# field (measured: "failed to convert to declType"), so the CRD leaves it untyped: a bad value
# is refused by the operator (Failed, InvalidSpec, the field named) and by `longreach run`.
Checkpointing = Annotated[
    bool | str,
    AfterValidator(_check_checkpointing),
    WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True}),
]


def checkpointing_mode(value: bool | str) -> str:
    """full, none, selective, auto or every:K for a value of activationCheckpointing."""
    if isinstance(value, bool):
        return "full" if value else "none"
    return "full" if value == "every:1" else value


def checkpointed_layers(mode: str, layers: int) -> list[bool]:
    """Which decoder layers `full` or `every:K` recomputes (every K-th, the first included)."""
    if mode == "full":
        return [True] * layers
    if mode.startswith("every:"):
        k = int(mode.split(":")[1])
        return [i % k == 0 for i in range(layers)]
    return [False] * layers


class ModelSource(Model):
    """The base model: exactly one of uri and name."""

    uri: str | None = None
    """A Hugging Face model folder: s3://bucket/prefix, file:///abs/path or a plain local path."""
    name: str | None = None
    """A Hugging Face hub id, where the cluster can reach the hub."""

    @rule("has(self.uri) != has(self.name)", "set exactly one of model.uri and model.name")
    def _one_of(self) -> bool:
        return (self.uri is None) != (self.name is None)


class DataSource(Model):
    """The training data: exactly one of dataMixtureRef and uri."""

    dataMixtureRef: str | None = None
    """Name of a DataMixture in the same namespace; training waits until it has succeeded."""
    uri: str | None = None
    """The output location of a DataMixture (the folder with manifest.json)."""

    @rule(
        "has(self.dataMixtureRef) != has(self.uri)",
        "set exactly one of data.dataMixtureRef and data.uri",
    )
    def _one_of(self) -> bool:
        return (self.dataMixtureRef is None) != (self.uri is None)


class RopeSpec(Model):
    """How RoPE changes: a larger base (theta), or a rope_scaling type of transformers."""

    theta: float | None = Field(default=None, gt=0)
    """New RoPE base, e.g. 2000000 (the paper's effective base is about 2.08e6)."""
    type: RopeType = "default"
    """default (theta only), linear, dynamic, yarn, llama3 or longrope."""
    factor: float | None = Field(default=None, gt=0)
    """Scaling factor for the scaling types, e.g. 8."""
    originalMaxPositionEmbeddings: int | None = Field(default=None, ge=1)
    """Context length the base model was trained at; default: the model's max_position_embeddings."""
    parameters: dict[str, float] = {}
    """Further keys of the type, as transformers names them (e.g. low_freq_factor, beta_fast)."""

    @rule(
        "self.type == 'default' || has(self.factor)",
        "rope types other than default need a factor, e.g. {type: yarn, factor: 8}",
        "factor",
    )
    def _scaling_needs_factor(self) -> bool:
        return self.type == "default" or self.factor is not None

    @rule(
        "self.type != 'default' || has(self.theta)",
        "set rope.theta (e.g. 2000000), or a rope.type with a factor",
        "theta",
    )
    def _default_needs_theta(self) -> bool:
        return self.type != "default" or self.theta is not None


class TrainingSpec(Model):
    """Optimisation settings (the paper's by default)."""

    tokens: Tokens
    """Training tokens, e.g. 5B (500M already gives most of the gain)."""
    batchTokens: Tokens = 4_000_000
    """Tokens per optimizer step, e.g. 4M; rounded down to whole sequences across ranks."""
    learningRate: float = Field(default=2.0e-5, gt=0, le=1)
    """Peak learning rate of AdamW."""
    schedule: Literal["constant", "cosine"] = "constant"
    """constant (the paper's) or cosine decay to minLearningRate."""
    warmupSteps: int = Field(default=0, ge=0)
    """Linear warm-up steps."""
    minLearningRate: float = Field(default=0.0, ge=0)
    """Final learning rate of the cosine schedule."""
    weightDecay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    gradientClipping: float = Field(default=1.0, ge=0)
    """Global gradient-norm clip; 0 disables."""
    microBatchSize: int = Field(default=1, ge=1)
    """Sequences per GPU per forward pass."""
    seed: int = 42
    """Seed of data order and initialisation of anything new."""
    validationSequences: int = Field(default=16, ge=0)
    """Validation sequences for the final loss-by-position table; 0 skips it."""
    attention: Attention = "auto"
    """auto (the measured fastest for the card and length, SDPA on CPU), flash_attention_2 (needs flash-attn), sdpa, sdpa-flash or sdpa-cudnn."""
    kernels: Kernels = "auto"
    """Liger-Kernel's fused RMSNorm, RoPE, SwiGLU and linear cross-entropy: auto (where installed, on GPU, for Llama models), liger (required) or none."""
    compile: bool = False
    """torch.compile each decoder layer (off by default: not yet measured to pay)."""


class DeepSpeedSpec(Model):
    """How DeepSpeed shards the work."""

    zeroStage: Literal[0, 1, 2, 3] = 3
    """ZeRO stage 0-3 (the paper: 3)."""
    offloadOptimizer: bool = True
    """Keep optimizer state in CPU memory (the paper's setting)."""
    activationCheckpointing: Checkpointing = True
    """Recompute activations in the backward pass: true or full (every layer), false or none, selective (attention kept, MLP and norms recomputed), every:K (every K-th layer) or auto (the least recomputation that fits resources.gpuMemoryGiB)."""
    sequenceParallel: int = Field(default=1, ge=1)
    """DeepSpeed-Ulysses degree: GPUs that share one sequence."""

    def checkpointing(self) -> str:
        """activationCheckpointing in normal form (full, none, selective, auto or every:K)."""
        return checkpointing_mode(self.activationCheckpointing)


class TrainResources(Model):
    """The GPU pods."""

    nodes: int = Field(default=1, ge=1, le=1024)
    """Pods (one per node), each running one process per GPU."""
    gpusPerNode: int = Field(default=8, ge=0, le=64)
    """GPUs per pod; 0 trains on CPU (tests, laptops)."""
    cpu: Quantity = "32"
    """CPU request per pod."""
    memory: Quantity = "256Gi"
    """Memory request per pod (optimizer offload lives here)."""
    gpuMemoryGiB: float = Field(default=80, gt=0)
    """Memory of one GPU in GiB, for the planner's fit check."""


class CheckpointSpec(Model):
    """When to checkpoint and how many to keep."""

    everySteps: int = Field(default=50, ge=1)
    """Save a resumable checkpoint every this many steps."""
    keep: int = Field(default=2, ge=1)
    """Newest checkpoints kept; older ones are deleted."""


class ContextExtensionSpec(Placement):
    """A continual-pretraining run."""

    model: ModelSource
    """The base model."""
    data: DataSource
    """The training data."""
    sequenceLength: int = Field(ge=128, le=4194304)
    """Training sequence length, e.g. 81920."""
    rope: RopeSpec
    """The RoPE change."""
    training: TrainingSpec
    """Optimisation settings."""
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    """DeepSpeed settings."""
    resources: TrainResources = TrainResources()
    """Pods and GPUs."""
    checkpoint: CheckpointSpec = CheckpointSpec()
    """Checkpoint cadence."""
    output: OutputSpec
    """Where checkpoints/, final/ and metrics.jsonl go."""
    maxRestarts: int = Field(default=10, ge=0)
    """Gang restarts of the whole JobSet before the run fails; each resumes from the last checkpoint."""

    @rule(
        "self.sequenceLength % self.deepspeed.sequenceParallel == 0",
        "sequenceLength must be divisible by deepspeed.sequenceParallel",
        "sequenceLength",
    )
    def _sp_divides_length(self) -> bool:
        return self.sequenceLength % self.deepspeed.sequenceParallel == 0

    @rule(
        "self.resources.gpusPerNode == 0 || (self.resources.nodes * self.resources.gpusPerNode) % self.deepspeed.sequenceParallel == 0",
        "deepspeed.sequenceParallel must divide the number of GPUs (resources.nodes × resources.gpusPerNode)",
        "deepspeed.sequenceParallel",
    )
    def _sp_divides_world(self) -> bool:
        world = self.resources.nodes * self.resources.gpusPerNode
        return world == 0 or world % self.deepspeed.sequenceParallel == 0

    def world_size(self) -> int:
        """Training processes: one per GPU, or one per node when training on CPU."""
        return self.resources.nodes * max(self.resources.gpusPerNode, 1)


class TrainProgress(Model):
    """How far training is."""

    step: int = 0
    """Optimizer steps done."""
    totalSteps: int = 0
    """Optimizer steps planned."""
    tokensSeen: int = 0
    """Training tokens consumed."""
    loss: Round3 | None = None
    """Loss of the last step; unset before the first step."""
    tokensPerSecond: Round1 | None = None
    """Training throughput over the last steps; unset before the first step."""
    percent: Round1 = 0
    """Share of the steps done, 0-100."""


class CheckpointRef(Model):
    """A complete checkpoint."""

    step: int = 0
    """Step of the checkpoint."""
    uri: str = ""
    """Where it is."""


class TrainResult(Model):
    """What training produced."""

    uri: str = ""
    """The final Hugging Face model folder."""
    loss: Round3 = 0
    """Final training loss."""
    validationLoss: dict[str, Round3] = {}
    """Validation loss by position bucket, e.g. {"1K": 2.1, "16K": 1.9}."""
    validationLossByDomain: dict[str, Round3] = {}
    """Validation loss by domain of the predicted token, e.g. {"RedPajamaBook": 2.0}."""


class ContextExtensionStatus(StatusBase):
    """The observed state of a ContextExtension."""

    progress: TrainProgress = TrainProgress()
    """Progress of training."""
    lastCheckpoint: CheckpointRef = CheckpointRef()
    """The newest complete checkpoint; every restart resumes from it."""
    result: TrainResult | None = None
    """The trained model, once it succeeded."""

    def percent(self) -> float:
        return self.progress.percent


class TrainReport(Report):
    """The training job's progress.json (rank 0 writes it)."""

    progress: TrainProgress = TrainProgress()
    """How far training is."""
    lastCheckpoint: CheckpointRef = CheckpointRef()
    """The newest complete checkpoint."""
    result: TrainResult | None = None
    """The trained model, once it succeeded."""

    def percent(self) -> float:
        return self.progress.percent


class TrainJobConfig(JobConfig):
    """What the training job reads from its config file."""

    kind: ClassVar[str] = "ContextExtension"
    run_only: ClassVar[dict[str, Any]] = {
        "spec": {
            "resources": {"cpu": True, "memory": True, "gpuMemoryGiB": True},
            "checkpoint": {"keep": True},
            "maxRestarts": True,
            # Kernels change speed, not what is learned (up to rounding): a run may switch.
            "training": {"attention": True, "kernels": True, "compile": True},
        },
        "pauseAfterCheckpointSeconds": True,
        "checkpointing": True,
    }

    spec: ContextExtensionSpec
    """The ContextExtension's spec, defaults filled in."""
    dataUri: str
    """The DataMixture output to train on (data.uri, or the referenced mixture's output)."""
    checkpointing: str | None = Field(default=None, pattern=CHECKPOINTING_PATTERN)
    """The checkpointing mode the planner chose where the spec says auto (the operator fills it
    in); unset, an auto spec checkpoints every layer."""
    pauseAfterCheckpointSeconds: float = Field(default=0, ge=0)
    """Testing aid: sleep this long after each committed checkpoint, so a test can kill the run there."""

    def checkpointing_mode(self) -> str:
        """The mode the job runs: the spec's, or for auto the planner's choice (else full)."""
        mode = self.spec.deepspeed.checkpointing()
        if mode == "auto":
            return checkpointing_mode(self.checkpointing or "full")
        return mode


CONTRACT = KindContract(
    kind=TrainJobConfig.kind,
    plural="contextextensions",
    short_name="ctxext",
    spec=ContextExtensionSpec,
    status=ContextExtensionStatus,
    report=TrainReport,
    job_config=TrainJobConfig,
    job_module="longreach.jobs.train",
    marker="final/longreach.json",
    columns=(
        column("Progress", "number", ".status.progress.percent", "Percent of steps done"),
        column("Step", "integer", ".status.progress.step", "Optimizer steps done"),
        column("Loss", "number", ".status.progress.loss", "Loss of the last step"),
        column(
            "Tok/s",
            "number",
            ".status.progress.tokensPerSecond",
            "Training tokens per second",
            priority=1,
        ),
        column("Attempts", "integer", ".status.attempts", "Gang starts", priority=1),
    ),
)
