"""Everything a run needs that can be checked before any GPU is touched: batch arithmetic, the
mixture and its length, the model folder, the tokenizer against the data's token ids, the
RoPE change and the sequence-parallel layout. Bad input fails here with the field named."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longreach.contract.contextextension import TrainJobConfig
from longreach.contract.errors import InputError
from longreach.jobs.fetch import fetch_model
from longreach.jobs.train.data import Mixture, Reader, SampleIndex, open_mixture
from longreach.jobs.train.derive import Batch, derive_batch
from longreach.jobs.train.model import apply_rope, model_tokenizer, read_config


@dataclass
class Prepared:
    config: TrainJobConfig
    batch: Batch
    mixture: Mixture
    modelPath: str
    hfConfig: Any
    tokenizer: Any
    rope: dict[str, Any]
    train: Reader
    validation: Reader
    validationCount: int
    staging: Path


def staging_dir(config: TrainJobConfig) -> Path:
    """Node-local scratch shared by the ranks of a node: model cache and checkpoint staging."""
    return Path(tempfile.gettempdir()) / f"longreach-train-{config.namespace}-{config.name}"


def prepare(config: TrainJobConfig) -> Prepared:
    spec = config.spec
    batch = derive_batch(spec)
    mixture = open_mixture(config.dataUri, spec.storage)
    staging = staging_dir(config)
    model_path = spec.model.name or fetch_model(
        str(spec.model.uri), spec.storage, staging, field="model.uri"
    )
    hf_config = read_config(model_path)
    check_sequence_parallel(hf_config, batch.sequenceParallel)
    tokenizer = model_tokenizer(model_path, spec, mixture.manifest)
    vocab = min(len(tokenizer), int(hf_config.get_text_config().vocab_size))
    if not mixture.train:
        raise InputError(f"data: {config.dataUri} has no train/part-*.parquet shards")
    index = SampleIndex(
        mixture.train, mixture.sequenceLength, spec.sequenceLength, spec.training.seed
    )
    if index.total < batch.sequencesPerStep:
        raise InputError(
            f"data: the mixture at {config.dataUri} holds {index.total} training sequences of "
            f"{spec.sequenceLength} tokens, fewer than one step ({batch.sequencesPerStep} "
            "sequences); use a larger DataMixture or lower training.batchTokens"
        )
    train = Reader(index, mixture.sequenceLength, vocab, spec.storage)
    train.sample(0)  # loads the first shard: checks its lengths and token ids now, not at step 1
    val_index = SampleIndex(mixture.validation, mixture.sequenceLength, spec.sequenceLength, None)
    count = min(spec.training.validationSequences, val_index.total)
    count -= count % batch.dataParallel
    validation = Reader(val_index, mixture.sequenceLength, vocab, spec.storage)
    if count:
        validation.sample(0)
    rope = apply_rope(hf_config, spec)
    return Prepared(
        config,
        batch,
        mixture,
        model_path,
        hf_config,
        tokenizer,
        rope,
        train,
        validation,
        count,
        staging,
    )


def check_sequence_parallel(hf_config: Any, sp: int) -> None:
    """Ulysses splits attention heads across the sequence-parallel ranks."""
    if sp == 1:
        return
    text = hf_config.get_text_config()
    heads = int(text.num_attention_heads)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    if heads % sp or (kv % sp and sp % kv):
        raise InputError(
            f"deepspeed.sequenceParallel: {sp} must divide the model's {heads} attention heads, and "
            f"its {kv} key-value heads must divide or be divisible by it; pick a divisor of {heads}"
        )
