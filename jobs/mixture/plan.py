"""The plan: target shares, budgets and per-domain thresholds, from pass 1's statistics.

How every domain lands within one document of its budget, deterministically, in two passes:

- One order per domain. First the documents kept at the requested keep probability (long
  documents, and short ones whose coin is under it) by hash, the seeded random order; then
  the other short documents by coin. A domain takes the first documents of its order until
  its budget is met. With enough data that is the paper's rule (keep long documents, short
  ones with the keep probability, stop once the budget is full); a domain short of data
  takes all of those and then short documents in coin order, which is keeping short
  documents with the smallest probability that fills the budget (to the nearest document):
  its effective keep probability.
- Thresholds. Pass 1 sums estimated tokens along each order in bins of 1/65,536 of the hash
  and coin ranges (`OrderHistogram`); the plan converts them into tokenizer tokens (tokenizer
  tokens per estimated token, measured on a tokenized sample per domain, long and short
  documents apart) and picks two positions per domain: the documents before `definite_end`
  hold the budget less a margin (3% plus 16 average documents), those before `band_end` the
  budget plus that margin.
- Pass 2 keeps the documents before `definite_end` and tokenizes, but hands to the driver, the
  few between the two ends (the band). It places every line of a file at once (`place`) from
  pass 1's record of its domain, estimate and keys, so it parses only the lines it keeps. The driver (fill.py), which then knows every domain's
  real token counts, orders the band's documents by their full 64-bit keys and takes them until
  the budget is met (within half a document). So no third pass over the corpus, and nothing
  depends on workers or order.
- Validation: the eligible documents at the top of the hash order (bins from
  `validation_start`) are held out, per domain, and never trained on.
- Shortfall: where a domain's whole corpus cannot fill its budget, `strategy.shortfall` decides:
  `fail` stops here, before any shard is written; `smaller-total` lowers the total so that
  every share holds (the driver settles the exact total from real token counts).

Strategies original and cut keep every document (no coin flip), with budgets in the corpus's
own mix; global keeps the corpus's mix at the keep probability, raised for all domains alike
where the total needs more; a total over the whole corpus takes all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from longreach.contract.datamixture import SLIMPAJAMA_SHARES, DataMixtureSpec
from longreach.contract.errors import InputError
from longreach.jobs.mixture.selection import (
    BINS,
    GLOBAL_STRATEGIES,
    KEY_BITS,
    DomainStats,
    OrderHistogram,
    Scorer,
    calibrated,
    calibration,
)

MARGIN = 0.03
"""Band half-width as a share of the budget: what the calibrated estimate may be off by."""
MARGIN_DOCUMENTS = 16
"""Plus this many average documents, for small budgets (and documents to fit the last gap)."""
END = 2 * BINS
"""The end of a domain's order: hash bins first, then coin bins."""


@dataclass(frozen=True)
class DomainPlan:
    """One domain's budget and its thresholds along its order (see the module docstring)."""

    share: float
    """Target share of the training tokens (0: the domain is not used)."""
    budget: int
    """Planned training tokens (tokenizer tokens, from the calibrated estimate)."""
    validation_start: int
    """Eligible documents with hash bin >= this are held out for validation."""
    definite_end: int
    """Documents before this position of the order are kept."""
    band_end: int
    """Documents from definite_end to before this go to the driver, which takes what fills."""
    available: int
    """Calibrated tokens of all the domain's training candidates (validation excluded)."""
    validation_planned: int
    """Calibrated tokens held out for validation."""
    keep_fraction: float
    """Planned share of the domain's estimated tokens that pass 2 keeps or hands on."""


@dataclass(frozen=True)
class Plan:
    """The plan of the whole mixture."""

    domains: dict[str, DomainPlan]
    total: int
    """Planned training tokens: totalTokens, or less where the corpus is short of data."""
    everything: bool
    """The total takes the whole corpus (global strategies): no budgets to meet."""
    target_shares: dict[str, float]
    shares_from: str
    calibration: dict[str, dict[str, float]]
    requested_keep: float
    warnings: list[str]

    def notes(self) -> dict[str, Any]:
        return {
            "sharesFrom": self.shares_from,
            "targetShares": self.target_shares,
            "calibration": self.calibration,
            "plannedTotalTokens": self.total,
        }


WHAT = (None, "train", "band", "validation")
"""What pass 2 does with a line, by the code `place` gives it."""


