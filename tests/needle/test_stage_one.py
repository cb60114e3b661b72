"""The demo's base model (jobs/stage_one.py): its corpus is what it says, the shipped copy
retrieves within its pretraining length, and stage one's training forms the guided heads."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest

from longreach.jobs.demo import BASE_MODEL
from longreach.jobs.stage_one import Corpus, StageOne, needle_scores, train
from longreach.jobs.synthetic import sentences

# Another fact in the needle's form: the model must answer from the context, not from memory.
OTHER_NEEDLE = "The best thing to do in San Francisco is ride a green tram past the old harbor."
OTHER_ANSWER = "ride a green tram past the old harbor."


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    """The tokenizer stage one built for the shipped model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(BASE_MODEL))


@pytest.mark.unit
def test_every_guided_position_points_at_the_token_it_copies(tokenizer) -> None:  # type: ignore[no-untyped-def]
    corpus = Corpus(tokenizer, StageOne())
    guided = 0
    for length in (128, 300, 512) * 10:
        for ids, weights, source in (corpus.facts(length), corpus.spans(length)):
            assert len(ids) == len(weights) == len(source)
            for p, s in enumerate(source):
                if s >= 0:
                    assert s <= p and ids[s] == ids[p + 1], (p, s)
                    guided += 1
    assert guided > 1000
    ids, _, _ = corpus.facts(512)
    text = tokenizer.decode(ids)
    # the eval's own template around prose and facts; the answer restates the asked fact
    assert "This is a very long story book: <book>" in text and "\nAnswer: The best thing" in text
    assert "San Francisco" not in text and "sandwich" not in text


@pytest.mark.integration
def test_the_shipped_base_model_retrieves_within_its_pretraining_length() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(str(BASE_MODEL))
    tokenizer = AutoTokenizer.from_pretrained(str(BASE_MODEL))
    haystack = sentences(random.Random(7), 1500)  # the demo's first essay
    lengths = [128, 256, 448]
    paper = needle_scores(model, tokenizer, haystack, lengths)
    other = needle_scores(model, tokenizer, haystack, lengths, OTHER_NEEDLE, OTHER_ANSWER)
    # "Dolores Park" comes back as "folores bark": stage one's answers are lower case, and
    # capitals are copied badly (9 of the 11 words); every other word is copied
    assert min(paper.values()) >= 70 and min(other.values()) >= 90, (paper, other)


@pytest.mark.unit
def test_the_shipped_base_model_is_what_stage_one_builds() -> None:
    summary = json.loads((BASE_MODEL / "stage-one.json").read_text())
    assert summary["config"] == asdict(StageOne())
    config = json.loads((BASE_MODEL / "config.json").read_text())
    c = StageOne()
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (
        c.hidden_size,
        c.layers,
        c.heads,
    )
    assert config["max_position_embeddings"] == c.max_positions
    assert min(summary["needleScoreByLength"].values()) >= 70


@pytest.mark.integration
@pytest.mark.slow
def test_stage_one_forms_the_guided_heads(tmp_path: Path) -> None:
    summary = train(tmp_path / "model", StageOne(steps=120, batch=8), log_every=20)
    first, last = summary["history"][0], summary["history"][-1]
    # the first layer's heads find the previous tokens, the last layer's the copied positions
    assert last["previous"] < first["previous"] / 2, summary["history"]
    assert last["copy"] < first["copy"] / 2, summary["history"]
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / "tokenizer.json").exists()
