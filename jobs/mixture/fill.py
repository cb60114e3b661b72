"""The driver's part of the plan: the exact total, and the band documents each domain takes.

Pass 2 keeps every domain's documents before its `definite_end` and hands on, in the units'
carries, those of its band (plan.py). Knowing the real token counts, the driver settles the
total: totalTokens, or less where a domain's data runs out (`strategy.shortfall:
smaller-total`), so that every domain keeps its share. Then, per domain, it orders the band's
documents by (stage, key), the same order pass 1 summed, and takes them until the domain's
budget is met (`take`): a document that does not fit is passed over for smaller ones after
it, then the passed-over one that lands closest may close the gap. Short documents over the
keep probability (stage 1) stay a prefix in coin order, so the effective keep probability
keeps its meaning. Each domain lands within half a document of its budget, closer where the
band has small documents. The price: among the band's last documents, passing over those
that do not fit favours short ones; that is a few documents per domain (about 1% of a
budget at the paper's scale), but a domain whose whole budget is a document or two (Book in
a 200K-token demo) keeps whichever fit. Ties cannot change the result: keys are 64-bit, and
the unit and row break them deterministically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from longreach.jobs.mixture.plan import Plan
from longreach.jobs.mixture.selection import DomainStats, Scorer
from longreach.jobs.mixture.units import CarryIndex, add_after


@dataclass
class BandDocument:
    """A document of a band: its rows (pieces) in a unit's carry."""

    domain: str
    stage: int
    key: int
    unit: int
    row: int
    """Its first row in the unit's carry."""
    pieces: list[tuple[int, int]] = field(default_factory=list)
    """(estimated tokens, tokenizer tokens) of each piece."""

    @property
    def tokens(self) -> int:
        return sum(t for _, t in self.pieces)

    def order(self) -> tuple[int, int, int, int]:
        return self.stage, self.key, self.unit, self.row


@dataclass
class Fill:
    """What the driver decided."""

    taken: set[tuple[int, int]]
    """(unit, row) of every band row to pack."""
    total: float
    """The total the budgets sum to: totalTokens, or less where data ran out."""
    budgets: dict[str, int]
    """Final training budget per domain, in tokenizer tokens."""
    keep: dict[str, float]
    """Effective short-document keep probability per domain."""
    short: str | None
    """The domain whose data ran out ("" for the whole corpus), when the total is smaller."""
    available: int = 0
    """Tokenizer tokens of that domain (or corpus), all of them used."""
    warnings: list[str] = field(default_factory=list)


def band_documents(indexes: Iterable[tuple[int, list[CarryIndex]]]) -> list[BandDocument]:
    """The band documents of every unit: consecutive band rows of one key are one document."""
    out: list[BandDocument] = []
    for unit, rows in indexes:
        last: BandDocument | None = None
        for row, r in enumerate(rows):
            if r.kind != "band":
                continue
            if last is None or (last.domain, last.stage, last.key) != (r.domain, r.stage, r.key):
                last = BandDocument(r.domain, r.stage, r.key, unit, row)
                out.append(last)
            last.pieces.append((r.est, r.tokens))
    return out


def decide(
    plan: Plan,
    total_tokens: int,
    after: dict[str, DomainStats],
    top_coin: dict[str, int],
    band: list[BandDocument],
    scorer: Scorer,
) -> Fill:
    """Settle the total and take band documents until each budget is met; `after` (the kept
    documents' statistics) gains the documents taken. `top_coin`: per domain, the largest
    coin of the short documents over the keep probability pass 2 kept."""
    by_domain: dict[str, list[BandDocument]] = {}
    for doc in sorted(band, key=BandDocument.order):
        by_domain.setdefault(doc.domain, []).append(doc)
    kept = {d: s.actual_tokens for d, s in after.items()}
    fill = _total(plan, total_tokens, kept, by_domain)
    for d, p in sorted(plan.domains.items()):
        definite = kept.get(d, 0)
        budget = definite if plan.everything else fill.total * p.share
        fill.budgets[d] = round(budget)
        top = top_coin.get(d, -1)
        for doc in take(by_domain.get(d, []), budget - definite):
            fill.taken.update((doc.unit, doc.row + i) for i in range(len(doc.pieces)))
            for est, tokens in doc.pieces:
                add_after(after, d, est, tokens, scorer)
            top = max(top, doc.key) if doc.stage == 1 else top
        fill.keep[d] = plan.requested_keep
        if top >= 0:  # the smallest float over every kept coin (coin / 2^64 < it)
            fill.keep[d] = max(plan.requested_keep, math.nextafter(top / 2**64, 1.0))
        if definite > budget:  # the plan's margin covers the estimate's error; past it, say so
            fill.warnings.append(
                f"domain {d}: {definite:,} tokens, {definite - round(budget):,} over its budget "
                f"{round(budget):,}: its text tokenizes denser than pass 1's calibration sample "
                "said, beyond the plan's margin"
            )
    return fill


def _total(
    plan: Plan, total_tokens: int, kept: dict[str, int], band: dict[str, list[BandDocument]]
) -> Fill:
    """The total every share is of: totalTokens, unless some domain cannot fill its share of
    it even with its whole band (then the largest total it can), or, where the plan takes
    the whole corpus, what that holds."""
    if plan.everything:
        total = float(sum(kept.values()))
        short = "" if total < total_tokens else None
        return Fill(set(), total, {}, {}, short, available=round(total))
    caps = {
        d: (kept.get(d, 0) + sum(x.tokens for x in band.get(d, []))) / p.share
        for d, p in plan.domains.items()
        if p.share > 0
    }
    short = min(caps, key=lambda d: caps[d]) if caps else None
    if short is None or caps[short] >= total_tokens:
        return Fill(set(), float(total_tokens), {}, {}, None)
    total = caps[short]
    return Fill(set(), total, {}, {}, short, available=round(total * plan.domains[short].share))


def take(band: list[BandDocument], gap: float) -> list[BandDocument]:
    """The band documents (in (stage, key) order) that fill `gap` tokens: each that fits, in
    order; one that does not is passed over, for smaller ones after it (eligible documents),
    or ends the take (short documents over the keep probability stay a prefix in coin order).
    Then the passed-over document that lands closest, if it lands closer than the gap left."""
    taken: list[BandDocument] = []
    passed: list[BandDocument] = []
    for doc in band:
        if gap <= 0:
            break
        if doc.tokens <= gap:
            taken.append(doc)
            gap -= doc.tokens
            continue
        passed.append(doc)
        if doc.stage == 1:
            break
    if gap > 0 and passed:
        best = min(passed, key=lambda x: (abs(x.tokens - gap), x.order()))
        if abs(best.tokens - gap) < gap:
            taken.append(best)
    return taken
