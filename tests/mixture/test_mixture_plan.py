"""Unit tests of the plan (plan.py) and the driver's fill (fill.py): pass 1's statistics are
gathered by the job's own code (units.FileScan), pass 2 is played by placing each document with
its domain's plan, and the tokenizer by a known tokens-per-estimate ratio that the calibration
does not know, so the band has something to absorb."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

import pytest

from longreach.contract.datamixture import SLIMPAJAMA_SHARES, DataMixtureSpec
from longreach.contract.errors import InputError
from longreach.jobs.mixture import plan as P
from longreach.jobs.mixture.fill import BandDocument, Fill, decide
from longreach.jobs.mixture.selection import (
    DomainStats,
    OrderHistogram,
    Scorer,
    calibration,
    long_share,
    merge_orders,
)
from longreach.jobs.mixture.units import FileScan

pytestmark = pytest.mark.unit


def spec(**overrides: object) -> DataMixtureSpec:
    strategy = {"shortDocumentTokens": 64, **overrides.pop("strategy", {})}  # type: ignore[dict-item]
    base = {
        "sources": [{"uri": "/nowhere"}],
        "tokenizer": {"uri": "/nowhere"},
        "totalTokens": 100_000,
        "sequenceLength": 256,
        "output": {"uri": "/out"},
        "validationFraction": 0,
        "strategy": strategy,
    }
    return DataMixtureSpec.model_validate({**base, **overrides})


@dataclass(frozen=True)
class Doc:
    domain: str
    est: int
    hash: int
    coin: int

    @property
    def text(self) -> str:
        return "x" * round(self.est * 3.68)


def corpus(
    tokens: dict[str, int], *, median: dict[str, int] | None = None, seed: int = 0
) -> list[Doc]:
    """Documents with log-normal lengths around each domain's median, about `tokens` each."""
    rng, scorer, docs = random.Random(seed), Scorer.from_spec(spec()), []
    for domain, want in sorted(tokens.items()):
        got = 0
        while got < want:
            est = max(1, round((median or {}).get(domain, 30) * math.exp(0.5 * rng.gauss(0, 1))))
            docs.append(Doc(domain, est, *scorer.identity(0, domain, len(docs))))
            got += est + 1
    return docs


@dataclass
class Outcome:
    plan: P.Plan
    fill: Fill
    after: dict[str, DomainStats]
    kept: dict[str, list[Doc]]
    validation: list[Doc]


def real_tokens(doc: Doc, ratio: float) -> int:
    return round(doc.est * ratio) + 1  # + BOS


def simulate(s: DataMixtureSpec, docs: list[Doc], ratio: float = 1.02) -> Outcome:
    """Pass 1 with the job's FileScan (calibration says 1.0), the plan, pass 2's placement,
    then fill.decide with the band documents. Real tokens are `ratio` times the estimate."""
    scorer = Scorer.from_spec(s)
    scan = FileScan()
    for i, d in enumerate(docs):
        scan.add(scorer, i, d.domain, d.text, d.hash, d.coin)
    for st in scan.stats.values():
        st.sample_short_estimated = st.sample_short_tokens = 1000
    orders = {d: OrderHistogram.of(o) for d, o in scan.order.items()}
    plan = P.make_plan(s, scan.stats, orders)
    after: dict[str, DomainStats] = {}
    kept: dict[str, list[Doc]] = {}
    top: dict[str, int] = {}
    band, validation = [], []
    codes, stages, keys = P.place(plan.domains, list(scan.domains), scan.line_arrays(), scorer)
    for row, d in enumerate(docs):
        what, stage, key = P.WHAT[codes[row]], int(stages[row]), int(keys[row])
        if what == "train":
            after.setdefault(d.domain, DomainStats()).add(
                d.est, 1, scorer.is_long(d.est), actual=real_tokens(d, ratio)
            )
            kept.setdefault(d.domain, []).append(d)
            if stage == 1:
                top[d.domain] = max(top.get(d.domain, -1), key)
        elif what == "band":
            band.append(
                BandDocument(d.domain, stage, key, 0, row, [(d.est, real_tokens(d, ratio))])
            )
        elif what == "validation":
            validation.append(d)
    fill = decide(plan, s.totalTokens, after, top, band, scorer)
    for doc in band:
        if (0, doc.row) in fill.taken:
            kept.setdefault(doc.domain, []).append(docs[doc.row])
    return Outcome(plan, fill, after, kept, validation)


def check_budgets(out: Outcome, docs: list[Doc], ratio: float = 1.02) -> None:
    """Every domain within half a document of its budget, and every share within 0.5 pp."""
    total = sum(s.actual_tokens for s in out.after.values())
    for d, p in out.plan.domains.items():
        got = out.after[d].actual_tokens if d in out.after else 0
        budget = out.fill.budgets[d]
        biggest = max(real_tokens(x, ratio) for x in docs if x.domain == d)
        assert abs(got - budget) <= biggest / 2, (d, got, budget, biggest)
        assert abs(got / total - p.share) < 0.005, (d, got / total, p.share)


