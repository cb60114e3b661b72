"""The paper harness mode, token for token against a re-implementation of the paper's harness
written here from its documented behaviour (FranxYao/Long-Context-Data-Engineering,
eval/needle/needle_in_haystack.py, gkamradt-derived), with a LLaMA-like SentencePiece
tokenizer and a byte-level BPE."""

from __future__ import annotations

from typing import Any

import pytest

from longreach.contract.needleeval import (
    PAPER_ANSWER,
    PAPER_NEEDLE,
    PAPER_PROMPT,
    PAPER_QUESTION,
)
from longreach.jobs.needle.grid import ContextBuilder
from longreach.jobs.needle.paper import PaperContextBuilder, period_ids

pytestmark = pytest.mark.unit

LENGTHS = [300, 457, 800, 1500]
DEPTHS = [0.0, 11.0, 33.0, 50.0, 78.0, 99.0, 100.0]
BUFFER = 200


class Harness:
    """What the paper's harness feeds the model, step by step as it is documented:

    - `encode` is the tokenizer's encode with its special tokens, `decode` its decode keeping
      them as text;
    - the essays are appended whole, pass after pass, while the encoded text is shorter than
      the longest context;
    - a cell: the encoded essays cut to the context length and decoded; that text encoded
      again, cut to length - 200 - needle tokens when longer; the encoded needle line spliced
      in at int(tokens * depth / 100), walked back until the preceding token is a period
      token (LLaMA's "." and "▁." pieces), appended at depth 100; decoded, put into the
      prompt's f-string, and the whole prompt encoded.
    """

    def __init__(self, tokenizer: Any, essays: str, longest: int):
        self.tok = tokenizer
        self.essays = ""
        while len(self.encode(self.essays)) < longest:
            self.essays += essays
        vocab = tokenizer.get_vocab()
        space = "▁" if "▁" in "".join(vocab) else "Ġ"  # how the vocabulary spells a space
        self.periods = [vocab[p] for p in (".", space + ".") if p in vocab]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def cell(self, length: int, depth: float) -> tuple[list[int], float]:
        """The prompt's ids, and the depth of the harness's insertion in its own tokens."""
        tokens = self.encode(self.essays)
        context = self.decode(tokens[:length]) if len(tokens) > length else self.essays
        needle = self.encode(f"\n{PAPER_NEEDLE}\n")
        haystack = self.encode(context)
        room = length - BUFFER
        if len(haystack) + len(needle) > room:
            haystack = haystack[: room - len(needle)]
        cut = len(haystack) if depth == 100 else int(len(haystack) * (depth / 100))
        while 0 < cut < len(haystack) and haystack[cut - 1] not in self.periods:
            cut -= 1
        context = self.decode(haystack[:cut] + needle + haystack[cut:])
        prompt = (
            f"<|im_start|> This is a very long story book: <book> {context} </book>.\n"
            f" Based on the content of the book, Question: {PAPER_QUESTION}\nAnswer:"
        )
        return self.encode(prompt), 100 * cut / len(haystack)


def paper_builder(tokenizer: Any, text: str, lengths: list[int]) -> PaperContextBuilder:
    return PaperContextBuilder(
        tokenizer,
        needle=PAPER_NEEDLE,
        question=PAPER_QUESTION,
        answer=PAPER_ANSWER,
        template=PAPER_PROMPT,
        buffer=BUFFER,
        haystack=text,
        lengths=lengths,
        max_new_tokens=50,
    )


