"""The pure core of document selection: identities, length estimates, statistics, budgets.

Every decision comes from the seed and the document's identity (source, relative path, line),
never from worker count, block size or arrival order:

- a keyed hash of the identity gives each document a bucket in [0, BUCKETS) (its place in a
  seeded random order) and a uniform number for the short-document coin flip;
- pass 1 sums estimated tokens of the eligible documents per domain and bucket (integers, so
  the sums are exact in any order);
- `make_plan` turns those sums into bucket ranges per domain: the lowest buckets fill the
  training budget, the highest are held out for validation;
- pass 2 keeps a document when its bucket falls in its domain's range.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longreach.contract.datamixture import SLIMPAJAMA_SHARES, DataMixtureSpec

BUCKETS = 1024
# The paper's length bins: 0-1K, 1-2K, 2-4K, ..., 64-128K, >128K (tokens).
BIN_EDGES = [1024 * 2**i for i in range(8)]
BIN_LABELS = ["0-1K", "1-2K", "2-4K", "4-8K", "8-16K", "16-32K", "32-64K", "64-128K", ">128K"]
GLOBAL_STRATEGIES = ("original", "cut", "global")


@dataclass(frozen=True)
class Scorer:
    """Per-document decisions that need nothing but the document and the config."""

    seed: int
    chars_per_token: float
    short_tokens: int
    keep_probability: float
    specials: int
    """BOS/EOS tokens added per document, counted in every budget."""
    filter_short: bool
    """Whether short documents go through the keep-probability coin flip."""

    @classmethod
    def from_spec(cls, spec: DataMixtureSpec) -> Scorer:
        s = spec.strategy
        return cls(
            seed=spec.seed,
            chars_per_token=s.charsPerToken,
            short_tokens=s.shortDocumentTokens,
            keep_probability=s.shortDocumentKeepProbability,
            specials=int(spec.tokenizer.addBos) + int(spec.tokenizer.addEos),
            filter_short=s.type in ("per-source", "global", "upsample-domains"),
        )

    def identity(self, source: int, relpath: str, index: int) -> tuple[int, float]:
        """(bucket, coin) of a document: a keyed BLAKE2b of its identity."""
        key = f"{self.seed}\x00{source}\x00{relpath}\x00{index}".encode()
        hi, lo = struct.unpack(">QQ", hashlib.blake2b(key, digest_size=16).digest())
        return hi >> (64 - 10), lo / 2.0**64

    def estimate(self, text: str) -> int:
        """Estimated tokens of the text alone: characters / charsPerToken (the paper's)."""
        return round(len(text) / self.chars_per_token)

    def eligible(self, est: int, coin: float) -> bool:
        """Long documents always; short ones with the keep probability (when filtering)."""
        return not self.filter_short or est >= self.short_tokens or coin < self.keep_probability


def length_bin(tokens: int) -> int:
    """Index of `tokens` in the paper's bins."""
    for i, edge in enumerate(BIN_EDGES):
        if tokens < edge:
            return i
    return len(BIN_EDGES)


@dataclass
class DomainStats:
    """Integer counters of one domain; merging is addition, so order never matters."""

    documents: int = 0
    tokens: int = 0
    """Estimated tokens, BOS/EOS included."""
    long_tokens: int = 0
    """Estimated tokens in documents at or over the short-document threshold."""
    hist_documents: list[int] = field(default_factory=lambda: [0] * (len(BIN_EDGES) + 1))
    hist_tokens: list[int] = field(default_factory=lambda: [0] * (len(BIN_EDGES) + 1))
    actual_tokens: int = 0
    """Tokenizer tokens (pass 2 only)."""
    actual_long_tokens: int = 0
    """Tokenizer tokens in documents at or over the threshold (pass 2 only)."""
    sample_estimated: int = 0
    """Estimated tokens of the text sampled to calibrate the estimate (pass 1 only)."""
    sample_tokens: int = 0
    """Tokenizer tokens of that same text (pass 1 only)."""
    eligible: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, np.int64))
    """Estimated tokens of eligible documents per hash bucket (pass 1 only)."""

    def add(self, est: int, specials: int, long: bool) -> None:
        self.documents += 1
        self.tokens += est + specials
        self.long_tokens += (est + specials) if long else 0
        b = length_bin(est)
        self.hist_documents[b] += 1
        self.hist_tokens[b] += est + specials

    def merge(self, other: DomainStats) -> None:
        self.documents += other.documents
        self.tokens += other.tokens
        self.long_tokens += other.long_tokens
        self.actual_tokens += other.actual_tokens
        self.actual_long_tokens += other.actual_long_tokens
        self.sample_estimated += other.sample_estimated
        self.sample_tokens += other.sample_tokens
        self.hist_documents = [
            a + b for a, b in zip(self.hist_documents, other.hist_documents, strict=True)
        ]
        self.hist_tokens = [a + b for a, b in zip(self.hist_tokens, other.hist_tokens, strict=True)]
        self.eligible = self.eligible + other.eligible

    def to_json(self, with_buckets: bool = True) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "eligible"}
        if with_buckets:
            nz = np.nonzero(self.eligible)[0]
            out["eligible"] = {"index": nz.tolist(), "tokens": self.eligible[nz].tolist()}
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DomainStats:
        s = cls(**{k: v for k, v in obj.items() if k != "eligible"})
        if "eligible" in obj:
            s.eligible[np.asarray(obj["eligible"]["index"], np.int64)] = obj["eligible"]["tokens"]
        return s


