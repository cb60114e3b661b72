"""Which attention kernel a run uses (`spec.training.attention`), checked before any GPU work.

`auto` looks the card and the sequence length up in `MEASURED`, a table of backends in
the order they measured fastest (`benchmarks/attention_backends.py` prints it; docs/benchmarks.md
keeps the runs), and takes the first one installed. A card or length the table does not hold
gets FlashAttention-2 where installed, else SDPA with PyTorch's own backend choice; on CPU it is
always SDPA. The SDPA backends are held with `torch.nn.attention.sdpa_kernel` around forward
and backward (see `sdpa_scope`)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from longreach.contract.errors import InputError

# Card name fragment -> [(up to this many tokens per GPU, backends fastest first)], lengths
# ascending. Only measured rows belong here: each names its docs/benchmarks.md section. The
# 26 November 2026 H200 run measured SDPA alone (no flash-attn there), which ranks nothing, so
# the table is empty until `benchmarks/attention_backends.py` has run on a card (see
# docs/benchmarks.md, "Attention backends and selective checkpointing: prepared, not measured").
Table = Mapping[str, Sequence[tuple[int, Sequence[str]]]]
MEASURED: Table = {}

# SDPA backend names of torch.nn.attention.SDPBackend for the restricted choices.
SDPA_BACKENDS = {"sdpa-flash": "FLASH_ATTENTION", "sdpa-cudnn": "CUDNN_ATTENTION"}


@dataclass(frozen=True)
class Choice:
    """What the model is loaded with and what runs: `implementation` is transformers'
    attn_implementation, `backend` the name the metrics record (e.g. sdpa-cudnn)."""

    backend: str
    implementation: str
    reason: str


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def measured_order(card: str, length: int, table: Table = MEASURED) -> list[str]:
    """The table's backends for `card` at `length` tokens, fastest first; [] if none."""
    for fragment, rows in table.items():
        if fragment in card:
            for up_to, backends in rows:
                if length <= up_to:
                    return list(backends)
    return []


def choose(
    asked: str,
    *,
    gpu: bool,
    card: str = "",
    length: int = 0,
    table: Table = MEASURED,
    flash: bool | None = None,
) -> Choice:
    """Resolve `spec.training.attention` for this machine (`flash`: whether flash-attn is
    installed, looked up when None); a choice that cannot run here is an InputError naming the
    field and the fix."""
    flash = flash_attn_installed() if flash is None else flash
    if asked == "auto":
        if not gpu:
            return Choice("sdpa", "sdpa", "auto: CPU runs SDPA")
        for backend in measured_order(card, length, table):
            if backend != "flash_attention_2" or flash:  # the SDPA kernels come with PyTorch
                return Choice(
                    backend, _implementation(backend), f"auto: measured fastest on {card}"
                )
        if flash:
            return Choice("flash_attention_2", "flash_attention_2", "auto: flash-attn installed")
        return Choice("sdpa", "sdpa", "auto: no measurement for this card and length")
    if asked == "flash_attention_2":
        if not gpu:
            raise InputError(
                "training.attention: flash_attention_2 needs a GPU (resources.gpusPerNode is 0); "
                "use auto or sdpa"
            )
        if not flash:
            raise InputError(
                "training.attention: flash_attention_2 is chosen but the flash-attn package is "
                "not installed in the training image; install flash-attn there or set "
                "training.attention to auto or sdpa"
            )
    if asked in SDPA_BACKENDS and not gpu:
        raise InputError(
            f"training.attention: {asked} is a CUDA kernel and this run has no GPU "
            "(resources.gpusPerNode is 0); use auto or sdpa"
        )
    return Choice(asked, _implementation(asked), "training.attention")


def _implementation(backend: str) -> str:
    return "flash_attention_2" if backend == "flash_attention_2" else "sdpa"


@contextlib.contextmanager
def sdpa_scope(backend: str) -> Iterator[None]:
    """Hold SDPA to one kernel (sdpa-flash, sdpa-cudnn) for a forward or backward pass; other
    backends run unrestricted. Unsupported inputs then fail loudly instead of falling back."""
    name = SDPA_BACKENDS.get(backend)
    if name is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, name)]):
        yield
