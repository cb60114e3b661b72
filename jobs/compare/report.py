"""The comparison report: `report.md` (one row per arm; tables of domain shares and of
validation loss by domain) and `report.png` (the arms' heatmaps on
one colour scale, the loss-by-position curves on one axis), from finished outputs only.

Each number comes from what a job committed: the mixture's manifest.json (tokens, domain
shares, long-document share), the training's final/longreach.json (validation loss by
position bucket and by domain, tokens seen) and metrics.jsonl (seconds spent in optimizer steps), the needle
grid's results.json (both scores, every cell, seconds). With several seeds an arm's cell is
the mean ± the sample standard deviation over its seeds.
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from longreach.contract import storage
from longreach.contract.common import StorageSpec, format_tokens
from longreach.contract.compare import ReportConfig, RunOutputs
from longreach.contract.errors import InputError


@dataclass
class Run:
    """The numbers of one arm and seed."""

    arm: str
    seed: int | None
    score: float
    paperScore: float
    cells: list[dict[str, Any]]
    validation: dict[str, float]
    """Validation loss by position bucket label ("8", "1K", ...), in position order."""
    domainLoss: dict[str, float]
    """Validation loss by domain of the predicted token."""
    trainTokens: int
    trainSeconds: float
    evalSeconds: float
    mixtureTokens: int
    longShare: float
    domainShares: dict[str, float]


def _json(uri: str, what: str, store: StorageSpec) -> Any:
    if not storage.exists(uri, store):
        raise InputError(f"{uri} is missing: the {what} has not finished (or wrote elsewhere)")
    return storage.read_json(uri, store)


def _step_seconds(uri: str, store: StorageSpec) -> float:
    """Seconds spent in optimizer steps, from metrics.jsonl (tokens / tokens per second)."""
    fs, path = storage.filesystem(storage.join(uri, "metrics.jsonl"), store)
    if not fs.exists(path):
        return 0.0
    with fs.open(path, "r") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    seconds, before = 0.0, 0
    for m in sorted(lines, key=lambda m: m["step"]):
        if m.get("tokensPerSecond"):
            seconds += (m["tokens"] - before) / m["tokensPerSecond"]
        before = m["tokens"]
    return seconds


def read_run(r: RunOutputs, store: StorageSpec) -> Run:
    results = _json(storage.join(r.needle, "results.json"), "NeedleEval", store)
    final = _json(storage.join(r.model, "final", "longreach.json"), "ContextExtension", store)
    manifest = _json(storage.join(r.mixture, "manifest.json"), "DataMixture", store)
    return Run(
        arm=r.arm,
        seed=r.seed,
        score=results["score"],
        paperScore=results["paperScore"],
        cells=results["cells"],
        validation=final.get("validationLoss") or {},
        domainLoss=final.get("validationLossByDomain") or {},
        trainTokens=final["tokensSeen"],
        trainSeconds=_step_seconds(r.model, store),
        evalSeconds=results.get("seconds", 0.0),
        mixtureTokens=manifest["tokens"],
        longShare=manifest["longDocumentTokenFraction"]["byEstimate"]["after"],
        domainShares=manifest["domainShares"]["after"],
    )


def bucket_end(label: str) -> int:
    """The inverse of jobs/train/evaluate.label: "16K" -> 16384, "1000" -> 1000."""
    return int(label[:-1]) * 1024 if label.endswith("K") else int(label)


def overall_loss(validation: dict[str, float]) -> float | None:
    """The mean over all positions: each bucket weighted by the positions it spans (every
    validation sequence is full length, so a bucket's tokens are proportional to its width)."""
    if not validation:
        return None
    ends = sorted((bucket_end(k), v) for k, v in validation.items())
    total, start, weighted = 0, 0, 0.0
    for end, loss in ends:
        weighted += loss * (end - start)
        total += end - start
        start = end
    return weighted / total


def spread(values: Iterable[float | None], digits: int) -> str:
    """One value, or mean ± sample standard deviation over seeds; "(n=k)" where only k of the
    seeds have a value (e.g. a domain absent from some seeds' validation chunks)."""
    given = list(values)
    vs = [v for v in given if v is not None]
    if not vs:
        return "–"
    mean = statistics.fmean(vs)
    text = f"{mean:.{digits}f}"
    if len(vs) > 1:
        text += f" ± {statistics.stdev(vs):.{digits}f}"
    return text + (f" (n={len(vs)})" if len(vs) < len(given) else "")


def by_arm(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.arm, []).append(r)
    return out


def buckets(runs: list[Run]) -> list[str]:
    return sorted({k for r in runs for k in r.validation}, key=bucket_end)


def table(title: str, runs: list[Run]) -> str:
    """report.md: the arms table, then the domain shares of each arm's mixture."""
    arms = by_arm(runs)
    labels = buckets(runs)
    domains = sorted({d for r in runs for d in r.domainShares})
    head = ["arm", "seeds", "needle score", "paper score", "val loss"]
    head += [f"Loss@{b}" for b in labels]
    head += ["long-doc share", "mixture tokens", "train tokens", "train s", "eval s"]
    lines = [f"# Comparison: {title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for arm, rs in arms.items():
        seeds = ", ".join(str(r.seed) for r in rs if r.seed is not None) or "1 run"
        row = [arm, seeds, spread((r.score for r in rs), 1), spread((r.paperScore for r in rs), 1)]
        row.append(spread((overall_loss(r.validation) for r in rs), 3))
        row += [spread((r.validation.get(b) for r in rs), 3) for b in labels]
        row.append(spread((r.longShare for r in rs), 3))
        row.append(format_tokens(round(statistics.fmean(r.mixtureTokens for r in rs))))
        row.append(format_tokens(round(statistics.fmean(r.trainTokens for r in rs))))
        row += [spread((r.trainSeconds for r in rs), 0), spread((r.evalSeconds for r in rs), 0)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Domain shares of each arm's mixture (tokens):", ""]
    lines.append("| arm | " + " | ".join(domains) + " |")
    lines.append("|" + "---|" * (len(domains) + 1))
    for arm, rs in arms.items():
        cells = [spread((r.domainShares.get(d, 0.0) for r in rs), 3) for d in domains]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    scored = sorted({d for r in runs for d in r.domainLoss})
    lines += ["", "Validation loss by domain (of the predicted token):", ""]
    lines.append("| arm | " + " | ".join(scored) + " |")
    lines.append("|" + "---|" * (len(scored) + 1))
    for arm, rs in arms.items():
        cells = [spread((r.domainLoss.get(d) for r in rs), 3) for d in scored]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Needle scores are 0-100 (clean scorer, and the paper's). Val loss is the validation "
        "loss over all positions; Loss@N over the positions up to N after the previous column's. "
        "Each arm's validation loss is measured on its own mixture's held-out chunks (that "
        "mixture's domain and length make-up), not on one set shared by the arms. "
        "Train s counts seconds in optimizer steps; eval s the needle grid. With several seeds: "
        "mean ± standard deviation over seeds.",
        "",
    ]
    return "\n".join(lines)


def figure(title: str, runs: list[Run]) -> bytes:
    """report.png: a heatmap per arm (mean cell score over seeds, one colour scale) and the
    loss-by-position curves of every arm on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    from longreach.jobs.needle.heatmap import PAPER_COLOURS

    arms = by_arm(runs)
    cmap = LinearSegmentedColormap.from_list("needle", PAPER_COLOURS)
    fig, axes = plt.subplots(
        1, len(arms) + 1, figsize=(4.4 * (len(arms) + 1), 4.4), squeeze=False, layout="constrained"
    )
    mesh = None
    for ax, (arm, rs) in zip(axes[0], arms.items(), strict=False):
        lengths = sorted({c["length"] for r in rs for c in r.cells})
        depths = sorted({c["depth"] for r in rs for c in r.cells})
        sums = np.zeros((len(depths), len(lengths)))
        counts = np.zeros_like(sums)
        for r in rs:
            for c in r.cells:
                i, j = depths.index(c["depth"]), lengths.index(c["length"])
                sums[i, j] += c["score"]
                counts[i, j] += 1
        grid = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        mesh = ax.pcolormesh(grid, cmap=cmap, vmin=0, vmax=100, edgecolors="grey", linewidth=0.5)
        ax.set_xticks(
            [i + 0.5 for i in range(len(lengths))], [str(n) for n in lengths], rotation=45
        )
        ax.set_yticks([i + 0.5 for i in range(len(depths))], [f"{d:g}" for d in depths])
        ax.invert_yaxis()
        ax.set_xlabel("Token Limit")
        if ax is axes[0][0]:
            ax.set_ylabel("Depth Percent")
        ax.set_title(f"{arm}: score {spread((r.score for r in rs), 1)}", fontsize=10)
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes[0][:-1]), label="Score (mean over seeds)")
    ax = axes[0][-1]
    labels = buckets(runs)
    for arm, rs in arms.items():
        xs, ys, es = [], [], []
        for b in labels:
            vs = [r.validation[b] for r in rs if b in r.validation]
            if vs:
                xs.append(bucket_end(b))
                ys.append(statistics.fmean(vs))
                es.append(statistics.stdev(vs) if len(vs) > 1 else 0.0)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm)
    ax.set_xscale("log", base=2)
    ax.set_xticks([bucket_end(b) for b in labels], labels)
    ax.set_xlabel("Position (bucket end)")
    ax.set_ylabel("Validation loss")
    ax.set_title("Loss by position", fontsize=10)
    ax.legend()
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def build(config: ReportConfig) -> str:
    """Read every run, write report.md and report.png to config.output; return the table."""
    runs = [read_run(r, config.storage) for r in config.runs]
    text = table(config.title, runs)
    storage.write_bytes(
        storage.join(config.output, "report.png"), figure(config.title, runs), config.storage
    )
    storage.write_bytes(storage.join(config.output, "report.md"), text.encode(), config.storage)
    return text
