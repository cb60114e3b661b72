"""Validation loss by position: the paper's Loss@1K/16K/32K/64K/128K, scaled to the run's length;
and by domain, the domain of each predicted token (from the mixture's spans).

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


def domain_sums(losses: Any, domains: Any, labels: Any, count: int) -> list[float]:
    """Sum of losses and count of labelled tokens per domain index, flattened like bucket_sums."""
    out: list[float] = []
    valid = labels != IGNORE
    for d in range(count):
        inside = valid & (domains == d)
        out += [float(losses[inside].sum()), float(inside.sum())]
    return out


def target_domains(domains: Any, sp: int, sp_rank: int, device: Any) -> Any:
    """The domain of the token each position predicts (the next one), cut like make_slice."""
    import numpy as np
    import torch

    shifted = np.full_like(domains, -1)
    shifted[:-1] = domains[1:]
    local = len(shifted) // sp
    part = shifted[sp_rank * local : (sp_rank + 1) * local]
    return torch.from_numpy(part.astype(np.int64)).unsqueeze(0).to(device)


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
    domains: tuple[str, ...] = (),
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean validation loss per bucket and per domain over `count` sequences (a multiple of
    dp), every rank taking part (ZeRO-3 gathers parameters collectively)."""
    import torch

    ends = boundaries(length)
    sums = [0.0] * (2 * (len(ends) + len(domains)))
    engine.eval()
    with torch.no_grad():
        for i in range(dp_rank, count, dp):
            part = make_slice([reader.sample(i)], sp, sp_rank, device)
            losses = token_losses(engine, part)
            mine = bucket_sums(losses, part.positions, part.labels, ends)
            if domains:
                targets = target_domains(reader.domains(i, domains), sp, sp_rank, device)
                mine += domain_sums(losses, targets, part.labels, len(domains))
            sums = [a + b for a, b in zip(sums, mine, strict=True)]
    engine.train()
    # Sequence-parallel ranks hold disjoint positions and data-parallel ranks disjoint
    # sequences, so one sum over all ranks counts every token exactly once.
    total = all_sum(sums)
    means = [(total[2 * i] / total[2 * i + 1]) if total[2 * i + 1] > 0 else None
             for i in range(len(total) // 2)]  # fmt: skip
    by_position = {label(e): m for e, m in zip(ends, means, strict=False) if m is not None}
    by_domain = {d: m for d, m in zip(domains, means[len(ends) :], strict=True) if m is not None}
    return by_position, by_domain
