"""A test-only backend that answers from the context, never selectable by users.

It reads the prompt back, keeps the sentences that share the most content words with the
question (at least three), and answers with them; "I do not know." when none qualifies.
A real needle therefore scores 100; a needle the test removed scores 0. This proves the
plumbing (contexts, offsets, scoring, results) end to end without a trained model.
"""

from __future__ import annotations

import re
from typing import Any

from longreach.jobs.needle.grid import Cell
from longreach.jobs.needle.scoring import words

_STOP = set(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "and",
        "or",
        "what",
        "which",
        "who",
        "all",
        "it",
        "this",
        "that",
        "be",
    ]
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _content(text: str) -> set[str]:
    return set(words(text)) - _STOP


class ExtractiveBackend:
    name = "extractive-test"

    def __init__(self, tokenizer: Any, removed_depths: set[float] = frozenset()):  # type: ignore[assignment]
        self.tokenizer = tokenizer
        self.removed = set(removed_depths)
        self.calls = 0

    def batch_limit(self, requested: int) -> int:
        return requested

    def generate(self, cells: list[Cell], max_new_tokens: int) -> list[str]:
        self.calls += 1
        return [self._answer(c) for c in cells]

    def _answer(self, cell: Cell) -> str:
        ids = list(cell.input_ids)
        if cell.depth in self.removed:  # cut every needle out, back to front
            for off, n in sorted(
                zip(cell.needle_offsets, cell.needle_tokens, strict=True), reverse=True
            ):
                del ids[off : off + n]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        question = _content(cell.needles.question)
        sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip() and "?" not in s]
        scored = [(len(question & _content(s)), s) for s in sentences]
        best = max((k for k, _ in scored), default=0)
        if best < 3:
            return "I do not know."
        return " ".join(s for k, s in scored if k == best)
