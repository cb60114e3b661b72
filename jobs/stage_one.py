"""Stage one of the demo's base model: a tiny Llama taught to retrieve within its pretraining
length, so that the demo's needle heatmap shows retrieval, where it fails, and what extension
changes. `python -m longreach.jobs.stage_one --out DIR` builds it (about 30 minutes on two
CPU cores); `longreach demo` uses the copy built this way and shipped in jobs/demo-model/.

The pretraining corpus is generated afresh for every batch (nothing is downloaded):

- **fact documents**: prose (jobs.synthetic.sentences) with one to three facts in the needle's
  own form, "The best thing to do in {place} is {activity}.", at random places, wrapped in
  the NeedleEval's prompt (the paper's template) asking about one of them and answered by
  restating that fact. Places and activities are made-up words, none from the paper's needle,
  so an answer can only come from the context, and the distractor facts make the model tell
  the asked place from the others.
- **recurring spans**: random tokens in which short spans recur; the recurrence is predictable
  only by copying.

Loss: next-token loss (prose 0.05; answers and the copies in recurring spans 1.0), plus
**attention guidance**. From next-token loss alone, two-layer models on two cores did not form
the copying circuit (an induction head) within a few thousand steps (docs/stage-one.md): the
circuit needs two heads at once, one that looks at the previous token and one that matches it,
and neither helps the loss without the other. Guidance states the circuit's attention pattern
as a loss: in the first layer head 0 attends to the previous token and head 1 to the one before
it; in the last layer head 0 attends, at each copied token, to the position it copies from.
The model still has to learn how to find that position, from any place name, at any distance
up to its training length; the guided heads are ordinary heads of an ordinary Llama.

Sequence lengths grow from 128 to the model's 512 positions over the first half of training.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longreach.contract.needleeval import PAPER_ANSWER, PAPER_NEEDLE, PAPER_PROMPT, PAPER_QUESTION
from longreach.jobs.synthetic import (
    SYLLABLES,
    build_tokenizer,
    sentences,
    tiny_llama_config,
    words,
)

FACT = "The best thing to do in {place} is {activity}"
QUESTION = "What is the best thing to do in {place}?"


@dataclass(frozen=True)
class StageOne:
    """What stage one trains and how."""

    steps: int = 3000
    batch: int = 16
    max_positions: int = 512
    start_length: int = 128
    learning_rate: float = 2e-3
    guidance: float = 1.0
    span_share: float = 0.3
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    vocab_size: int = 1024
    seed: int = 0


def place(rng: random.Random) -> str:
    """A made-up place name of one or two capitalised words."""
    return " ".join(
        "".join(rng.choices(SYLLABLES, k=rng.randint(2, 3))).capitalize()
        for _ in range(rng.choice((1, 1, 2)))
    )


def activity(rng: random.Random) -> str:
    """Five to eleven words: prose words and made-up letter strings, mixed."""
    out = [
        words(rng, 1)[0]
        if rng.random() < 0.5
        else "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8)))
        for _ in range(rng.randint(5, 11))
    ]
    return " ".join(out) + "."


def tokenizer_texts(rng: random.Random) -> list[str]:
    """What the tokenizer is trained on: prose and fact sentences, as in the corpus."""
    prose = [sentences(rng, 200) for _ in range(200)]
    facts = [
        FACT.format(place=place(rng), activity=activity(rng)) + " " + QUESTION.format(place="x")
        for _ in range(400)
    ]
    return prose + facts + [PAPER_PROMPT]


def first_token(spans: Any, char: int) -> int:
    """The first token that ends after character `char`."""
    return next(i for i, (_, end) in enumerate(spans) if end > char)


class Corpus:
    """Batches of stage one's two document kinds, with each guided token's source position."""

    def __init__(self, tokenizer: Any, config: StageOne):
        self.tok, self.config = tokenizer, config
        self.rng = random.Random(config.seed)
        # the template's tokens and a little slack: what a fact document spends besides prose
        self.frame = len(self.encode(PAPER_PROMPT.format(context="", question=QUESTION))) + 8
        # the answer's tokens before the place: " The best thing to do in"
        self.n_head = len(self.encode(" " + FACT.split(" {place}")[0]))

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def spans(self, length: int) -> tuple[list[int], list[float], list[int]]:
        """Random tokens in which spans of 2-6 tokens from the first half recur in the second."""
        r, first = self.rng, len(self.tok.all_special_ids) + 1
        ids = [r.randrange(first, len(self.tok)) for _ in range(length)]
        for _ in range(length // 16):
            n = r.randint(2, 6)
            j, i = r.randrange(1, length // 2 - n), r.randrange(length // 2, length - n)
            ids[i : i + n] = ids[j : j + n]
        # a token that repeats the pair before it copies what followed that pair's first time;
        # only those copies are predictable, and only they carry loss
        seen: dict[tuple[int, int], int] = {}
        source, weights = [-1] * length, [0.0] * length
        for p in range(1, length - 1):
            pair = (ids[p - 1], ids[p])
            if pair in seen and ids[seen[pair] + 1] == ids[p + 1]:
                source[p], weights[p + 1] = seen[pair] + 1, 1.0
            seen.setdefault(pair, p)
        return ids, weights, source

    def facts(self, length: int) -> tuple[list[int], list[float], list[int]]:
        """A fact document as the NeedleEval builds its prompts: prose with 1-3 facts on lines of
        their own after sentence ends, in the eval's template, asking about the first fact;
        then the answer, restating it. Tokenized whole; positions found by character offsets."""
        r = self.rng
        names: list[str] = []
        for _ in range(r.randint(1, 3)):
            if (name := place(r)) not in names:
                names.append(name)
        facts = [FACT.format(place=p, activity=activity(r)) for p in names]
        answer = [*self.encode(" " + facts[0]), self.tok.eos_token_id]
        room = length - len(answer) - sum(len(self.encode(f)) + 2 for f in facts) - self.frame
        hay_text = sentences(r, max(8, room))
        offsets = self.tok(hay_text, return_offsets_mapping=True)["offset_mapping"]
        hay_text = hay_text[: offsets[max(1, min(room, len(offsets))) - 1][1]]
        ends = [0] + [i + 1 for i, ch in enumerate(hay_text) if ch == "."]
        points = sorted(r.choice(ends) for _ in facts)
        context, last, asked_at = "", 0, 0
        for point, i in zip(points, r.sample(range(len(facts)), len(facts)), strict=True):
            context += hay_text[last:point] + "\n"
            if i == 0:
                asked_at = len(context)
            context += facts[i] + "\n"
            last = point
        context += hay_text[last:]
        question = QUESTION.format(place=names[0])
        pre, post = PAPER_PROMPT.split("{context}")
        text = pre + context + post.replace("{question}", question)
        enc = self.tok(text, return_offsets_mapping=True)
        prompt, spans = list(enc["input_ids"]), enc["offset_mapping"]
        fact = first_token(spans, len(pre) + asked_at)  # the asked fact's "The"
        asked = text.rindex(" " + names[0])  # the place in the question, with its space
        name = [i for i, (s, e) in enumerate(spans) if s < asked + len(names[0]) + 1 and e > asked]
        ids = prompt + answer
        source = [-1] * len(ids)
        # answer token t is predicted at len(prompt) + t - 1 and copies fact token t, except
        # the place's tokens, copied from the question
        for t in range(1, len(answer) - 1):
            k = t - self.n_head
            source[len(prompt) + t - 1] = name[k] if 0 <= k < len(name) else fact + t
        return ids, [0.05] * len(prompt) + [1.0] * len(answer), source

    def batch(self, step: int) -> tuple[Any, Any, Any]:
        import torch

        c = self.config
        grow = max(1, c.steps // 2)
        cap = min(
            c.max_positions, c.start_length + (c.max_positions - c.start_length) * step // grow
        )
        rows = [
            (self.spans if self.rng.random() < c.span_share else self.facts)(
                self.rng.randint(cap // 2, cap)
            )
            for _ in range(c.batch)
        ]
        n = min(c.max_positions, max(len(ids) for ids, _, _ in rows))
        ids = torch.full((c.batch, n), self.tok.pad_token_id)
        weights = torch.zeros((c.batch, n))
        source = torch.full((c.batch, n), -1)
        for b, (i, w, s) in enumerate(rows):
            i, w, s = i[:n], w[:n], [x if x < n else -1 for x in s[:n]]
            ids[b, : len(i)] = torch.tensor(i)
            weights[b, : len(w)] = torch.tensor(w)
            source[b, : len(s)] = torch.tensor(s)
        return ids, weights, source


def build_model(config: StageOne, tokenizer: Any) -> Any:
    """A randomly initialised Llama; eager attention, so the guided heads' weights come out."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(config.seed)
    llama = tiny_llama_config(
        tokenizer,
        hidden_size=config.hidden_size,
        layers=config.layers,
        heads=config.heads,
        kv_heads=config.heads,
        max_position_embeddings=config.max_positions,
    )
    return LlamaForCausalLM._from_config(llama, attn_implementation="eager")


