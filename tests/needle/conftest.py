"""Fixtures of the needle tests: a tiny random Llama and a prose haystack, built on the spot."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from longreach.jobs.synthetic import sentences


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A 2-layer Llama with 1,024 positions and the session's BPE tokenizer."""
    from longreach.jobs.synthetic import build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir, max_position_embeddings=1024
    )


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def llama_like_tokenizer(folder: Path, texts: list[str]) -> Any:
    """A SentencePiece BPE shaped like LLaMA's, trained on `texts`: "▁" word prefix, BOS (id 1)
    in front of every encoded text, byte fallback; loaded from its tokenizer.model as
    transformers loads LLaMA's."""
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=700,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    return LlamaTokenizer.from_pretrained(str(folder), add_bos_token=True)


@pytest.fixture(scope="session")
def prose() -> str:
    """Four essays of prose. Some sentences end in " ." (LLaMA's "▁." piece), some in "(sic)."
    (a ")." piece for the LLaMA-like tokenizer: a sentence end that is no period token)."""
    rng = random.Random(3)
    text = "".join(sentences(rng, 500) + "\n" for _ in range(4))
    return text.replace("e. ", "e . ").replace("s. ", "s (sic). ")


@pytest.fixture(scope="session", params=["byte-level-bpe", "llama-like-sentencepiece"])
def any_tokenizer(
    request: pytest.FixtureRequest,
    tokenizer: Any,
    prose: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    if request.param == "byte-level-bpe":
        return tokenizer
    lines = [prose[i : i + 1000] for i in range(0, len(prose), 1000)]
    return llama_like_tokenizer(tmp_path_factory.mktemp("sp"), lines)


def write_haystack(folder: Path, files: int = 3, words: int = 400, seed: int = 0) -> Path:
    """`files` .txt files of prose-like sentences (none of the needle's words but stop words)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(files):
        (folder / f"essay-{i:02d}.txt").write_text(sentences(rng, words) + "\n")
    return folder


@pytest.fixture
def haystack_dir(tmp_path: Path) -> Path:
    return write_haystack(tmp_path / "haystack")


def job_config(model_uri: str, haystack_uri: str, output_uri: str, **spec: Any) -> Any:
    """A NeedleJobConfig as the operator would write it, with a small grid by default."""
    from longreach.contract.needleeval import NeedleJobConfig

    body = {
        "model": {"uri": model_uri},
        "haystack": {"uri": haystack_uri},
        "lengths": {"values": [300, 600, 900]},
        "depths": {"count": 3},
        "maxNewTokens": 8,
        "batchSize": 3,
        "output": {"uri": output_uri},
        **spec,
    }
    return NeedleJobConfig.model_validate(
        {"name": "tiny-niah", "modelUri": model_uri, "trainingLength": 600, "spec": body}
    )