def merge_stats(total: dict[str, DomainStats], part: dict[str, DomainStats]) -> None:
    for domain, stats in part.items():
        total.setdefault(domain, DomainStats()).merge(stats)


@dataclass
class DomainPlan:
    """Which buckets of a domain go to training and validation, and why."""

    train_end: int
    """Training keeps eligible documents with bucket < train_end."""
    validation_start: int
    """Validation keeps eligible documents with bucket >= validation_start."""
    budget: int
    """Target training tokens (0 where the strategy has no per-domain budget)."""
    planned: int
    """Calibrated tokens the chosen training buckets hold."""
    available: int
    """Calibrated tokens of all eligible documents."""
    validation_planned: int
    """Calibrated tokens held out for validation."""


def resolve_shares(spec: DataMixtureSpec, corpus: dict[str, int]) -> tuple[dict[str, float], str]:
    """Target token share per domain and where it came from, for per-source and
    upsample-domains. `corpus` is the estimated tokens per domain of the whole corpus."""
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


def _fill(tokens: np.ndarray, end: int, budget: float) -> int:
    """The bucket end k <= `end` whose cumulative tokens come closest to `budget`."""
    cum = np.concatenate([[0], np.cumsum(tokens[:end])])
    k = int(np.searchsorted(cum, budget))
    if k > end:
        return end
    if k > 0 and abs(cum[k - 1] - budget) <= abs(cum[k] - budget):
        return k - 1
    return k


def _validation_start(tokens: np.ndarray, target: float) -> int:
    """The bucket start s such that buckets [s, BUCKETS) hold at least `target` tokens."""
    if target <= 0:
        return BUCKETS
    tail = np.cumsum(tokens[::-1])
    n = int(np.searchsorted(tail, target)) + 1
    return max(0, BUCKETS - n)


def calibration(stats: dict[str, DomainStats]) -> dict[str, float]:
    """Tokenizer tokens per estimated token, per domain, from pass 1's samples. Budgets are
    in the tokenizer's tokens, so a domain whose text tokenizes denser than charsPerToken
    says (code, short documents) still gets its share of the output's real tokens."""
    est = sum(s.sample_estimated for s in stats.values())
    overall = sum(s.sample_tokens for s in stats.values()) / est if est else 1.0
    return {
        d: (s.sample_tokens / s.sample_estimated if s.sample_estimated else overall)
        for d, s in sorted(stats.items())
    }


