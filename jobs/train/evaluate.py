"""Validation loss by position: the paper's Loss@1K/16K/32K/64K/128K, scaled to the run's length.

Bucket b holds the positions after the previous boundary up to its own, where the boundaries
are 1/128, 16/128, 32/128, 64/128 and 128/128 of the sequence length."""

from __future__ import annotations

from typing import Any

from longreach.jobs.train.compute import IGNORE, make_slice, token_losses
from longreach.jobs.train.dist import all_sum

FRACTIONS = (1 / 128, 16 / 128, 32 / 128, 64 / 128, 1.0)


def boundaries(length: int) -> list[int]:
    """Bucket ends (positions, exclusive), distinct and at least 1."""
    out: list[int] = []
    for f in FRACTIONS:
        b = max(1, round(length * f))
        if not out or b > out[-1]:
            out.append(b)
    return out


def label(n: int) -> str:
    """16384 -> "16K", 1000 -> "1000"."""
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def bucket_sums(losses: Any, positions: Any, labels: Any, ends: list[int]) -> list[float]:
    """Sum of losses and count of labelled tokens per bucket, flattened [s0, c0, s1, c1, ...]."""
    out: list[float] = []
    start = 0
    valid = labels != IGNORE
    for end in ends:
        inside = valid & (positions >= start) & (positions < end)
        out += [float(losses[inside].sum()), float(inside.sum())]
        start = end
    return out


def loss_by_position(
    engine: Any,
    reader: Any,
    count: int,
    *,
    length: int,
    sp: int,
    sp_rank: int,
    dp: int,
    dp_rank: int,
    device: Any,
) -> dict[str, float]:
    """Mean validation loss per bucket over `count` sequences (a multiple of dp), every rank
    taking part (ZeRO-3 gathers parameters collectively)."""
    import torch

    ends = boundaries(length)
    sums = [0.0] * (2 * len(ends))
    engine.eval()
    with torch.no_grad():
        for i in range(dp_rank, count, dp):
            part = make_slice([reader.sample(i)], sp, sp_rank, device)
            losses = token_losses(engine, part)
            sums = [
                a + b
                for a, b in zip(
                    sums, bucket_sums(losses, part.positions, part.labels, ends), strict=True
                )
            ]
    engine.train()
    # Sequence-parallel ranks hold disjoint positions and data-parallel ranks disjoint
    # sequences, so one sum over all ranks counts every token exactly once.
    total = all_sum(sums)
    return {
        label(end): total[2 * i] / total[2 * i + 1]
        for i, end in enumerate(ends)
        if total[2 * i + 1] > 0
    }
