"""Cells of the grid, and the clean harness's context construction.

Both harnesses (clean here, paper in paper.py) assemble a cell's prompt as text and tokenize
it once, whole, with the tokenizer's own special tokens (BOS for LLaMA); the context and the
needle are then found in the ids through the tokenizer's character offsets. So every seam
(template and haystack, haystack and needle) is tokenized as the model would see that text
anywhere, and the recorded offsets are exact.

The clean harness, per cell (the paper's recipe without its tokenizer quirks):

1. the haystack, repeated whole until it has at least max(lengths) tokens, tokenized once
   without special tokens;
2. its first length - answerBufferTokens - needle tokens tokens are kept;
3. the needle ("\\n<needle>\\n", on a line of its own as in the paper's harness) goes in at
   token int(kept * depth / 100), moved back until the token before it ends a sentence (any
   token whose text ends in "."); at depth 100 it is appended. The cut and the insertion are
   made in the haystack's text at those tokens' character offsets: the haystack is never
   decoded and re-encoded;
4. the prompt template around it, the question in it.

A seam can merge or split a token, so a context is within a few tokens of
length - answerBufferTokens; the recorded counts are the real ones.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from longreach.jobs.needle.tasks import (
    GridError,
    Needles,
    check_answer_in_needle,
    needle_depths,
    task_needles,
)


class Tokenizer(Protocol):
    """The part of a Hugging Face (fast) tokenizer we use."""

    def __call__(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> Any: ...
    def decode(self, ids: Any, **kwargs: Any) -> str: ...
    def batch_decode(self, ids: Any, **kwargs: Any) -> list[str]: ...
    def get_vocab(self) -> dict[str, int]: ...
    def __len__(self) -> int: ...


@dataclass
class Cell:
    """One cell of the grid, ready to generate."""

    length: int
    depth: float
    input_ids: list[int]
    needle_offsets: list[int]
    needle_tokens: list[int]
    haystack_tokens: int
    needles: Needles
    context_start: int = 0
    extrapolated: bool = False
    prompt: str = ""
    """The prompt as text; `input_ids` is its tokenization, with the tokenizer's special tokens."""
    shared_prefix: int = 0
    """Leading ids this cell shares with another cell of its length (see mark_shared_prefixes)."""

    @property
    def key(self) -> str:
        return cell_key(self.length, self.depth)

    @property
    def needle_depth(self) -> float:
        """Where the asked needle really sits, in percent of the haystack around it."""
        hay = self.haystack_tokens - sum(self.needle_tokens)
        before = self.needle_offsets[0] - self.context_start
        before -= sum(
            n
            for o, n in zip(self.needle_offsets, self.needle_tokens, strict=True)
            if o < self.needle_offsets[0]
        )
        return 100.0 * before / hay if hay else 0.0


def cell_key(length: int, depth: float) -> str:
    return f"{length}@{float(depth):g}"


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def require_offsets(tokenizer: Tokenizer) -> None:
    """Needles are located by character offsets, which only fast (tokenizers) tokenizers give."""
    if not getattr(tokenizer, "is_fast", False):
        raise GridError(
            f"modelUri: the model's tokenizer ({type(tokenizer).__name__}) gives no character "
            "offsets; save the model with a tokenizer.json (a fast tokenizer) so the needle can "
            "be located in the prompt"
        )


def sentence_end_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Ids of the tokens whose text ends a sentence (ends in '.', whitespace aside)."""
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
    return frozenset(i for i, t in enumerate(texts) if t.strip().endswith("."))


def insertion_point(
    n_tokens: int, depth: float, context: Sequence[int], ends: frozenset[int]
) -> int:
    """int(n * depth / 100), moved back to just after the previous sentence end; n at 100%."""
    if depth >= 100:
        return n_tokens
    point = int(n_tokens * (depth / 100))
    while point > 0 and context[point - 1] not in ends:
        point -= 1
    return point


@dataclass(frozen=True)
class Prompt:
    """A cell's prompt as text, and where its context and its needles are (character spans)."""

    text: str
    context: tuple[int, int]
    needles: list[tuple[int, int]]


def fill(template: str, question: str, context: str, needles: list[tuple[int, int]]) -> Prompt:
    """The template with the context and the question in it; spans move with the context."""
    pre, post = (part.replace("{question}", question) for part in template.split("{context}", 1))
    at = len(pre)
    return Prompt(
        text=pre + context + post,
        context=(at, at + len(context)),
        needles=[(at + s, at + e) for s, e in needles],
    )


