"""Context construction: exact lengths, needles at the recorded offsets, at the depths asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from longreach.contract.needleeval import (
    PAPER_ANSWER,
    PAPER_NEEDLE,
    PAPER_PROMPT,
    PAPER_QUESTION,
)
from longreach.jobs.needle.grid import (
    ContextBuilder,
    encode,
    insertion_point,
    needle_depths,
    sentence_end_ids,
)

from .conftest import write_haystack

pytestmark = pytest.mark.unit

LENGTHS = [300, 457, 800, 1500]
DEPTHS = [0.0, 11.0, 33.0, 50.0, 78.0, 99.0, 100.0]
BUFFER = 100


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


def sentencepiece_like(folder: Path, texts: list[str]) -> Any:
    """A LLaMA-2-shaped tokenizer: Metaspace pieces ("▁the"), BOS added in front of every text."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    alphabet = [*string.printable.strip(), "▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(folder))
    return fast


@pytest.fixture(scope="module", params=["byte-level-bpe", "sentencepiece-like"])
def any_tokenizer(
    request: pytest.FixtureRequest,
    tokenizer: Any,
    text: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    if request.param == "byte-level-bpe":
        return tokenizer
    return sentencepiece_like(
        tmp_path_factory.mktemp("sp"), [text[i : i + 2000] for i in range(0, len(text), 2000)]
    )


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = write_haystack(tmp_path_factory.mktemp("hay"), files=4, words=500)
    return "".join(p.read_text() for p in sorted(Path(folder).glob("*.txt")))


def longest_sentence(ids: list[int], ends: frozenset[int]) -> int:
    longest = run = 0
    for t in ids:
        run = 0 if t in ends else run + 1
        longest = max(longest, run)
    return longest


def test_every_cell_has_the_asked_length_and_the_needle_at_its_offset(
    any_tokenizer: Any, text: str
) -> None:
    tokenizer = any_tokenizer
    b = builder(tokenizer, text)
    # LLaMA-shaped tokenizers put BOS in front of the prompt; the byte-level test BPE adds none
    assert b.lead == ([1] if "▁" in "".join(tokenizer.get_vocab()) else [])
    ends = sentence_end_ids(tokenizer)
    slack = longest_sentence(b.hay, ends) + 1
    needle_ids = encode(tokenizer, f"\n{PAPER_NEEDLE}\n")
    for length in LENGTHS:
        for depth in DEPTHS:
            c = b.cell(length, depth)
            # haystack + needle fill exactly length - buffer; the template adds the same every time
            assert c.haystack_tokens == length - BUFFER
            head = len(b.lead) + len(encode(tokenizer, PAPER_PROMPT.split("{context}")[0]))
            tail = len(c.input_ids) - head - c.haystack_tokens
            assert tail == len(
                encode(
                    tokenizer,
                    PAPER_PROMPT.split("{context}")[1].replace("{question}", PAPER_QUESTION),
                )
            )
            off = c.needle_offsets[0]
            assert c.input_ids[off : off + len(needle_ids)] == needle_ids
            # the needle sits at the depth asked, moved back to a sentence end at most one sentence
            hay_len = c.haystack_tokens - len(needle_ids)
            pos = off - head
            if depth == 100:
                assert pos == hay_len
            else:
                target = int(hay_len * depth / 100)
                assert target - slack <= pos <= target
                assert pos == 0 or c.input_ids[off - 1] in ends
            assert c.needle_depth == pytest.approx(100 * pos / hay_len)
            assert c.context_start == head
            assert c.extrapolated == (len(c.input_ids) + 20 > 1024)


def test_paper_grid_spreads_like_numpy() -> None:
    from longreach.contract.needleeval import DepthGrid, LengthGrid

    lengths = LengthGrid(min=1000, max=128000, count=40).resolve()
    assert len(lengths) == 40 and lengths[:3] == [1000, 4256, 7513] and lengths[-1] == 128000
    assert DepthGrid().resolve() == [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]


def test_insertion_moves_back_to_the_previous_sentence_end() -> None:
    ends = frozenset({9})
    ctx = [1, 2, 9, 3, 4, 5, 9, 6, 7, 8]
    assert insertion_point(len(ctx), 50, ctx, ends) == 3  # int(10*0.5)=5 -> after the 9 at index 2
    assert insertion_point(len(ctx), 100, ctx, ends) == 10
    assert insertion_point(len(ctx), 10, ctx, ends) == 0  # no sentence end before: the start
    assert needle_depths(50, 4) == [50, 75, 0, 25]


@pytest.mark.parametrize("task", ["multi-key", "multi-value"])
def test_ruler_variants_place_every_needle(tokenizer: Any, text: str, task: str) -> None:
    b = builder(tokenizer, text, task=task)
    c = b.cell(800, 33.0)
    assert len(c.needle_offsets) == 4 and c.haystack_tokens == 800 - BUFFER
    for off, n, sentence in zip(c.needle_offsets, c.needle_tokens, c.needles.texts, strict=True):
        assert c.input_ids[off : off + n] == encode(tokenizer, f"\n{sentence}\n")
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
    assert c.haystack_tokens == 1500 - BUFFER and c.extrapolated
    assert not b.cell(300, 50.0).extrapolated
