"""The pure core of document selection: identities, length estimates and the statistics of
both passes.

Every decision comes from the seed and the document's identity (source, relative path, line),
never from worker count, block size or arrival order. A keyed BLAKE2b of the identity gives
each document two 64-bit numbers: its `hash` (its place in a seeded random order) and its
`coin` (coin / 2^64 is a uniform number for the short-document coin flip). Pass 1 sums
estimated tokens per domain by the top 16 bits of those numbers (`OrderHistogram`: integers,
so the sums are exact in any order); plan.py turns them into thresholds; pass 2 and the driver
apply them (plan.py's docstring has the whole scheme).
"""

from __future__ import annotations

import bisect
import fractions
import functools
import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longreach.contract.datamixture import DataMixtureSpec

KEY_BITS = 16
BINS = 1 << KEY_BITS
"""Bins of each order histogram: documents share a bin when the top 16 bits of their hash
(or coin) agree."""
# The paper's length bins: 0-1K, 1-2K, 2-4K, ..., 64-128K, >128K (tokens).
BIN_EDGES = [1024 * 2**i for i in range(8)]
BIN_LABELS = ["0-1K", "1-2K", "2-4K", "4-8K", "8-16K", "16-32K", "32-64K", "64-128K", ">128K"]
GLOBAL_STRATEGIES = ("original", "cut", "global")
_HALVES = struct.Struct(">QQ")


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

    def identity(self, source: int, relpath: str, index: int) -> tuple[int, int]:
        """(hash, coin) of a document: the two halves of a keyed BLAKE2b of its identity."""
        return self.identities(source, relpath)(index)

    def identities(self, source: int, relpath: str) -> Callable[[int], tuple[int, int]]:
        """`identity` for the documents of one file: the hash of the file's part of the key
        is computed once (most of the work for short documents), then copied per line."""
        prefix = hashlib.blake2b(
            f"{self.seed}\x00{source}\x00{relpath}\x00".encode(), digest_size=16
        )

        def of(index: int) -> tuple[int, int]:
            h = prefix.copy()
            h.update(str(index).encode())
            hi, lo = _HALVES.unpack(h.digest())
            return hi, lo

        return of

    def estimate(self, text: str) -> int:
        """Estimated tokens of the text alone: characters / charsPerToken (the paper's)."""
        return round(len(text) / self.chars_per_token)

    def is_long(self, est: int) -> bool:
        """The paper's rule: a document is long when its estimate reaches shortDocumentTokens."""
        return est >= self.short_tokens

    @functools.cached_property
    def coin_threshold(self) -> int:
        """A short document is kept when its coin is below this: keepProbability x 2^64,
        rounded up (exact integers, so both passes and numpy agree to the last coin)."""
        if not self.filter_short:
            return 2**64
        return math.ceil(fractions.Fraction(self.keep_probability) * 2**64)

    def eligible(self, est: int, coin: int) -> bool:
        """Long documents always; short ones with the keep probability (when filtering)."""
        return self.is_long(est) or coin < self.coin_threshold

    @property
    def requested_keep(self) -> float:
        """The keep probability the strategy asks for (1 where it keeps every document)."""
        return self.keep_probability if self.filter_short else 1.0


def bin_of(value: int) -> int:
    """The histogram bin of a 64-bit hash or coin: its top KEY_BITS bits."""
    return value >> (64 - KEY_BITS)


def length_bin(tokens: int) -> int:
    """Index of `tokens` in the paper's bins."""
    return bisect.bisect_right(BIN_EDGES, tokens)


@dataclass
class DomainStats:
    """Integer counters of one domain; merging is addition, so order never matters. Long
    documents are those the paper's rule calls long (estimated length >= shortDocumentTokens)."""

    documents: int = 0
    tokens: int = 0
    """Estimated tokens, BOS/EOS included."""
    long_tokens: int = 0
    """Estimated tokens in long documents."""
    hist_documents: list[int] = field(default_factory=lambda: [0] * (len(BIN_EDGES) + 1))
    hist_tokens: list[int] = field(default_factory=lambda: [0] * (len(BIN_EDGES) + 1))
    actual_tokens: int = 0
    """Tokenizer tokens, BOS/EOS included (kept documents only)."""
    actual_long_tokens: int = 0
    """Tokenizer tokens in long documents (kept documents only)."""
    sample_long_estimated: int = 0
    """Estimated tokens of the long documents' text sampled to calibrate the estimate (pass 1)."""
    sample_long_tokens: int = 0
    """Tokenizer tokens of that same text (pass 1)."""
    sample_short_estimated: int = 0
    """The same for short documents (pass 1)."""
    sample_short_tokens: int = 0
    """Tokenizer tokens of the short documents' sampled text (pass 1)."""

    def add(self, est: int, specials: int, long: bool, actual: int = 0) -> None:
        """Count one document (or piece): its estimate, and its tokenizer tokens if known."""
        self.documents += 1
        self.tokens += est + specials
        self.long_tokens += (est + specials) if long else 0
        b = length_bin(est)
        self.hist_documents[b] += 1
        self.hist_tokens[b] += est + specials
        self.actual_tokens += actual
        self.actual_long_tokens += actual if long else 0

    def merge(self, other: DomainStats) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, [a + b for a, b in zip(mine, value, strict=True)])
            else:
                setattr(self, name, mine + value)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DomainStats:
        return cls(**obj)


