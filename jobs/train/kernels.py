"""Liger-Kernel (`spec.training.kernels`): Triton kernels for RMSNorm, RoPE and SwiGLU, and the
fused linear cross-entropy that never holds the logits (at 128K tokens × 32K vocabulary the
bf16 logits and their gradient alone are 16 GiB). Liger needs Triton and a GPU, so it is not
in the CPU lock: `auto` uses it where it is installed, on GPU, for the model types it patches
here; `liger` demands it and is an InputError naming the field where it cannot run."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from longreach.contract.errors import InputError
from longreach.jobs.train.compute import IGNORE

# model_type -> the liger_kernel.transformers function that patches its modules.
PATCHES = {"llama": "apply_liger_kernel_to_llama"}


@dataclass(frozen=True)
class Kernels:
    """Whether Liger runs (and with it the fused loss), and why: the metrics record both."""

    liger: bool
    reason: str

    @property
    def name(self) -> str:
        return "liger" if self.liger else "none"


def liger_installed() -> bool:
    """Whether liger-kernel imports here (a package whose Triton does not match the image's
    torch fails on import: that counts as not installed)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return False
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception as e:  # ImportError, or Triton's own errors at import
        print(f"longreach: liger-kernel is installed but does not import: {e}", flush=True)
        return False
    return True


def choose(asked: str, *, gpu: bool, model_type: str, installed: bool | None = None) -> Kernels:
    """Resolve `spec.training.kernels` for this machine and model (`installed`: whether
    liger-kernel imports, looked up when None and a GPU makes it matter)."""
    if asked == "none":
        return Kernels(False, "training.kernels: none")
    have = installed if installed is not None else gpu and liger_installed()
    supported = model_type in PATCHES
    if asked == "liger":
        if not gpu:
            raise InputError(
                "training.kernels: liger runs Triton kernels and this run has no GPU "
                "(resources.gpusPerNode is 0); set training.kernels to auto or none"
            )
        if not have:
            raise InputError(
                "training.kernels: liger is chosen but the liger-kernel package is not installed "
                "in the training image; install liger-kernel there or set training.kernels to "
                "auto or none"
            )
        if not supported:
            raise InputError(
                f"training.kernels: liger is applied to {', '.join(sorted(PATCHES))} models here "
                f"and this model is {model_type!r}; set training.kernels to auto or none"
            )
        return Kernels(True, "training.kernels: liger")
    if not gpu:
        return Kernels(False, "auto: no GPU")
    if not have:
        return Kernels(False, "auto: liger-kernel not installed")
    if not supported:
        return Kernels(False, f"auto: no Liger patch for model type {model_type!r}")
    return Kernels(True, "auto: liger-kernel installed")


def apply(kernels: Kernels, model_type: str) -> None:
    """Swap in Liger's RMSNorm, RoPE and SwiGLU modules before the model is built. Its cross-
    entropy patches stay off: the fused loss runs through `fused_loss_model`, which the job's
    loss path calls with labels already shifted and sharded for sequence parallelism."""
    if not kernels.liger:
        return
    import liger_kernel.transformers as liger

    patch = getattr(liger, PATCHES[model_type])
    patch(
        rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )


class _FusedLoss:
    """Mixed into the causal-LM's class by `fused_loss_model`: called with `fused_labels`, the
    forward returns the summed float32 cross-entropy of those labels from the last hidden states
    and the output head's weight, chunk by chunk, without the logits. It runs inside the model's
    own forward so ZeRO-3 gathers the head's weight there (an access inside a forward registers
    it as an external parameter) and reduces its gradient as usual."""

    def forward(self, *args: Any, fused_labels: Any = None, **kwargs: Any) -> Any:
        if fused_labels is None:
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        hidden = self.model(*args, **kwargs).last_hidden_state  # type: ignore[attr-defined]
        return liger_fused_linear_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]),
            self.lm_head.weight,  # type: ignore[attr-defined]
            fused_labels.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )


def fused_loss_model(model: Any) -> None:
    """Give the model the fused-loss forward; the class keeps its name, so save_pretrained
    writes the same `architectures` into config.json."""
    cls = type(model)
    if not issubclass(cls, _FusedLoss):
        model.__class__ = type(cls.__name__, (_FusedLoss, cls), {})