SHORT_C4 = {"C4": 60_000, "CC": 120_000, "Book": 40_000}
MEDIANS = {"C4": 10, "CC": 20, "Book": 60}
SHARES = {"C4": 0.5, "CC": 0.3, "Book": 0.2}
DOCS = corpus(SHORT_C4, median=MEDIANS)
"""C4: all short, CC: nearly all, Book: about two thirds of its tokens in long documents."""


@pytest.mark.parametrize("total", [40_000, 55_000])
def test_per_source_lands_every_domain_within_one_document(total: int) -> None:
    s = spec(totalTokens=total, strategy={"domainShares": SHARES})
    out = simulate(s, DOCS)
    check_budgets(out, DOCS)
    assert out.fill.short is None and out.fill.warnings == [] and out.plan.warnings == []
    assert out.fill.total == total
    # C4 is short of eligible documents at 0.1: it keeps more of its short documents, with the
    # smallest probability that fills its budget (to the nearest document); Book keeps 0.1.
    keep = out.fill.keep
    assert keep["C4"] > 0.1 and keep["Book"] == 0.1
    kept = set(out.kept["C4"])
    c4 = [d for d in DOCS if d.domain == "C4"]
    assert kept == {d for d in c4 if d.coin / 2**64 < keep["C4"]}
    last = max(kept, key=lambda d: d.coin)
    budget, got = out.fill.budgets["C4"], out.after["C4"].actual_tokens
    assert abs(got - real_tokens(last, 1.02) - budget) >= abs(got - budget)


@pytest.mark.parametrize("kind", ["global", "upsample-domains", "original", "cut"])
def test_every_strategy_meets_its_budgets(kind: str) -> None:
    strategy: dict[str, object] = {"type": kind, "shortDocumentKeepProbability": 0.2}
    if kind == "upsample-domains":
        strategy["domainShares"] = {"Book": 0.5}
    out = simulate(spec(totalTokens=30_000, strategy=strategy), DOCS, ratio=0.98)
    check_budgets(out, DOCS, ratio=0.98)
    if kind == "upsample-domains":
        assert out.plan.target_shares["Book"] == 0.5
    if kind == "original":  # the corpus's own mix, calibrated
        assert out.plan.target_shares["CC"] == pytest.approx(120 / 220, abs=0.02)


def test_global_raises_the_keep_probability_for_every_domain_alike() -> None:
    s = spec(totalTokens=100_000, strategy={"type": "global"})
    out = simulate(s, DOCS)
    check_budgets(out, DOCS)
    raised = [out.fill.keep[d] for d in ("C4", "CC")]
    assert min(raised) > 0.1 and max(raised) - min(raised) < 0.02


def test_a_total_over_the_whole_corpus_takes_all_of_it_for_global_strategies() -> None:
    out = simulate(spec(totalTokens=10**9, strategy={"type": "original"}), DOCS)
    assert out.plan.everything and sum(len(v) for v in out.kept.values()) == len(DOCS)
    assert out.fill.short == "" and out.fill.available == sum(real_tokens(d, 1.02) for d in DOCS)
    with pytest.raises(InputError, match=r"strategy.shortfall is fail: the corpus holds about"):
        simulate(spec(totalTokens=10**9, strategy={"type": "original", "shortfall": "fail"}), DOCS)


def test_shortfall_keeps_every_share_with_a_smaller_total_or_fails_before_any_shard() -> None:
    out = simulate(spec(totalTokens=200_000, strategy={"domainShares": SHARES}), DOCS)
    check_budgets(out, DOCS)
    c4_all = sum(real_tokens(d, 1.02) for d in DOCS if d.domain == "C4")
    assert out.fill.short == "C4" and out.fill.available == c4_all
    assert out.fill.total == pytest.approx(c4_all / 0.5) and out.fill.keep["C4"] > 0.99
    assert len(out.kept["C4"]) == sum(d.domain == "C4" for d in DOCS)
    failing = spec(totalTokens=200_000, strategy={"domainShares": SHARES, "shortfall": "fail"})
    with pytest.raises(InputError) as failed:
        simulate(failing, DOCS)
    message = str(failed.value)
    assert "domain C4 has about" in message and "keeps every share is" in message
    fits = int(message.split("keeps every share is ")[1].split(";")[0].replace(",", ""))
    assert abs(fits - 2 * sum(d.est + 1 for d in DOCS if d.domain == "C4")) < 10


