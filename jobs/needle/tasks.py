"""What a cell hides and asks: the paper's single needle, or RULER's multi-key / multi-value
variants (niah_multikey, niah_multivalue) with random keys and values from a seeded rng."""

from __future__ import annotations

import random
from dataclasses import dataclass

from longreach.contract.errors import InputError
from longreach.jobs.needle.scoring import words


class GridError(InputError):
    """The spec cannot produce a grid; the message names the field and the fix."""


@dataclass(frozen=True)
class Needles:
    """What one cell hides and asks: the needle sentences (the first one is asked about)."""

    texts: list[str]
    question: str
    answers: list[str]


_ADJECTIVES = (  # noqa: SIM905 - a word list reads better as one string
    "amber brave calm dusty eager fuzzy gentle hollow icy jolly kind lucky misty noble odd plain"
).split()
_NOUNS = (  # noqa: SIM905
    "anchor basket candle dragon engine falcon garden harbor island jacket kettle lantern "
    "meadow needle orchard pepper"
).split()


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
