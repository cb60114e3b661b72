"""Scores of one cell and of the grid.

- clean: the share of the answer's distinct words found in the response, case-folded and
  with punctuation stripped from word edges; 0-100, a perfect answer scores 100.
- paper: the paper's visualize.py, kept bug for bug: lower-case, whitespace split, the
  intersection of the two *sets* divided by the answer's word *count*. The default answer
  has 12 words, two of them "a", so a perfect answer scores 11/12 = 91.7; "day." only
  matches "day." with its period.
- substring (RULER's multi-key / multi-value): the share of expected values that occur in
  the response as substrings, case-insensitive; the paper-compatible score equals it.
"""

from __future__ import annotations

import string
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

_EDGE = string.punctuation + "“”‘’«»"


def words(text: str) -> list[str]:
    """Case-folded words with punctuation stripped from their edges; empty pieces dropped."""
    out = (w.strip(_EDGE) for w in text.casefold().split())
    return [w for w in out if w]


def clean_score(answer: str, response: str) -> float:
    """Share (0-100) of the answer's distinct words present in the response."""
    expected = set(words(answer))
    if not expected:
        return 0.0
    return 100.0 * len(expected & set(words(response))) / len(expected)


def paper_score(answer: str, response: str) -> float:
    """The paper's scorer, 0-100 scale: len(set(resp) & set(ans)) / len(ans) on raw lowercase splits."""
    expected = answer.lower().split()
    if not expected:
        return 0.0
    return 100.0 * len(set(response.lower().split()) & set(expected)) / len(expected)


def substring_score(values: Iterable[str], response: str) -> float:
    """RULER's string_match_all: share (0-100) of values that occur in the response."""
    expected = list(values)
    if not expected:
        return 0.0
    found = sum(v.lower() in response.lower() for v in expected)
    return 100.0 * found / len(expected)


def score_cell(task: str, answers: list[str], response: str) -> tuple[float, float]:
    """(clean score, paper-compatible score) of one response."""
    if task == "single":
        return clean_score(answers[0], response), paper_score(answers[0], response)
    s = substring_score(answers, response)
    return s, s


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def summarize(cells: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Overall, per-length and per-depth means of both scores (keys are strings, JSON-ready)."""
    rows = list(cells)
    by_length: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    by_depth: dict[float, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_length[row["length"]].append(row)
        by_depth[row["depth"]].append(row)

    def means(group: list[Mapping[str, Any]]) -> dict[str, float]:
        return {
            "score": _mean([r["score"] for r in group]),
            "paperScore": _mean([r["paperScore"] for r in group]),
        }

    return {
        **means(rows),
        "byLength": {str(k): means(v) for k, v in sorted(by_length.items())},
        "byDepth": {_depth_key(k): means(v) for k, v in sorted(by_depth.items())},
    }


def _depth_key(depth: float) -> str:
    return str(int(depth)) if float(depth).is_integer() else str(depth)