def test_missing_domains_fail_naming_them_unless_renormalized() -> None:
    docs = corpus({"RedPajamaC4": 40_000, "RedPajamaBook": 40_000}, median={"RedPajamaBook": 60})
    with pytest.raises(InputError) as failed:
        simulate(spec(totalTokens=20_000), docs)
    message = str(failed.value)
    assert "no documents of RedPajamaArXiv, RedPajamaCommonCrawl" in message
    assert "domains found: RedPajamaBook, RedPajamaC4" in message and "missingDomains" in message
    out = simulate(spec(totalTokens=20_000, strategy={"missingDomains": "renormalize"}), docs)
    check_budgets(out, docs)
    c4, book = SLIMPAJAMA_SHARES["RedPajamaC4"], SLIMPAJAMA_SHARES["RedPajamaBook"]
    assert out.plan.target_shares["RedPajamaC4"] == pytest.approx(c4 / (c4 + book))
    assert "renormalized" in out.plan.shares_from and out.fill.total == 20_000


def test_validation_is_held_out_and_never_trained_on() -> None:
    s = spec(
        totalTokens=20_000,
        validationFraction=0.05,
        sequenceLength=64,
        strategy={"domainShares": {"C4": 0.5, "CC": 0.5}},
    )
    docs = [d for d in DOCS if d.domain != "Book"]
    out = simulate(s, docs)
    check_budgets(out, docs)
    held = set(out.validation)
    assert held and not held & {d for v in out.kept.values() for d in v}
    for d in ("C4", "CC"):  # 5% of its 10,000 tokens, from whole bins at the top of the order
        tokens = sum(x.est + 1 for x in out.validation if x.domain == d)
        biggest = max(x.est + 1 for x in docs if x.domain == d)
        assert 500 <= tokens < 500 + biggest, (d, tokens)


def test_the_long_document_share_is_one_function_before_and_after() -> None:
    s = spec(totalTokens=20_000, strategy={"domainShares": {"C4": 0.5, "Book": 0.5}})
    docs = [d for d in DOCS if d.domain != "CC"]
    out = simulate(s, docs)
    before = FileScan()
    scorer = Scorer.from_spec(s)
    for i, d in enumerate(docs):
        before.add(scorer, i, d.domain, d.text, d.hash, d.coin)
    for st in before.stats.values():
        st.sample_long_estimated, st.sample_long_tokens = 100, 102
        st.sample_short_estimated, st.sample_short_tokens = 100, 150
    ratios = calibration(before.stats)
    assert ratios["C4"] == {"long": 1.02, "short": 1.5}
    est_before = long_share(before.stats, measure="estimate")
    tok_before = long_share(before.stats, measure="tokenizer", ratios=ratios)
    stats = before.stats["C4"], before.stats["Book"]
    long = sum(x.long_tokens for x in stats)
    assert est_before == pytest.approx(long / sum(x.tokens for x in stats))
    assert tok_before == pytest.approx(
        1.02 * long / (1.02 * long + 1.5 * sum(x.tokens - x.long_tokens for x in stats))
    )
    est_after = long_share(out.after, measure="estimate")
    tok_after = long_share(out.after, measure="tokenizer")
    assert est_after > est_before and tok_after > est_after - 0.05


def test_order_histograms_survive_json_and_merge_in_any_order() -> None:
    scorer = Scorer.from_spec(spec())
    parts = []
    for seed in (1, 2):
        scan = FileScan()
        for i, d in enumerate(corpus({"a": 3000, "b": 2000}, seed=seed)):
            scan.add(scorer, i, d.domain, d.text, d.hash, d.coin)
        parts.append({d: OrderHistogram.of(o) for d, o in scan.order.items()})
    one: dict[str, OrderHistogram] = {}
    two: dict[str, OrderHistogram] = {}
    for part in parts:
        merge_orders(
            one,
            {
                d: OrderHistogram.from_json(json.loads(json.dumps(o.to_json())))
                for d, o in part.items()
            },
        )
    for part in reversed(parts):
        merge_orders(two, part)
    assert {d: o.to_json() for d, o in one.items()} == {d: o.to_json() for d, o in two.items()}
    a = one["a"]
    assert int(a.eligible_long.sum() + a.eligible_short.sum() + a.rest.sum()) >= 6000


def test_files_are_grouped_to_fill_chunks_deterministically() -> None:
    def plan(keep: float) -> P.DomainPlan:
        return P.DomainPlan(0.5, 0, P.BINS, 0, 0, 0, 0, keep)

    plans = {"a": plan(0.5), "b": plan(0.0)}
    tokens = [{"a": 100, "b": 1000}] * 10  # 50 expected tokens per file: b is not kept
    assert P.group_files(tokens, plans, 10, chunks=10) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert P.group_files(tokens, plans, 10, chunks=100, max_files=4) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert P.group_files([], plans, 10) == []