def attention_nll(weights: Any, source: Any) -> Any:
    """Mean -log of the attention each guided position pays to its source position."""
    guided = source >= 0
    paid = weights.gather(2, source.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return -(paid.clamp_min(1e-6).log() * guided).sum() / guided.sum().clamp_min(1)


def losses(model: Any, ids: Any, weights: Any, source: Any) -> dict[str, Any]:
    """Next-token loss (weighted), the loss on the tokens a copy predicts (weight 1: answers,
    recurring spans) and the two guidance losses."""
    import torch

    out = model(ids, output_attentions=True)
    logits, target, w = out.logits[:, :-1], ids[:, 1:], weights[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    first = out.attentions[0]
    previous = torch.diagonal(first[:, 0], offset=-1, dim1=1, dim2=2)
    before = torch.diagonal(first[:, 1], offset=-2, dim1=1, dim2=2)
    return {
        "lm": (nll * w).sum() / w.sum(),
        "copied": (nll * (w == 1)).sum() / (w == 1).sum().clamp_min(1),
        "previous": -(previous.clamp_min(1e-6).log().mean() + before.clamp_min(1e-6).log().mean()),
        "copy": attention_nll(out.attentions[-1][:, 0], source),
    }


def needle_scores(
    model: Any,
    tokenizer: Any,
    haystack: str,
    lengths: list[int],
    needle: str = PAPER_NEEDLE,
    answer: str = PAPER_ANSWER,
    max_new_tokens: int = 64,
) -> dict[int, float]:
    """Clean needle score by length (mean over five depths) for the paper's question and
    prompt, built by the NeedleEval's own context builder: what `longreach demo` measures.
    The restated paper answer is about 46 tokens in this small vocabulary."""
    import torch

    from longreach.jobs.needle.grid import ContextBuilder
    from longreach.jobs.needle.scoring import clean_score

    builder = ContextBuilder(
        tokenizer,
        task="single",
        needle=needle,
        question=PAPER_QUESTION,
        answer=answer,
        template=PAPER_PROMPT,
        buffer=64,
        needles=1,
        seed=0,
        haystack=haystack,
        lengths=lengths,
        max_new_tokens=max_new_tokens,
    )
    model.eval()
    scores: dict[int, float] = {}
    for length in lengths:
        row = []
        for depth in (0.0, 25.0, 50.0, 75.0, 100.0):
            ids = torch.tensor([builder.cell(length, depth).input_ids])
            with torch.no_grad():
                out = model.generate(
                    ids,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            response = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            row.append(clean_score(answer, response))
        scores[length] = round(sum(row) / len(row), 1)
    model.train()
    return scores


def train(
    out: str | Path, config: StageOne = StageOne(), log_every: int = 50, eval_every: int = 500
) -> dict[str, Any]:
    """Build the tokenizer and the model, run stage one, save the model folder and
    stage-one.json (the config, the losses every `log_every` steps, needle scores by length
    every `eval_every` steps and at the end)."""
    import torch
    from transformers import AutoTokenizer

    out = Path(out)
    rng = random.Random(config.seed)
    build_tokenizer(out, tokenizer_texts(rng), vocab_size=config.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = build_model(config, tokenizer)
    corpus = Corpus(tokenizer, config)
    opt = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=0.01, betas=(0.9, 0.98)
    )
    haystack = sentences(random.Random(config.seed + 7), 1500)
    within = [config.max_positions // 4, config.max_positions // 2, config.max_positions - 64]
    history: list[dict[str, Any]] = []
    started = time.time()
    for step in range(1, config.steps + 1):
        for group in opt.param_groups:
            group["lr"] = config.learning_rate * min(1.0, step / 50)
        parts = losses(model, *corpus.batch(step))
        loss = parts["lm"] + config.guidance * (parts["previous"] + parts["copy"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == config.steps:
            row = {"step": step, **{k: round(v.item(), 4) for k, v in parts.items()}}
            if step % eval_every == 0:
                row["needleScoreByLength"] = needle_scores(model, tokenizer, haystack, within)
            row["seconds"] = round(time.time() - started, 1)
            history.append(row)
            print("stage one: " + " ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    scores = needle_scores(model, tokenizer, haystack, within)
    print(f"stage one: needle score by length {scores}", flush=True)
    model.set_attn_implementation("sdpa")
    model.save_pretrained(str(out))
    summary = {
        "config": asdict(config),
        "seconds": round(time.time() - started, 1),
        "needleScoreByLength": scores,
        "history": history,
    }
    (out / "stage-one.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longreach.jobs.stage_one", description=__doc__)
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--steps", type=int, default=StageOne.steps)
    parser.add_argument("--seed", type=int, default=StageOne.seed)
    args = parser.parse_args(argv)
    train(args.out, StageOne(steps=args.steps, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
