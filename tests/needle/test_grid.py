"""The clean harness: the prompt tokenized once, the needle found by offsets at the depth
asked, the lengths asked; and the shared prefixes of a length's cells."""

from __future__ import annotations

from typing import Any

import pytest

from longreach.contract.needleeval import (
    PAPER_ANSWER,
    PAPER_NEEDLE,
    PAPER_PROMPT,
    PAPER_QUESTION,
)
from longreach.jobs.needle.grid import (
    Cell,
    ContextBuilder,
    common_prefix,
    insertion_point,
    mark_shared_prefixes,
    sentence_end_ids,
)
from longreach.jobs.needle.tasks import Needles, needle_depths

pytestmark = pytest.mark.unit

LENGTHS = [300, 457, 800, 1500]
DEPTHS = [0.0, 11.0, 33.0, 50.0, 78.0, 99.0, 100.0]
BUFFER = 100
LINE = f"\n{PAPER_NEEDLE}\n"
PRE, POST = (p.replace("{question}", PAPER_QUESTION) for p in PAPER_PROMPT.split("{context}"))


def builder(tokenizer: Any, text: str, task: str = "single", **kw: Any) -> ContextBuilder:
    args: dict[str, Any] = dict(
        task=task,
        needle=PAPER_NEEDLE,
        question=PAPER_QUESTION,
        answer=PAPER_ANSWER,
        template=PAPER_PROMPT,
        buffer=BUFFER,
        needles=4,
        seed=7,
        haystack=text,
        lengths=LENGTHS,
        max_new_tokens=20,
        model_max_length=1024,
    )
    args.update(kw)
    return ContextBuilder(tokenizer, **args)


def needle_text(tokenizer: Any, cell: Cell, i: int = 0) -> str:
    """The prompt's characters that the needle's tokens cover."""
    enc = tokenizer(cell.prompt, return_offsets_mapping=True)
    first, last = cell.needle_offsets[i], cell.needle_offsets[i] + cell.needle_tokens[i] - 1
    return cell.prompt[enc["offset_mapping"][first][0] : enc["offset_mapping"][last][1]]


def test_prompt_is_tokenized_once_with_the_needle_at_its_offset_and_depth(
    any_tokenizer: Any, prose: str
) -> None:
    tokenizer = any_tokenizer
    b = builder(tokenizer, prose)
    ends = sentence_end_ids(tokenizer)
    llama_like = "▁" in "".join(tokenizer.get_vocab())
    for length in LENGTHS:
        for depth in DEPTHS:
            c = b.cell(length, depth)
            # one tokenization of the whole text: the seams are tokenized as anywhere else
            assert c.input_ids == tokenizer(c.prompt)["input_ids"]
            # BOS once, in front (LLaMA-shaped); the byte-level test BPE adds none
            assert c.input_ids.count(1) == (1 if llama_like else 0)
            assert c.prompt.startswith(PRE) and c.prompt.endswith(POST)
            context = c.prompt[len(PRE) : len(c.prompt) - len(POST)]
            at = context.index(LINE)
            assert context.count(LINE) == 1
            # the haystack's own text, cut at a token boundary, the needle at a sentence end
            # (at depth 100: at the end)
            hay = context[:at] + context[at + len(LINE) :]
            assert prose.startswith(hay)
            if depth == 100:
                assert at == len(hay)
            else:
                assert at == 0 or hay[:at].rstrip().endswith(".")
            assert PAPER_NEEDLE in needle_text(tokenizer, c)
            # lengths as asked, up to the few tokens that the seams merge or split
            assert abs(c.haystack_tokens - (length - BUFFER)) <= 3
            # the needle sits at the depth asked, moved back by at most one sentence
            hay_tokens = c.haystack_tokens - c.needle_tokens[0]
            pos = c.needle_offsets[0] - c.context_start
            assert c.needle_depth == pytest.approx(100 * pos / hay_tokens)
            if depth == 100:
                assert pos == hay_tokens
            else:
                target = int(hay_tokens * depth / 100)
                slack = longest_sentence(b.hay.ids, ends) + 3
                assert target - slack <= pos <= target + 3
            assert c.extrapolated == (len(c.input_ids) + 20 > 1024)


def longest_sentence(ids: list[int], ends: frozenset[int]) -> int:
    longest = run = 0
    for t in ids:
        run = 0 if t in ends else run + 1
        longest = max(longest, run)
    return longest


def test_insertion_moves_back_to_the_previous_sentence_end() -> None:
    ends = frozenset({9})
    ctx = [1, 2, 9, 3, 4, 5, 9, 6, 7, 8]
    assert insertion_point(len(ctx), 50, ctx, ends) == 3  # int(10*0.5)=5 -> after the 9 at index 2
    assert insertion_point(len(ctx), 100, ctx, ends) == 10
    assert insertion_point(len(ctx), 10, ctx, ends) == 0  # no sentence end before: the start
    assert needle_depths(50, 4) == [50, 75, 0, 25]


@pytest.mark.parametrize("task", ["multi-key", "multi-value"])
def test_ruler_variants_place_every_needle(tokenizer: Any, prose: str, task: str) -> None:
    b = builder(tokenizer, prose, task=task)
    c = b.cell(800, 33.0)
    assert len(c.needle_offsets) == 4 and abs(c.haystack_tokens - (800 - BUFFER)) <= 3 * 4
    assert c.input_ids == tokenizer(c.prompt)["input_ids"]
    for i, sentence in enumerate(c.needles.texts):
        assert sentence in needle_text(tokenizer, c, i)
    key = c.needles.question.split(" for ")[1].split(" ")[0]
    assert key in c.needles.texts[0]
    if task == "multi-key":
        assert len(c.needles.answers) == 1 and all(key not in t for t in c.needles.texts[1:])
    else:
        assert len(c.needles.answers) == 4 and all(key in t for t in c.needles.texts)
    # the same cell twice gives the same keys and values (restarts must not change a cell)
    assert b.cell(800, 33.0).needles == c.needles


def test_short_haystack_is_repeated_and_long_lengths_are_flagged(tokenizer: Any) -> None:
    b = builder(tokenizer, "A short essay. It ends here. ", model_max_length=500)
    assert b.repeats > 1
    c = b.cell(1500, 50.0)
    assert abs(c.haystack_tokens - (1500 - BUFFER)) <= 3 and c.extrapolated
    assert not b.cell(300, 50.0).extrapolated


def test_cells_of_a_length_share_the_prompt_up_to_the_shallower_needle(
    tokenizer: Any, prose: str
) -> None:
    b = builder(tokenizer, prose)
    cells = [b.cell(1500, d) for d in DEPTHS]
    mark_shared_prefixes(cells)
    for i, c in enumerate(cells):
        others = [common_prefix(c.input_ids, o.input_ids) for o in cells if o is not c]
        assert c.shared_prefix == max(others)
        # never past the cell's own needle unless another cell has it at the same place
        if all(o.needle_offsets != c.needle_offsets for o in cells[i + 1 :]):
            assert c.shared_prefix <= c.needle_offsets[0] + 1
    assert cells[-2].shared_prefix > 0.9 * len(cells[-2].input_ids) - 100
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2 and common_prefix([], [1]) == 0
    assert common_prefix([5] * 1000, [5] * 1000) == 1000


def test_a_lone_cell_shares_nothing() -> None:
    cell = Cell(1, 0.0, [1, 2], [0], [1], 2, Needles(["x"], "q", ["x"]))
    mark_shared_prefixes([cell])
    assert cell.shared_prefix == 0
