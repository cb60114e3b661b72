"""The manifest (written last) and the two figures, built from the statistics of both passes."""

from __future__ import annotations

import io
from typing import Any

from longreach.contract.datamixture import (
    DataMixtureSpec,
    MixtureJobConfig,
)
from longreach.jobs.mixture.fill import Fill
from longreach.jobs.mixture.plan import Plan
from longreach.jobs.mixture.selection import (
    BIN_LABELS,
    DomainStats,
    calibrated,
    long_share,
    shares_of,
)

NO_CALIBRATION = {"long": 1.0, "short": 1.0}

TOKEN_UNITS = {
    "tokens": (
        "tokens of the tokenizer, BOS/EOS included: what totalTokens counts; counted after "
        "mixing, estimated before it (estimatedTokens times the domain's calibration: tokenizer "
        "tokens per estimated token of pass 1's tokenized sample, long and short documents apart)"
    ),
    "estimatedTokens": "characters / charsPerToken, plus BOS/EOS: the paper's estimate",
}
LONG_DEFINITION = (
    "tokens in long documents (estimated length, characters / charsPerToken, at least "
    "longDocumentTokens: the paper's rule) over all tokens, before and after mixing; byEstimate "
    "counts estimated tokens, byTokenizer tokens of the tokenizer (before mixing: estimated, "
    "see tokenUnits)"
)


def _side(s: DomainStats, tokens: float, long: float) -> dict[str, int]:
    return {
        "documents": s.documents,
        "estimatedTokens": s.tokens,
        "longEstimatedTokens": s.long_tokens,
        "tokens": round(tokens),
        "longTokens": round(long),
    }


def domain_table(
    before: dict[str, DomainStats], after: dict[str, DomainStats], plan: Plan, fill: Fill
) -> dict[str, Any]:
    """Per domain: documents, estimated and tokenizer tokens before and after, its budget and
    how close it came, and its keep probability."""
    out: dict[str, Any] = {}
    for d in sorted(set(before) | set(after)):
        b, a, p = before.get(d, DomainStats()), after.get(d, DomainStats()), plan.domains.get(d)
        budget = fill.budgets.get(d, 0)
        out[d] = {
            "before": _side(b, *calibrated(b, plan.calibration.get(d, NO_CALIBRATION))),
            "after": _side(a, a.actual_tokens, a.actual_long_tokens),
            "targetShare": p.share if p else 0.0,
            "budgetTokens": budget,
            "plannedBudgetTokens": p.budget if p else 0,
            "availableTokens": p.available if p else 0,
            "budgetFill": round(a.actual_tokens / budget, 6) if budget else None,
            "keepProbability": {
                "requested": plan.requested_keep,
                "effective": fill.keep.get(d, plan.requested_keep),
            },
        }
    return out


def histograms(stats: dict[str, DomainStats]) -> dict[str, Any]:
    return {
        d: {"documents": s.hist_documents, "estimatedTokens": s.hist_tokens}
        for d, s in sorted(stats.items())
    }


def long_document_shares(
    before: dict[str, DomainStats], after: dict[str, DomainStats], plan: Plan
) -> dict[str, dict[str, float]]:
    """The headline statistic, by one function (selection.long_share) on both sides; exact
    (the status's LongDocumentShares rounds)."""
    return {
        "byEstimate": {
            "before": long_share(before, measure="estimate"),
            "after": long_share(after, measure="estimate"),
        },
        "byTokenizer": {
            "before": long_share(before, measure="tokenizer", ratios=plan.calibration),
            "after": long_share(after, measure="tokenizer"),
        },
    }


def build_manifest(
    *,
    spec: DataMixtureSpec,
    config: dict[str, Any],
    config_hash: str,
    tokenizer: dict[str, Any],
    before: dict[str, DomainStats],
    after: dict[str, DomainStats],
    plan: Plan,
    fill: Fill,
    shards: dict[str, list[dict[str, Any]]],
    counts: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """Everything a reader of the output needs: the train job reads sequenceLength,
    tokenizer and the shard lists; people read the statistics."""
    table = domain_table(before, after, plan, fill)
    return {
        "formatVersion": MixtureJobConfig.output_format,
        "config": config,
        "configHash": config_hash,
        "spec": spec.wire(),
        "sequenceLength": spec.sequenceLength,
        "tokenizer": tokenizer,
        "strategy": spec.strategy.wire(),
        "seed": spec.seed,
        "totalTokensTarget": spec.totalTokens,
        "budgetTotalTokens": round(fill.total),
        "tokenUnits": TOKEN_UNITS,
        **plan.notes(),
        "domains": table,
        "domainShares": {
            "target": plan.target_shares,
            "before": shares_of({d: row["before"]["tokens"] for d, row in table.items()}),
            "after": shares_of({d: row["after"]["tokens"] for d, row in table.items()}),
            "beforeEstimated": shares_of({d: s.tokens for d, s in before.items()}),
            "afterEstimated": shares_of({d: s.tokens for d, s in after.items()}),
        },
        "longDocumentTokens": spec.strategy.shortDocumentTokens,
        "longDocumentTokenFraction": {
            **long_document_shares(before, after, plan),
            "definition": LONG_DEFINITION,
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
    # The figure and its Agg canvas directly: pyplot's import and state cost a small job more
    # than the drawing.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
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
        est, tok = (manifest["longDocumentTokenFraction"][k] for k in ("byEstimate", "byTokenizer"))
        ax.set_title(
            f"Length distribution ({manifest['strategy']['type']}): tokens in documents of "
            f"{manifest['longDocumentTokens']}+ estimated tokens\n"
            f"by estimate {est['before']:.0%} -> {est['after']:.0%}, "
            f"by tokenizer {tok['before']:.0%} -> {tok['after']:.0%}",
            fontsize=10,
        )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