def make_plan(
    spec: DataMixtureSpec, stats: dict[str, DomainStats]
) -> tuple[dict[str, DomainPlan], dict[str, Any]]:
    """Bucket ranges per domain for the strategy, and notes for the manifest. Budgets and
    fills are in calibrated tokens: estimated tokens times the domain's calibration."""
    total = spec.totalTokens
    ratio = calibration(stats)
    tokens = {d: s.eligible.astype(np.float64) * ratio[d] for d, s in stats.items()}
    corpus = {d: s.tokens * ratio[d] for d, s in stats.items()}
    available = {d: float(t.sum()) for d, t in tokens.items()}
    is_global = spec.strategy.type in GLOBAL_STRATEGIES
    if is_global:
        elig_total = sum(available.values()) or 1.0
        expected = {d: total * a / elig_total for d, a in available.items()}
        shares, origin = {}, "the corpus's own mix (no per-domain budgets)"
    else:
        shares, origin = resolve_shares(spec, {d: round(c) for d, c in corpus.items()})
        expected = {d: total * shares.get(d, 0.0) for d in stats}
    vstart: dict[str, int] = {}
    for d in stats:
        target = spec.validationFraction * expected[d]
        if spec.validationFraction > 0 and expected[d] > 0:
            # At least one whole validation chunk per domain, but never half its data.
            target = min(max(target, 1.25 * spec.sequenceLength), 0.5 * available[d])
        vstart[d] = _validation_start(tokens[d], target) if target > 0 else BUCKETS
    if is_global:
        below = np.arange(BUCKETS)
        masked = sum(
            (np.where(below < vstart[d], t, 0.0) for d, t in tokens.items()), np.zeros(BUCKETS)
        )
        k = _fill(masked, BUCKETS, total)
        ends = {d: min(k, vstart[d]) for d in stats}
    else:
        ends = {d: _fill(t, vstart[d], total * shares.get(d, 0.0)) for d, t in tokens.items()}
    plans = {
        d: DomainPlan(
            train_end=ends[d],
            validation_start=vstart[d],
            budget=0 if is_global else round(total * shares.get(d, 0.0)),
            planned=round(float(t[: ends[d]].sum())),
            available=round(available[d]),
            validation_planned=round(float(t[vstart[d] :].sum())),
        )
        for d, t in tokens.items()
    }
    warnings = plan_warnings(plans, shares, total)
    if is_global and spec.strategy.domainShares:
        warnings.append(f"strategy.domainShares is ignored by type {spec.strategy.type}")
    notes = {
        "sharesFrom": origin,
        "targetShares": shares,
        "calibration": ratio,
        "warnings": warnings,
    }
    return plans, notes


def group_files(
    eligible: list[dict[str, int]],
    plans: dict[str, DomainPlan],
    sequence_length: int,
    *,
    chunks: int = 64,
    max_files: int = 512,
) -> list[list[int]]:
    """Consecutive files grouped for pass 2 so that each group is expected to fill about
    `chunks` chunks: a file of SlimPajama gives far less than one 128K chunk to a 5B
    mixture, and packing file by file would leave nearly everything to the driver's serial
    tail. `eligible` is each file's eligible tokens per domain (from pass 1); the expected
    share kept of a domain is planned / available. Deterministic in the config."""
    keep = {
        d: (p.planned + p.validation_planned) / p.available if p.available else 0.0
        for d, p in plans.items()
    }
    groups: list[list[int]] = []
    current: list[int] = []
    expected = 0.0
    for i, per_domain in enumerate(eligible):
        current.append(i)
        expected += sum(n * keep.get(d, 0.0) for d, n in per_domain.items())
        if expected >= chunks * sequence_length or len(current) >= max_files:
            groups.append(current)
            current, expected = [], 0.0
    if current:
        groups.append(current)
    return groups


def plan_warnings(plans: dict[str, DomainPlan], shares: dict[str, float], total: int) -> list[str]:
    """Domains that cannot reach their budget, budgets for missing domains, dropped domains."""
    out = []
    for d, p in sorted(plans.items()):
        if p.budget and p.planned < 0.98 * p.budget:
            out.append(
                f"domain {d}: only {p.planned} of its {p.budget}-token budget is available "
                f"({p.planned / p.budget:.0%}); add data for it or lower its share"
            )
        if d not in shares and shares:
            out.append(f"domain {d}: not in domainShares, so none of it is used")
    for d in sorted(set(shares) - set(plans)):
        if shares[d] > 0:
            out.append(
                f"domain {d}: has a share of {shares[d]:.3f} but no documents in the sources"
            )
    if sum(p.planned for p in plans.values()) < 0.98 * total:
        out.append(
            f"the corpus holds {sum(p.planned for p in plans.values())} eligible tokens, "
            f"less than totalTokens {total}"
        )
    return out


def long_fraction(stats: dict[str, DomainStats], actual: bool = False) -> float:
    if actual:
        tokens = sum(s.actual_tokens for s in stats.values())
        return sum(s.actual_long_tokens for s in stats.values()) / tokens if tokens else 0.0
    tokens = sum(s.tokens for s in stats.values())
    return sum(s.long_tokens for s in stats.values()) / tokens if tokens else 0.0


def shares_of(stats: dict[str, DomainStats], actual: bool = False) -> dict[str, float]:
    counts = {d: (s.actual_tokens if actual else s.tokens) for d, s in stats.items()}
    total = sum(counts.values())
    return {d: (c / total if total else 0.0) for d, c in sorted(counts.items())}
