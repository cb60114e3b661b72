"""The manifest (written last) and the two figures, built from the statistics of both passes."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from longreach.contract.datamixture import DataMixtureSpec
from longreach.jobs.mixture.selection import (
    BIN_LABELS,
    DomainPlan,
    DomainStats,
    long_fraction,
    shares_of,
)

FORMAT_VERSION = 1


def output_config(spec: DataMixtureSpec) -> dict[str, Any]:
    """The part of the spec that decides the output bytes (not where or how it runs)."""
    wire = spec.wire()
    keys = (
        "sources",
        "tokenizer",
        "strategy",
        "totalTokens",
        "sequenceLength",
        "seed",
        "validationFraction",
    )
    return {"formatVersion": FORMAT_VERSION, **{k: wire[k] for k in keys}}


def config_hash(spec: DataMixtureSpec) -> str:
    return hashlib.sha256(json.dumps(output_config(spec), sort_keys=True).encode()).hexdigest()


def domain_table(
    before: dict[str, DomainStats], after: dict[str, DomainStats], plans: dict[str, DomainPlan]
) -> dict[str, Any]:
    """Per domain: documents and tokens before and after, budget and how close it came."""
    out: dict[str, Any] = {}
    for d in sorted(set(before) | set(after)):
        b, a, p = before.get(d, DomainStats()), after.get(d, DomainStats()), plans.get(d)
        out[d] = {
            "before": {"documents": b.documents, "estimatedTokens": b.tokens},
            "after": {
                "documents": a.documents,
                "estimatedTokens": a.tokens,
                "tokens": a.actual_tokens,
            },
            "budgetTokens": p.budget if p else 0,
            "plannedTokens": p.planned if p else 0,
            "availableTokens": p.available if p else 0,
            "budgetFill": round(a.actual_tokens / p.budget, 4) if p and p.budget else None,
        }
    return out


def histograms(stats: dict[str, DomainStats]) -> dict[str, Any]:
    return {
        d: {"documents": s.hist_documents, "estimatedTokens": s.hist_tokens}
        for d, s in sorted(stats.items())
    }


def build_manifest(
    *,
    spec: DataMixtureSpec,
    tokenizer: dict[str, Any],
    before: dict[str, DomainStats],
    after: dict[str, DomainStats],
    plans: dict[str, DomainPlan],
    plan_notes: dict[str, Any],
    shards: dict[str, list[dict[str, Any]]],
    counts: dict[str, int],
    warnings: list[str],
) -> dict[str, Any]:
    """Everything a reader of the output needs: the train job reads sequenceLength,
    tokenizer and the shard lists; people read the statistics."""
    return {
        "formatVersion": FORMAT_VERSION,
        "config": output_config(spec),
        "configHash": config_hash(spec),
        "spec": spec.wire(),
        "sequenceLength": spec.sequenceLength,
        "tokenizer": tokenizer,
        "strategy": spec.strategy.wire(),
        "seed": spec.seed,
        "totalTokensTarget": spec.totalTokens,
        "sharesFrom": plan_notes["sharesFrom"],
        "targetShares": plan_notes["targetShares"],
        "calibration": plan_notes["calibration"],
        "domains": domain_table(before, after, plans),
        "domainShares": {
            "before": shares_of(before),
            "after": shares_of(after, actual=True),
            "afterEstimated": shares_of(after),
        },
        "longDocumentTokens": spec.strategy.shortDocumentTokens,
        "longDocumentTokenFraction": {
            "before": long_fraction(before),
            "after": long_fraction(after, actual=True),
            "afterEstimated": long_fraction(after),
        },
        "histograms": {
            "bins": BIN_LABELS,
            "unit": "estimated tokens (characters / charsPerToken)",
            "before": histograms(before),
            "after": histograms(after),
        },
        "shards": shards,
        **counts,
        "warnings": warnings,
    }


def _bars(ax: Any, labels: list[str], before: list[float], after: list[float], ylabel: str) -> None:
    import numpy as np

    x = np.arange(len(labels))
    ax.bar(x - 0.2, before, 0.4, label="before", color="#9aa5b1")
    ax.bar(x + 0.2, after, 0.4, label="after", color="#1f6feb")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend()


def plot_png(manifest: dict[str, Any], which: str) -> bytes:
    """`domains.png` (token share per domain) or `lengths.png` (token share per length bin),
    before and after, in the manner of the paper's Figure 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if which == "domains":
        shares = manifest["domainShares"]
        domains = sorted(set(shares["before"]) | set(shares["after"]))
        labels = [d.removeprefix("RedPajama") for d in domains]
        _bars(
            ax,
            labels,
            [shares["before"].get(d, 0) for d in domains],
            [shares["after"].get(d, 0) for d in domains],
            "share of tokens",
        )
        ax.set_title(f"Domain mixture ({manifest['strategy']['type']})")
    else:
        hist = manifest["histograms"]

        def dist(side: str) -> list[float]:
            per_bin = [
                sum(h["estimatedTokens"][i] for h in hist[side].values())
                for i in range(len(hist["bins"]))
            ]
            total = sum(per_bin) or 1
            return [v / total for v in per_bin]

        _bars(ax, hist["bins"], dist("before"), dist("after"), "share of tokens")
        ax.set_xlabel("document length (estimated tokens)")
        lf = manifest["longDocumentTokenFraction"]
        ax.set_title(
            f"Length distribution ({manifest['strategy']['type']}): tokens in documents of "
            f"{manifest['longDocumentTokens']}+ tokens {lf['before']:.0%} -> {lf['after']:.0%}"
        )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