def token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The first and past-the-last token whose characters overlap [start, end)."""
    hits = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
    if not hits:
        raise GridError(f"no token covers characters {start}-{end} of the prompt")
    return hits[0], hits[-1] + 1


def tokenize_cell(
    tokenizer: Tokenizer,
    prompt: Prompt,
    *,
    length: int,
    depth: float,
    needles: Needles,
    limit: int | None,
    max_new_tokens: int,
) -> Cell:
    """Tokenize the whole prompt once and find the context and the needles in the ids."""
    enc = tokenizer(prompt.text, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    first, last = token_span(offsets, *prompt.context)
    spans = [token_span(offsets, *n) for n in prompt.needles]
    return Cell(
        length=length,
        depth=depth,
        input_ids=ids,
        needle_offsets=[s for s, _ in spans],
        needle_tokens=[e - s for s, e in spans],
        haystack_tokens=last - first,
        context_start=first,
        needles=needles,
        prompt=prompt.text,
        extrapolated=limit is not None and len(ids) + max_new_tokens > limit,
    )


@dataclass(frozen=True)
class TokenizedHaystack:
    """The haystack text repeated `repeats` times, its first tokens, and where each ends."""

    text: str
    ids: list[int]
    ends: list[int]
    repeats: int


def tokenize_haystack(tokenizer: Tokenizer, text: str, needed: int) -> TokenizedHaystack:
    """At least `needed` tokens of whole passes over `text` (no special tokens)."""
    repeats = max(1, math.ceil(needed / max(1, len(encode(tokenizer, text)))))
    while True:
        full = text * repeats
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) >= needed:
            break
        repeats += 1  # re-tokenizing the seams between passes can lose a token or two
    ends = [int(e) for _, e in enc["offset_mapping"][:needed]]
    return TokenizedHaystack(full, list(enc["input_ids"][:needed]), ends, repeats)


def splice(text: str, needles: list[str], points: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """`text` with each needle inserted at its character point, and each needle's span."""
    order = sorted(range(len(needles)), key=lambda i: (points[i], i))
    parts: list[str] = []
    spans = [(0, 0)] * len(needles)
    at = last = 0
    for i in order:
        parts.append(text[last : points[i]])
        at += points[i] - last
        spans[i] = (at, at + len(needles[i]))
        parts.append(needles[i])
        at += len(needles[i])
        last = points[i]
    parts.append(text[last:])
    return "".join(parts), spans


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items `a` and `b` share (binary search over C-speed slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def mark_shared_prefixes(cells: list[Cell]) -> None:
    """Set each cell's shared_prefix: the most leading ids it shares with another of `cells`.
    The cells of one length share the prompt up to the shallower needle; a backend can compute
    that part once. In sorted order a cell's longest common prefix is with a neighbour."""
    order = sorted(cells, key=lambda c: c.input_ids)
    for a, b in itertools.pairwise(order):
        n = common_prefix(a.input_ids, b.input_ids)
        a.shared_prefix, b.shared_prefix = max(a.shared_prefix, n), max(b.shared_prefix, n)


class ContextBuilder:
    """Builds the cells of a NeedleEval grid with one tokenizer and one haystack (clean harness).

    Cells are built one length at a time (a 128K cell is a list of 128K ints; 400 of them at
    once would not fit comfortably), but `plan()` checks every cell's budget before any runs.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        task: str,
        needle: str,
        question: str,
        answer: str,
        template: str,
        buffer: int,
        needles: int,
        seed: int,
        haystack: str,
        lengths: list[int],
        max_new_tokens: int,
        model_max_length: int | None = None,
    ):
        if task == "single":
            check_answer_in_needle(needle, answer)
        require_offsets(tokenizer)
        self.tok = tokenizer
        self.task, self.needle, self.question, self.answer = task, needle, question, answer
        self.template, self.buffer, self.count, self.seed = template, buffer, needles, seed
        self.max_new_tokens, self.model_max_length = max_new_tokens, model_max_length
        self.ends = sentence_end_ids(tokenizer)
        self.hay = tokenize_haystack(tokenizer, haystack, max(lengths))
        self.repeats = self.hay.repeats

    def needles_of(self, length: int, depth: float) -> Needles:
        rng = random.Random(f"{self.seed}/{length}/{float(depth):g}")
        return task_needles(self.task, self.needle, self.question, self.answer, self.count, rng)

    def _needle_ids(self, needles: Needles) -> list[list[int]]:
        return [encode(self.tok, f"\n{t}\n") for t in needles.texts]

    def budget(self, length: int, needle_ids: list[list[int]]) -> int:
        """Haystack tokens left for a cell of `length`; raises when nothing is left."""
        n_needle = sum(len(n) for n in needle_ids)
        left = length - self.buffer - n_needle
        if left < 1:
            raise GridError(
                f"spec.lengths: {length} tokens cannot hold the needle: answerBufferTokens "
                f"({self.buffer}) plus the needle's {n_needle} tokens leave no haystack; use lengths "
                f"of at least {self.buffer + n_needle + 1} or lower spec.answerBufferTokens"
            )
        return left

    def plan(self, lengths: list[int], depths: list[float]) -> None:
        """Check every cell's budget before anything runs (cheap: no contexts are built)."""
        for length in lengths:
            for depth in depths:
                self.budget(length, self._needle_ids(self.needles_of(length, depth)))

    def cell(self, length: int, depth: float) -> Cell:
        needles = self.needles_of(length, depth)
        lines = [f"\n{t}\n" for t in needles.texts]
        kept = self.budget(length, self._needle_ids(needles))
        hay = self.hay.ids[:kept]
        points = [
            insertion_point(kept, d, hay, self.ends) for d in needle_depths(depth, len(lines))
        ]
        # a token boundary as a character offset: where the token before it ends
        chars = [self.hay.ends[p - 1] if p else 0 for p in points]
        context, spans = splice(self.hay.text[: self.hay.ends[kept - 1]], lines, chars)
        return tokenize_cell(
            self.tok,
            fill(self.template, needles.question, context, spans),
            length=length,
            depth=depth,
            needles=needles,
            limit=self.model_max_length,
            max_new_tokens=self.max_new_tokens,
        )
