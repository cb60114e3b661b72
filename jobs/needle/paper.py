"""The paper's harness, token for token (spec.harness: paper).

What FranxYao/Long-Context-Data-Engineering's eval/needle/needle_in_haystack.py (derived from
gkamradt's LLMTest_NeedleInAHaystack) feeds a Hugging Face model, with `encode` and `decode`
the tokenizer's own (encode adds its special tokens, decode keeps them as text):

1. haystack: whole passes over the files are appended until `encode(text)` has at least
   max(lengths) tokens, BOS included;
2. per length: `encode(text)` cut to `length` tokens and decoded (for LLaMA the text now
   starts with a literal "<s>");
3. per cell: that text encoded again (for LLaMA: BOS, then the literal "<s>", a second BOS)
   and the needle line "\\n<needle>\\n" encoded (BOS first); the context cut to
   length - answerBufferTokens - needle tokens when longer; the needle spliced in at token
   int(n * depth / 100), moved back until the token before it is a period token (at depth
   100: appended); the whole decoded to text again ("<s><s>" before the haystack, "<s>"
   before the needle, as literal text);
4. the prompt template filled with that text and the question, encoded whole (BOS first).

Its period tokens are LLaMA's ids 29889 and 869, the pieces "." and "▁."; here they are the
ids of those pieces in the model's vocabulary (plus "Ġ.", its byte-level BPE spelling), which
for LLaMA's vocabulary are exactly 29889 and 869. The files are read in sorted order (the
harness used glob's order, which the file system decides).
"""

from __future__ import annotations

import math

from longreach.jobs.needle.grid import Cell, Tokenizer, fill, require_offsets, tokenize_cell
from longreach.jobs.needle.tasks import GridError, Needles, check_answer_in_needle

PERIOD_PIECES = (".", "▁.", "Ġ.")


def encode_special(tokenizer: Tokenizer, text: str) -> list[int]:
    """The harness's `enc.encode(text)`: the tokenizer's special tokens added (LLaMA's BOS)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def period_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """The tokens the harness backs off to: the vocabulary's "." and "▁." (and "Ġ.")."""
    vocab = tokenizer.get_vocab()
    return frozenset(vocab[p] for p in PERIOD_PIECES if p in vocab)


def harness_passes(tokenizer: Tokenizer, text: str, needed: int) -> int:
    """The fewest whole passes over `text` whose encoding (special tokens included) has at
    least `needed` tokens, as the harness's read loop appends them."""

    def enough(k: int) -> bool:
        return len(encode_special(tokenizer, text * k)) >= needed

    k = max(1, math.ceil(needed / max(1, len(encode_special(tokenizer, text)))))
    while not enough(k):
        k += 1
    while k > 1 and enough(k - 1):
        k -= 1
    return k


class PaperContextBuilder:
    """Builds the cells of a NeedleEval grid exactly as the paper's harness builds its prompts."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        needle: str,
        question: str,
        answer: str,
        template: str,
        buffer: int,
        haystack: str,
        lengths: list[int],
        max_new_tokens: int,
        model_max_length: int | None = None,
    ):
        check_answer_in_needle(needle, answer)
        require_offsets(tokenizer)
        self.tok, self.template, self.buffer = tokenizer, template, buffer
        self.max_new_tokens, self.model_max_length = max_new_tokens, model_max_length
        self.needles = Needles([needle], question, [answer])
        self.line = f"\n{needle}\n"
        self.needle_ids = encode_special(tokenizer, self.line)
        self.periods = period_ids(tokenizer)
        self.repeats = harness_passes(tokenizer, haystack, max(lengths))
        self.text = haystack * self.repeats
        self.tokens = encode_special(tokenizer, self.text)
        self._context: tuple[int, list[int]] = (-1, [])

    def budget(self, length: int) -> int:
        """Context tokens left for a cell of `length`; raises when nothing is left."""
        left = length - self.buffer - len(self.needle_ids)
        if left < 1:
            raise GridError(
                f"spec.lengths: {length} tokens cannot hold the needle: answerBufferTokens "
                f"({self.buffer}) plus the needle's {len(self.needle_ids)} tokens leave no "
                f"haystack; use lengths of at least {self.buffer + len(self.needle_ids) + 1} or "
                "lower spec.answerBufferTokens"
            )
        return left

    def plan(self, lengths: list[int], depths: list[float]) -> None:
        """Check every cell's budget before anything runs."""
        for length in lengths:
            self.budget(length)

    def context_ids(self, length: int) -> list[int]:
        """The haystack cut to `length` tokens, decoded and encoded again (kept for the
        length's other depths: cells are built one length at a time)."""
        if self._context[0] != length:
            text = self.tok.decode(self.tokens[:length]) if len(self.tokens) > length else self.text
            self._context = (length, encode_special(self.tok, text))
        return self._context[1]

    def cell(self, length: int, depth: float) -> Cell:
        context = self.context_ids(length)
        if len(context) + len(self.needle_ids) > length - self.buffer:
            context = context[: self.budget(length)]
        if depth == 100:
            point = len(context)
        else:
            point = int(len(context) * (depth / 100))
            while point > 0 and context[point - 1] not in self.periods:
                point -= 1
        ids = context[:point] + self.needle_ids + context[point:]
        text = self.tok.decode(ids)
        at = self._find_needle(text, ids, point)
        return tokenize_cell(
            self.tok,
            fill(self.template, self.needles.question, text, [(at, at + len(self.line))]),
            length=length,
            depth=depth,
            needles=self.needles,
            limit=self.model_max_length,
            max_new_tokens=self.max_new_tokens,
        )

    def _find_needle(self, text: str, ids: list[int], point: int) -> int:
        """Where the needle line is in the decoded context: the occurrence nearest to where
        the text of the tokens before it ends (a haystack may quote the needle)."""
        found = []
        at = text.find(self.line)
        while at >= 0:
            found.append(at)
            at = text.find(self.line, at + 1)
        if not found:
            raise GridError(
                "spec.needle: the tokenizer's decode does not give the needle line back as "
                "text, so it cannot be located in the paper harness's prompt; use harness clean"
            )
        if len(found) == 1:
            return found[0]
        expected = len(self.tok.decode(ids[:point]))
        return min(found, key=lambda a: abs(a - expected))