def place(
    plans: dict[str, DomainPlan],
    names: list[str],
    lines: dict[str, np.ndarray],
    scorer: Scorer,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2's decision for every line of a file at once, from pass 1's record of it
    (`lines`: domain (an index into `names`), est, hash, coin): what (an index into WHAT),
    stage (0: ordered by hash, 1: a short document over the keep probability, by coin) and
    key (the 64-bit number the driver orders a band by)."""

    def per_line(attr: str, missing: int) -> np.ndarray:
        table = [getattr(plans[n], attr) if n in plans else missing for n in names]
        return np.array(table or [missing], np.int64)[lines["domain"]]

    hash_, coin = lines["hash"], lines["coin"]
    if scorer.coin_threshold >= 2**64:
        eligible = np.ones(len(coin), bool)
    else:
        eligible = (lines["est"] >= scorer.short_tokens) | (coin < np.uint64(scorer.coin_threshold))
    shift = np.uint64(64 - KEY_BITS)
    hash_bin = (hash_ >> shift).astype(np.int64)
    position = np.where(eligible, hash_bin, BINS + (coin >> shift).astype(np.int64))
    what = np.select(
        [
            eligible & (hash_bin >= per_line("validation_start", BINS)),
            position < per_line("definite_end", 0),
            position < per_line("band_end", 0),
        ],
        [3, 1, 2],
        0,
    ).astype(np.int8)
    return what, (~eligible).astype(np.int8), np.where(eligible, hash_, coin)


def resolve_shares(spec: DataMixtureSpec, corpus: dict[str, float]) -> tuple[dict[str, float], str]:
    """Target token share per domain and where it came from, for per-source and
    upsample-domains. `corpus` is the (calibrated) tokens per domain of the whole corpus."""
    strategy = spec.strategy
    natural_total = sum(corpus.values()) or 1
    natural = {d: t / natural_total for d, t in corpus.items()}
    if strategy.type == "upsample-domains":
        named = dict(strategy.domainShares)
        rest = {d: s for d, s in natural.items() if d not in named}
        left, rest_total = max(0.0, 1.0 - sum(named.values())), sum(rest.values()) or 1.0
        return {**named, **{d: left * s / rest_total for d, s in rest.items()}}, (
            "domainShares for the named domains, the rest in their corpus proportions"
        )
    if strategy.domainShares:
        shares, origin = dict(strategy.domainShares), "domainShares"
    elif set(corpus) <= set(SLIMPAJAMA_SHARES):
        shares, origin = dict(SLIMPAJAMA_SHARES), "SlimPajama (default)"
    else:
        shares, origin = natural, "the corpus's own token shares (domains are not SlimPajama's)"
    total = sum(shares.values()) or 1.0
    return {d: s / total for d, s in shares.items()}, origin


def check_missing(
    spec: DataMixtureSpec, shares: dict[str, float], origin: str, present: set[str]
) -> tuple[dict[str, float], str]:
    """Fail when domains with a share have no documents, unless missingDomains renormalizes."""
    missing = sorted(d for d, s in shares.items() if s > 0 and d not in present)
    if not missing:
        return shares, origin
    found = ", ".join(sorted(present)) or "none"
    kept = {d: s for d, s in shares.items() if d not in missing}
    if spec.strategy.missingDomains == "fail" or sum(kept.values()) <= 0:
        raise InputError(
            f"strategy.domainShares ({origin}): no documents of {', '.join(missing)} in the "
            f"sources (domains found: {found}); add their data, set strategy.domainShares to the "
            "domains you have, or set strategy.missingDomains: renormalize"
        )
    total = sum(kept.values())
    return {d: s / total for d, s in kept.items()}, (
        f"{origin}, renormalized over the domains found (missing: {', '.join(missing)})"
    )


def _validation_start(tokens: np.ndarray, target: float, most: float) -> int:
    """The bin s such that bins [s, BINS) hold at least `target` tokens, but never more than
    `most` (whole bins: a domain of a few big documents may hold none out)."""
    if target <= 0:
        return BINS
    tail = np.cumsum(tokens[::-1])
    bins = int(np.searchsorted(tail, target)) + 1
    return BINS - min(bins, int(np.searchsorted(tail, most, side="right")))


@dataclass
class _Domain:
    """A domain's calibrated order while planning: hash bins (eligible), then coin bins."""

    order: np.ndarray
    """Calibrated tokens, END bins."""
    estimated: np.ndarray
    """The same in estimated tokens (for the keep fraction)."""
    mean_document: float
    validation_start: int = BINS

    @property
    def eligible(self) -> float:
        return float(self.order[: self.validation_start].sum())

    @property
    def available(self) -> float:
        return self.eligible + float(self.order[BINS:].sum())


def _domains(
    spec: DataMixtureSpec,
    stats: dict[str, DomainStats],
    orders: dict[str, OrderHistogram],
    ratios: dict[str, dict[str, float]],
) -> dict[str, _Domain]:
    # Strategy cut gives every piece its own BOS/EOS: more tokens than the text's estimate.
    specials = int(spec.tokenizer.addBos) + int(spec.tokenizer.addEos)
    cut = spec.strategy.cutTokens
    extra = cut / max(1, cut - specials) if spec.strategy.type == "cut" else 1.0
    out = {}
    for d, s in stats.items():
        o, r = orders.get(d, OrderHistogram()), ratios[d]
        hashed = o.eligible_long * r["long"] + o.eligible_short * r["short"]
        order = np.concatenate([hashed, o.rest * r["short"]]) * extra
        estimated = np.concatenate([o.eligible_long + o.eligible_short, o.rest]).astype(float)
        mean = calibrated(s, r)[0] * extra / max(1, s.documents)
        out[d] = _Domain(order, estimated, mean)
    return out


def _global_shares(
    spec: DataMixtureSpec, domains: dict[str, _Domain], total: int
) -> dict[str, float]:
    """Strategy global: the eligible mix, with the keep probability raised for every domain
    alike (coin bins in step) where the eligible documents cannot fill the total."""
    eligible = {d: x.eligible for d, x in domains.items()}
    if total <= sum(eligible.values()) or spec.strategy.type != "global":
        return _normalized(eligible)
    rest = sum((x.order[BINS:] for x in domains.values()), np.zeros(BINS))
    need = total - sum(eligible.values())
    b = min(BINS, int(np.searchsorted(np.cumsum(rest), need)) + 1)
    return _normalized(
        {d: eligible[d] + float(x.order[BINS : BINS + b].sum()) for d, x in domains.items()}
    )


def _normalized(values: dict[str, float]) -> dict[str, float]:
    total = sum(values.values())
    return {d: (v / total if total else 0.0) for d, v in sorted(values.items())}


def make_plan(
    spec: DataMixtureSpec, stats: dict[str, DomainStats], orders: dict[str, OrderHistogram]
) -> Plan:
    """The plan for the strategy. Raises InputError for missing domains and, with shortfall
    fail, for a corpus that cannot fill the budgets."""
    ratios = calibration(stats)
    domains = _domains(spec, stats, orders, ratios)
    is_global = spec.strategy.type in GLOBAL_STRATEGIES
    total = spec.totalTokens
    shares: dict[str, float] = {}  # global strategies: the corpus's mix, once validation is out
    origin = ""
    if not is_global:
        corpus = {d: calibrated(s, ratios[d])[0] for d, s in stats.items()}
        shares, origin = resolve_shares(spec, corpus)
        present = {d for d, s in stats.items() if s.documents}
        shares, origin = check_missing(spec, shares, origin, present)
    _hold_out_validation(spec, domains, shares, total)
    everything = is_global and total >= sum(x.available for x in domains.values())
    if everything:
        shares = _normalized({d: x.available for d, x in domains.items()})
        origin = "the corpus's own mix (the total takes all of it)"
    elif is_global:
        shares = _global_shares(spec, domains, total)
        origin = "the corpus's own mix" + (
            " at the keep probability" if spec.strategy.type == "global" else ""
        )
    total = _total(spec, domains, shares, total, everything)
    plans = {d: _domain_plan(x, shares.get(d, 0.0), total, everything) for d, x in domains.items()}
    warnings = []
    if is_global and spec.strategy.domainShares:
        warnings.append(f"strategy.domainShares is ignored by type {spec.strategy.type}")
    elif not is_global:
        unused = sorted(set(stats) - {d for d, s in shares.items() if s > 0})
        warnings = [f"domain {d}: not in domainShares, so none of it is used" for d in unused]
    return Plan(
        domains=plans,
        total=total,
        everything=everything,
        target_shares={d: s for d, s in sorted(shares.items()) if s > 0},
        shares_from=origin,
        calibration=ratios,
        requested_keep=Scorer.from_spec(spec).requested_keep,
        warnings=warnings,
    )


def _hold_out_validation(
    spec: DataMixtureSpec, domains: dict[str, _Domain], shares: dict[str, float], total: int
) -> None:
    """Per domain, validationFraction of its expected tokens from the top of its hash order:
    at least one and a quarter chunks, but never half its eligible data."""
    if spec.validationFraction <= 0:
        return
    eligible = _normalized({d: x.eligible for d, x in domains.items()})
    for d, x in domains.items():
        share = eligible[d] if spec.strategy.type in GLOBAL_STRATEGIES else shares.get(d, 0.0)
        expected = total * share
        if expected <= 0:
            continue
        target = spec.validationFraction * expected
        half = 0.5 * x.eligible
        target = min(max(target, 1.25 * spec.sequenceLength), half)
        x.validation_start = _validation_start(x.order[:BINS], target, half)


def _total(
    spec: DataMixtureSpec,
    domains: dict[str, _Domain],
    shares: dict[str, float],
    total: int,
    everything: bool,
) -> int:
    """The planned total: totalTokens, or the largest that keeps every share where a domain
    is short of data (InputError with shortfall fail)."""
    fix = "lower totalTokens, add data"
    if everything:
        have = round(sum(x.available for x in domains.values()))
        if total > have and spec.strategy.shortfall == "fail":
            raise InputError(
                f"strategy.shortfall is fail: the corpus holds about {have:,} tokens (estimated), "
                f"less than totalTokens {total:,}; the largest total that fits is {have:,}; "
                f"{fix}, or set strategy.shortfall: smaller-total"
            )
        return min(total, have)
    caps = {d: domains[d].available / s for d, s in shares.items() if s > 0 and d in domains}
    if not caps:
        return total
    short = min(caps, key=lambda d: caps[d])
    fits = int(caps[short])
    if fits >= total:
        return total
    if spec.strategy.shortfall == "fail":
        raise InputError(
            f"strategy.shortfall is fail: domain {short} has about "
            f"{round(domains[short].available):,} tokens (estimated), less than its budget "
            f"{round(total * shares[short]):,} ({shares[short]:.3f} of totalTokens {total:,}); "
            f"the largest totalTokens that keeps every share is {fits:,}; {fix} for {short}, "
            "or set strategy.shortfall: smaller-total"
        )
    return fits


def _domain_plan(x: _Domain, share: float, total: int, everything: bool) -> DomainPlan:
    order = x.order.copy()
    order[x.validation_start : BINS] = 0  # validation documents are not training candidates
    cum = np.concatenate([[0.0], np.cumsum(order)])
    budget = total * share
    if everything:
        definite = band = END
    elif budget <= 0:
        definite = band = 0
    else:
        margin = MARGIN * budget + MARGIN_DOCUMENTS * x.mean_document
        definite = max(0, int(np.searchsorted(cum, budget - margin, side="right")) - 1)
        band = min(END, int(np.searchsorted(cum, budget + margin, side="left")))
    est = x.estimated
    kept = float(est[: min(band, x.validation_start)].sum()) + float(est[BINS:band].sum())
    kept += float(est[x.validation_start : BINS].sum()) if x.validation_start < BINS else 0.0
    return DomainPlan(
        share=share,
        budget=round(budget),
        validation_start=x.validation_start,
        definite_end=definite,
        band_end=band,
        available=round(x.available),
        validation_planned=round(float(x.order[x.validation_start : BINS].sum())),
        keep_fraction=kept / float(est.sum()) if est.sum() else 0.0,
    )


def group_files(
    tokens: list[dict[str, int]],
    plans: dict[str, DomainPlan],
    sequence_length: int,
    *,
    chunks: int = 64,
    max_files: int = 512,
) -> list[list[int]]:
    """Consecutive files grouped for pass 2 so that each group is expected to fill about
    `chunks` chunks: a file of SlimPajama gives far less than one 128K chunk to a 5B
    mixture, and packing file by file would leave nearly everything to the driver's serial
    tail. `tokens` is each file's estimated tokens per domain (from pass 1). Deterministic."""
    groups: list[list[int]] = []
    current: list[int] = []
    expected = 0.0
    for i, per_domain in enumerate(tokens):
        current.append(i)
        expected += sum(
            n * (plans[d].keep_fraction if d in plans else 0.0) for d, n in per_domain.items()
        )
        if expected >= chunks * sequence_length or len(current) >= max_files:
            groups.append(current)
            current, expected = [], 0.0
    if current:
        groups.append(current)
    return groups
