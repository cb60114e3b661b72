"""Small real artifacts built on the spot, for tests and `longreach demo`: no downloads.

A byte-level BPE tokenizer trained in a second with `tokenizers`, and a tiny Llama model
from a transformers config. Real formats, real libraries; only the sizes are small.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"

SYLLABLES = (  # noqa: SIM905 - a word list reads better as one string
    "ka lo mi ra te su no ve da pi an el or is us en at ly ing er tion pre con de com "
    "pro sta tri gra ble ment ness ous ful ive ward"
).split()


def words(rng: random.Random, n: int) -> list[str]:
    """English-like words, Zipf-distributed so a small BPE compresses them as it would prose."""
    vocab = _vocabulary()
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    return rng.choices(vocab, weights=weights, k=n)


def sentences(rng: random.Random, n_words: int) -> str:
    """About `n_words` words of prose-shaped text: sentences of 8-24 words ending in periods."""
    out: list[str] = []
    left = n_words
    while left > 0:
        k = min(left, rng.randint(8, 24))
        ws = words(rng, k)
        out.append(" ".join(ws).capitalize() + ".")
        left -= k
    return " ".join(out)


_VOCAB: list[str] = []


def _vocabulary() -> list[str]:
    if not _VOCAB:
        rng = random.Random(0)
        common = [
            "the",
            "of",
            "and",
            "to",
            "a",
            "in",
            "is",
            "that",
            "it",
            "was",
            "for",
            "on",
            "are",
            "as",
            "with",
            "his",
            "they",
            "at",
            "be",
            "this",
            "from",
        ]
        made = {"".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(3000)}
        _VOCAB.extend(common + sorted(made - set(common)))
    return _VOCAB


def build_tokenizer(
    out_dir: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 512
) -> Path:
    """Train a byte-level BPE with BOS/EOS/PAD/UNK and save it as a Hugging Face tokenizer folder
    (tokenizer.json plus tokenizer_config.json), loadable by `tokenizers` and `transformers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if texts is None:
        rng = random.Random(1)
        texts = [sentences(rng, 200) for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    fast.save_pretrained(str(out))
    return out


def tiny_llama_config(
    tokenizer: Any,
    *,
    hidden_size: int,
    layers: int,
    heads: int,
    kv_heads: int,
    max_position_embeddings: int,
    rope_theta: float = 10000.0,
) -> Any:
    """A small LlamaConfig for `tokenizer` (its vocabulary and special tokens); MLP 4x hidden."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_llama(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_position_embeddings: int = 512,
    rope_theta: float = 10000.0,
    seed: int = 0,
) -> Path:
    """A randomly initialised Llama from a config, saved with its tokenizer as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = tiny_llama_config(
        tokenizer,
        hidden_size=hidden_size,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