def merge_stats(total: dict[str, DomainStats], part: dict[str, DomainStats]) -> None:
    for domain, stats in part.items():
        total.setdefault(domain, DomainStats()).merge(stats)


HISTOGRAMS = ("eligible_long", "eligible_short", "rest")


@dataclass
class OrderHistogram:
    """Estimated tokens of one domain (BOS/EOS included) by bin of the order keys (pass 1).

    `eligible_long` and `eligible_short`: documents kept at the requested keep probability,
    by hash bin, long and short apart (they calibrate differently). `rest`: the short
    documents over the keep probability, by coin bin: those a domain short of data takes
    next, in coin order."""

    eligible_long: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    eligible_short: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    rest: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))

    @classmethod
    def of(cls, entries: dict[str, tuple[list[int], list[int]]]) -> OrderHistogram:
        """From (bins, tokens) lists per histogram name."""
        out = cls()
        for name, (bins, tokens) in entries.items():
            setattr(out, name, np.bincount(bins, weights=tokens, minlength=BINS).astype(np.int64))
        return out

    def merge(self, other: OrderHistogram) -> None:
        for name in HISTOGRAMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        out = {}
        for name in HISTOGRAMS:
            values = getattr(self, name)
            nz = np.nonzero(values)[0]
            out[name] = {"index": nz.tolist(), "tokens": values[nz].tolist()}
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OrderHistogram:
        out = cls()
        for name in HISTOGRAMS:
            getattr(out, name)[np.asarray(obj[name]["index"], np.int64)] = obj[name]["tokens"]
        return out


def merge_orders(total: dict[str, OrderHistogram], part: dict[str, OrderHistogram]) -> None:
    for domain, order in part.items():
        total.setdefault(domain, OrderHistogram()).merge(order)


def calibration(stats: dict[str, DomainStats]) -> dict[str, dict[str, float]]:
    """Tokenizer tokens per estimated token, per domain, for long and short documents apart,
    from pass 1's samples. Budgets are in the tokenizer's tokens, so a domain whose text
    tokenizes denser than charsPerToken says (code, short documents) still gets its share of
    the output's real tokens. Without a sample of its own, a kind of document takes the
    domain's other kind, then the whole corpus's ratio."""

    def ratio(est: int, tok: int, fallback: float) -> float:
        return tok / est if est else fallback

    est = sum(s.sample_long_estimated + s.sample_short_estimated for s in stats.values())
    tok = sum(s.sample_long_tokens + s.sample_short_tokens for s in stats.values())
    overall = ratio(est, tok, 1.0)
    out = {}
    for d, s in sorted(stats.items()):
        domain = ratio(
            s.sample_long_estimated + s.sample_short_estimated,
            s.sample_long_tokens + s.sample_short_tokens,
            overall,
        )
        out[d] = {
            "long": ratio(s.sample_long_estimated, s.sample_long_tokens, domain),
            "short": ratio(s.sample_short_estimated, s.sample_short_tokens, domain),
        }
    return out


def calibrated(s: DomainStats, ratio: dict[str, float]) -> tuple[float, float]:
    """(tokens, long tokens) of a domain in tokenizer tokens, estimated through calibration."""
    long = s.long_tokens * ratio["long"]
    return long + (s.tokens - s.long_tokens) * ratio["short"], long


def long_share(
    stats: dict[str, DomainStats],
    *,
    measure: str,
    ratios: dict[str, dict[str, float]] | None = None,
) -> float:
    """The share of tokens in long documents, one function before and after mixing.
    `measure` "estimate": tokens counted as characters / charsPerToken. "tokenizer": tokens of
    the tokenizer; counted where the stats have them (after), else estimated through
    `ratios` (before: pass 1 tokenizes only a sample)."""
    total = long = 0.0
    for d, s in stats.items():
        if measure == "estimate":
            total, long = total + s.tokens, long + s.long_tokens
        elif ratios is None:
            total, long = total + s.actual_tokens, long + s.actual_long_tokens
        else:
            t, lt = calibrated(s, ratios[d])
            total, long = total + t, long + lt
    return long / total if total else 0.0


def shares_of(counts: dict[str, float]) -> dict[str, float]:
    """Each key's share of the total."""
    total = sum(counts.values())
    return {d: (c / total if total else 0.0) for d, c in sorted(counts.items())}