def test_paper_mode_feeds_the_harness_prompt_token_for_token(
    any_tokenizer: Any, prose: str
) -> None:
    tokenizer = any_tokenizer
    # a shorter haystack than the longest context: several passes, as in the harness
    essays = prose[:3000]
    b = paper_builder(tokenizer, essays, LENGTHS)
    harness = Harness(tokenizer, essays, max(LENGTHS))
    assert b.text == harness.essays and b.repeats > 1
    llama_like = tokenizer.bos_token_id == 1 and tokenizer.encode("a")[0] == 1
    for length in LENGTHS:
        for depth in DEPTHS:
            c = b.cell(length, depth)
            want, harness_depth = harness.cell(length, depth)
            assert c.input_ids == want, (length, depth)
            # the needle, found by offsets, is the needle line at the harness's depth
            off, n = c.needle_offsets[0], c.needle_tokens[0]
            assert PAPER_NEEDLE in tokenizer.decode(c.input_ids[off : off + n])
            # within the few tokens that re-tokenizing the seams (and the literal BOS) shift
            assert abs(c.needle_depth - harness_depth) <= 100 * 4 / (c.haystack_tokens - n)
            if depth == 100:
                assert off + n == c.context_start + c.haystack_tokens
            if llama_like:
                # the harness's BOS quirks: the prompt's BOS, a literal "<s><s>" in front of
                # the haystack and a literal "<s>" in front of the needle line
                assert c.input_ids[0] == 1 and c.input_ids.count(1) == 4
                assert 1 in c.input_ids[off - 2 : off]
                ids = c.input_ids
                assert ids[c.context_start] == 1
                assert any(ids[i : i + 2] == [1, 1] for i in range(c.context_start, len(ids)))
            else:
                assert 1 not in c.input_ids


def test_the_harness_backs_off_only_to_period_tokens(any_tokenizer: Any, prose: str) -> None:
    """The harness's sentence ends are its period tokens; the clean harness's are any token
    ending in "." (the test prose ends some sentences in "(sic).", a ")." piece for the
    LLaMA-like tokenizer)."""
    tokenizer = any_tokenizer
    vocab = tokenizer.get_vocab()
    llama_like = "▁" in "".join(vocab)
    periods = period_ids(tokenizer)
    if llama_like:  # LLaMA's two: "." and "▁." (its ids 29889 and 869)
        assert periods == {vocab["."], vocab["▁."]}
    else:
        assert vocab["."] in periods and periods <= {vocab["."], vocab.get("Ġ.")}
    builders = {
        "paper": paper_builder(tokenizer, prose, [1500]),
        "clean": ContextBuilder(
            tokenizer,
            task="single",
            needle=PAPER_NEEDLE,
            question=PAPER_QUESTION,
            answer=PAPER_ANSWER,
            template=PAPER_PROMPT,
            buffer=BUFFER,
            needles=1,
            seed=0,
            haystack=prose,
            lengths=[1500],
            max_new_tokens=50,
        ),
    }
    ends: dict[str, set[str]] = {"paper": set(), "clean": set()}
    for depth in range(1, 100):
        for name, b in builders.items():
            prompt = b.cell(1500, float(depth)).prompt
            before = prompt[: prompt.index(f"\n{PAPER_NEEDLE}\n")].replace("<s>", "").rstrip()
            if not before.endswith("<book>"):  # the needle is not first in the context
                ends[name].add(before[-2:])
    assert all(e.endswith(".") for e in ends["paper"] | ends["clean"])
    if llama_like:
        assert ")." in ends["clean"] and ")." not in ends["paper"]


def test_the_needle_line_found_in_a_haystack_that_quotes_it(tokenizer: Any, prose: str) -> None:
    """A haystack that contains the needle line itself: the cell's needle is the one at the
    harness's insertion point, not the quote."""
    quoted = prose[:2000] + f"\n{PAPER_NEEDLE}\n" + prose[2000:]
    b = paper_builder(tokenizer, quoted, [1500])
    harness = Harness(tokenizer, b.text, 1500)
    for depth in (11.0, 78.0):
        c = b.cell(1500, depth)
        assert c.input_ids == harness.cell(1500, depth)[0]
        hay = c.haystack_tokens - c.needle_tokens[0]
        assert abs(c.needle_depth - harness.cell(1500, depth)[1]) <= 100 * 4 / hay
