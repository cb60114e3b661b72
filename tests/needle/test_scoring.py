"""Both scorers against crafted responses, and the summary means."""

from __future__ import annotations

import pytest

from longreach.contract.needleeval import PAPER_ANSWER, PAPER_NEEDLE
from longreach.jobs.needle.scoring import (
    clean_score,
    paper_score,
    score_cell,
    substring_score,
    summarize,
)

pytestmark = pytest.mark.unit


def test_perfect_answer_scores_100_and_the_papers_917() -> None:
    assert clean_score(PAPER_ANSWER, PAPER_ANSWER) == 100
    assert paper_score(PAPER_ANSWER, PAPER_ANSWER) == pytest.approx(100 * 11 / 12)
    assert round(paper_score(PAPER_ANSWER, PAPER_NEEDLE), 1) == 91.7
    assert (
        clean_score(
            PAPER_ANSWER, "The best thing: EAT a sandwich, and sit in Dolores Park on a sunny day!"
        )
        == 100
    )


def test_partial_and_empty_answers() -> None:
    # clean: 11 distinct words; "eat a sandwich" has 3 of them
    assert clean_score(PAPER_ANSWER, "eat a sandwich") == pytest.approx(100 * 3 / 11)
    # paper: set intersection {eat, a, sandwich} over 12 words
    assert paper_score(PAPER_ANSWER, "eat a sandwich") == pytest.approx(100 * 3 / 12)
    # the paper's whitespace split keeps the period: "day" does not match "day."
    assert paper_score(PAPER_ANSWER, "sunny day") == pytest.approx(100 * 1 / 12)
    assert clean_score(PAPER_ANSWER, "sunny day") == pytest.approx(100 * 2 / 11)
    for empty in ("", "   ", "I do not know"):
        assert clean_score(PAPER_ANSWER, empty) == 0
        assert paper_score(PAPER_ANSWER, empty) == 0


def test_substring_scorer_of_the_ruler_variants() -> None:
    assert substring_score(["1234567", "7654321"], "they are 1234567 and 7654321") == 100
    assert substring_score(["1234567", "7654321"], "1234567") == 50
    assert substring_score(["1234567"], "") == 0
    assert score_cell("multi-value", ["1", "2"], "2") == (50, 50)
    assert score_cell("single", [PAPER_ANSWER], PAPER_ANSWER)[1] == pytest.approx(100 * 11 / 12)


def test_summary_means_overall_by_length_and_by_depth() -> None:
    rows = [
        {"length": 1000, "depth": 0.0, "score": 100.0, "paperScore": 91.6667},
        {"length": 1000, "depth": 50.0, "score": 0.0, "paperScore": 0.0},
        {"length": 2000, "depth": 0.0, "score": 50.0, "paperScore": 50.0},
        {"length": 2000, "depth": 50.0, "score": 50.0, "paperScore": 25.0},
    ]
    s = summarize(rows)
    assert s["score"] == 50 and s["paperScore"] == pytest.approx(41.6667, abs=1e-3)
    assert s["byLength"]["1000"] == {"score": 50, "paperScore": pytest.approx(45.8333, abs=1e-3)}
    assert s["byLength"]["2000"] == {"score": 50, "paperScore": 37.5}
    assert s["byDepth"]["0"] == {"score": 75, "paperScore": pytest.approx(70.8333, abs=1e-3)}
    assert s["byDepth"]["50"]["score"] == 25
