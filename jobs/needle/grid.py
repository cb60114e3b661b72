"""Context construction, as the paper's harness (FranxYao/Long-Context-Data-Engineering,
eval/needle/needle_in_haystack.py) does it, with the model's own tokenizer:

1. the haystack, repeated whole until it has at least max(lengths) tokens;
2. per cell, the haystack trimmed to length - answerBufferTokens - needle tokens;
3. the needle (on its own line, "\\n<needle>\\n" as the harness) inserted at token
   int(trimmed * depth / 100), moved back until the token before it ends a sentence; at
   depth 100 it is appended at the end;
4. the prompt template around it; the question after it.

Differences, on purpose: the pieces are joined as token ids (the harness decoded the
context and re-tokenized the prompt, which can shift a token at the seams), so the
recorded needle offset is exact; no BOS is encoded into the needle or the haystack (the
harness's `encode` put one in front of each); "sentence end" is any token whose text ends
in "." (the harness listed LLaMA's two period ids).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from longreach.contract.errors import InputError
from longreach.jobs.needle.scoring import words


class GridError(InputError):
    """The spec cannot produce a grid; the message names the field and the fix."""


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer we use."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any: ...
    def batch_decode(self, ids: Any, **kwargs: Any) -> list[str]: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Needles:
    """What one cell hides and asks: the needle sentences (the first one is asked about)."""

    texts: list[str]
    question: str
    answers: list[str]


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


def sentence_end_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Ids of the tokens whose text ends a sentence (ends in '.', whitespace aside)."""
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=False)
    return frozenset(i for i, t in enumerate(texts) if t.strip().endswith("."))


def leading_special_ids(tokenizer: Tokenizer) -> list[int]:
    """The special tokens the tokenizer puts in front of a text (BOS for LLaMA, none for many)."""
    plain = encode(tokenizer, "a")
    full = list(tokenizer("a")["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def haystack_ids(tokenizer: Tokenizer, text: str, needed: int) -> tuple[list[int], int]:
    """The haystack's first `needed` tokens and how many whole passes over it that took."""
    one = encode(tokenizer, text)
    repeats = max(1, math.ceil(needed / max(1, len(one))))
    ids = one if repeats == 1 else encode(tokenizer, text * repeats)
    while len(ids) < needed:  # re-tokenizing the seams can lose a token or two
        repeats += 1
        ids = encode(tokenizer, text * repeats)
    return ids[:needed], repeats


_ADJECTIVES = [
    "amber",
    "brave",
    "calm",
    "dusty",
    "eager",
    "fuzzy",
    "gentle",
    "hollow",
    "icy",
    "jolly",
    "kind",
    "lucky",
    "misty",
    "noble",
    "odd",
    "plain",
]
_NOUNS = [
    "anchor",
    "basket",
    "candle",
    "dragon",
    "engine",
    "falcon",
    "garden",
    "harbor",
    "island",
    "jacket",
    "kettle",
    "lantern",
    "meadow",
    "needle",
    "orchard",
    "pepper",
]


def task_needles(
    task: str, needle: str, question: str, answer: str, count: int, rng: random.Random
) -> Needles:
    """The needles of one cell. single: the spec's needle; multi-key: `count` keys, one asked
    (RULER niah_multikey); multi-value: one key with `count` values, all asked (niah_multivalue)."""
    if task == "single":
        return Needles([needle], question, [answer])
    keys = rng.sample([f"{a}-{n}" for a in _ADJECTIVES for n in _NOUNS], count)
    values = [str(rng.randint(1_000_000, 9_999_999)) for _ in range(count)]
    line = "One of the special magic numbers for {} is: {}."
    if task == "multi-key":
        texts = [line.format(k, v) for k, v in zip(keys, values, strict=True)]
        asked = f"What is the special magic number for {keys[0]} mentioned in the provided text?"
        return Needles(texts, asked, [values[0]])
    if task == "multi-value":
        texts = [line.format(keys[0], v) for v in values]
        asked = (
            f"What are all the special magic numbers for {keys[0]} mentioned in the provided text?"
        )
        return Needles(texts, asked, values)
    raise GridError(f"spec.task: unknown task {task!r}; use single, multi-key or multi-value")


def check_answer_in_needle(needle: str, answer: str) -> None:
    """A single-needle spec whose needle lacks answer words can never score 100: reject it."""
    missing = sorted(set(words(answer)) - set(words(needle)))
    if missing:
        raise GridError(
            f"spec.needle does not contain the answer's words {missing}: a model that finds the "
            "needle could not score 100; make spec.answer a part of spec.needle"
        )


def needle_depths(depth: float, count: int) -> list[float]:
    """The asked needle sits at `depth`; the others spread evenly over the rest of the context."""
    return [depth] + [(depth + 100.0 * i / count) % 100.0 for i in range(1, count)]


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


def place_needles(
    hay: Sequence[int], needles: list[list[int]], depths: list[float], ends: frozenset[int]
) -> tuple[list[int], list[int]]:
    """The haystack with the needles spliced in, and each needle's offset in the result."""
    points = [insertion_point(len(hay), d, hay, ends) for d in depths]
    order = sorted(range(len(needles)), key=lambda i: (points[i], i))
    out: list[int] = []
    offsets = [0] * len(needles)
    last = 0
    for i in order:
        out.extend(hay[last : points[i]])
        offsets[i] = len(out)
        out.extend(needles[i])
        last = points[i]
    out.extend(hay[last:])
    return out, offsets


class ContextBuilder:
    """Builds the cells of a NeedleEval grid with one tokenizer and one haystack.

    Cells are built one at a time (a 128K cell is a list of 128K ints; 400 of them at once
    would not fit comfortably), but `plan()` checks every cell's budget before any runs.
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
        self.tok = tokenizer
        self.task, self.needle, self.question, self.answer = task, needle, question, answer
        self.buffer, self.count, self.seed = buffer, needles, seed
        self.max_new_tokens, self.model_max_length = max_new_tokens, model_max_length
        self.pre, self.post = template.split("{context}", 1)
        self.lead = leading_special_ids(tokenizer)
        self.ends = sentence_end_ids(tokenizer)
        self.hay, self.repeats = haystack_ids(tokenizer, haystack, max(lengths))

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
        needle_ids = self._needle_ids(needles)
        hay = self.hay[: self.budget(length, needle_ids)]
        depths = needle_depths(depth, len(needle_ids))
        context, offsets = place_needles(hay, needle_ids, depths, self.ends)
        fill = needles.question
        head = self.lead + encode(self.tok, self.pre.replace("{question}", fill))
        tail = encode(self.tok, self.post.replace("{question}", fill))
        ids = head + context + tail
        limit = self.model_max_length
        return Cell(
            length=length,
            depth=depth,
            input_ids=ids,
            needle_offsets=[len(head) + o for o in offsets],
            needle_tokens=[len(n) for n in needle_ids],
            haystack_tokens=len(context),
            context_start=len(head),
            needles=needles,
            extrapolated=limit is not None and len(ids) + self.max_new_tokens > limit,
        )
