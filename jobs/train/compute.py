"""The maths of one forward pass: next-token labels made before sequence sharding, per-token
losses on this rank's slice, and the model FLOPs per token for MFU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

IGNORE = -100
LOSS_CHUNK = 4096  # positions per loss chunk (see token_losses)

# Dense bf16 peak FLOP/s by device-name fragment, for MFU; unknown cards report no MFU.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


@dataclass(frozen=True)
class Slice:
    """This rank's share of a micro-batch: ids, labels and positions of the same tokens."""

    ids: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor


def make_slice(samples: list[np.ndarray], sp: int, sp_rank: int, device: Any) -> Slice:
    """Labels are the next tokens of the *whole* sequence, so the sequence-parallel slices
    together predict exactly what one rank would; positions keep their global values."""
    import numpy as np
    import torch

    ids = torch.from_numpy(np.stack(samples).astype(np.int64))
    labels = torch.full_like(ids, IGNORE)
    labels[:, :-1] = ids[:, 1:]
    n = ids.shape[1]
    positions = torch.arange(n).unsqueeze(0).expand_as(ids)
    local = n // sp
    cut = slice(sp_rank * local, (sp_rank + 1) * local)
    return Slice(
        ids[:, cut].contiguous().to(device),
        labels[:, cut].contiguous().to(device),
        positions[:, cut].contiguous().to(device),
    )


def token_losses(model: Any, part: Slice) -> torch.Tensor:
    """Cross-entropy of every token of the slice (0 where the label is ignored), float32.

    The loss runs over chunks of LOSS_CHUNK positions under activation checkpointing, so the
    float32 copy of the logits and its softmax exist for one chunk at a time instead of the
    whole sequence (at 128K tokens × 32K vocabulary that copy alone would be 16 GiB)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    logits = model(input_ids=part.ids, position_ids=part.positions, use_cache=False).logits
    pieces = []
    for chunk, labels in zip(
        logits.split(LOSS_CHUNK, 1), part.labels.split(LOSS_CHUNK, 1), strict=True
    ):
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_losses, chunk, labels, use_reentrant=False))
        else:
            pieces.append(_chunk_losses(chunk, labels))
    return torch.cat(pieces, dim=1)


def summed_loss(model: Any, part: Slice, *, fused: bool) -> torch.Tensor:
    """The slice's summed token cross-entropy (float32): through Liger's fused linear cross-
    entropy where the model has it (jobs/train/kernels.py), else `token_losses`."""
    if fused:
        return model(
            input_ids=part.ids,
            position_ids=part.positions,
            use_cache=False,
            fused_labels=part.labels,
        )
    return token_losses(model, part).sum()


def _chunk_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    losses = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    )
    return losses.view(labels.shape)


def predicted_tokens(micro: int, length: int) -> int:
    """Tokens with a label in a micro-batch: every position but the last of each sequence."""
    return micro * (length - 1)


def flops_per_token(config: Any, params: int, length: int) -> float:
    """Model FLOPs per trained token: 6 × parameters (input embeddings excluded: a lookup) plus
    causal attention, 6 × layers × hidden × length / 2 × 2 (QKᵀ and AV over half the keys on
    average, forward and backward). Recomputation for activation checkpointing is not counted."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    dense = 6 * (params - text.vocab_size * text.hidden_size)
    attention = 6 * text.num_hidden_layers * text.hidden_size * length
    return float(dense + attention)


def peak_flops(device_name: str) -> float | None:
    for fragment, peak in PEAK_FLOPS.items():
        if fragment in device_name:
            return peak
    return None
