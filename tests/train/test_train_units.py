"""Pure pieces of the training job: batch arithmetic, the DeepSpeed config per combination, the
learning-rate schedule, data order and sharding, RoPE settings, position buckets, launching."""

from __future__ import annotations

from typing import Any

import pytest

from longreach.contract.contextextension import ContextExtensionSpec, RopeSpec
from longreach.contract.errors import InputError
from longreach.jobs.train import data, derive, evaluate

pytestmark = pytest.mark.unit


def spec(**over: Any) -> ContextExtensionSpec:
    base: dict[str, Any] = {
        "model": {"uri": "s3://m"},
        "data": {"uri": "s3://d"},
        "sequenceLength": 8192,
        "rope": {"theta": 2e6},
        "training": {"tokens": "100M", "batchTokens": "4M"},
        "output": {"uri": "s3://o"},
        "resources": {"nodes": 1, "gpusPerNode": 8},
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return ContextExtensionSpec.model_validate(base)


def test_batch_arithmetic_rounds_down_to_whole_sequences() -> None:
    b = derive.derive_batch(spec())
    # 4M / 8192 = 488 sequences; 488 // 8 ranks = 61 accumulation steps.
    assert (b.dataParallel, b.microBatch, b.accumulation) == (8, 1, 61)
    assert b.sequencesPerStep == 488 and b.tokensPerStep == 488 * 8192
    assert b.totalSteps == 100_000_000 // b.tokensPerStep


def test_batch_with_sequence_parallel() -> None:
    b = derive.derive_batch(
        spec(deepspeed={"sequenceParallel": 4}, training={"batchTokens": 8192 * 8})
    )
    assert (b.dataParallel, b.accumulation, b.localSequenceLength) == (2, 4, 2048)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"training": {"batchTokens": 4096}}, "training.batchTokens"),  # smaller than a sequence
        ({"training": {"batchTokens": 8192 * 4}}, "training.batchTokens"),  # fewer than 8 ranks
        ({"training": {"tokens": 8192 * 8 - 1, "batchTokens": 8192 * 8}}, "training.tokens"),
    ],
)
def test_batch_errors_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match=field):
        derive.derive_batch(spec(**over))


def test_sequence_length_not_divisible_by_sp_is_rejected_by_the_spec() -> None:
    with pytest.raises(ValueError, match="sequenceLength"):
        spec(sequenceLength=8190, deepspeed={"sequenceParallel": 4})


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("gpu", [True, False])
@pytest.mark.parametrize("offload", [True, False])
def test_deepspeed_config_per_combination(stage: int, gpu: bool, offload: bool) -> None:
    s = spec(deepspeed={"zeroStage": stage, "offloadOptimizer": offload, "sequenceParallel": 2})
    b = derive.derive_batch(s)
    cfg = derive.deepspeed_config(s, b, gpu=gpu)
    zero = cfg["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == (offload and gpu and stage >= 1)
    assert cfg["bf16"]["enabled"] is gpu
    assert cfg["optimizer"]["params"]["torch_adam"] is (not gpu)
    assert (
        cfg["train_batch_size"]
        == cfg["train_micro_batch_size_per_gpu"] * cfg["gradient_accumulation_steps"] * 4
    )
    assert cfg["sequence_parallel_size"] == 2
    assert zero.get("stage3_gather_16bit_weights_on_model_save", False) is (stage == 3)


def test_sequence_parallel_grad_scale() -> None:
    assert derive.sequence_parallel_grad_scale(3, 4) == 4
    assert derive.sequence_parallel_grad_scale(2, 4) == 1
    assert derive.sequence_parallel_grad_scale(3, 1) == 1


def test_learning_rate_schedules() -> None:
    const = spec(training={"learningRate": 1e-3, "warmupSteps": 0})
    assert [derive.lr_at(const, 10, s) for s in (0, 5, 9)] == [1e-3] * 3
    warm = spec(training={"learningRate": 1e-3, "warmupSteps": 3})
    assert derive.lr_at(warm, 10, 0) == pytest.approx(0.25e-3)
    assert derive.lr_at(warm, 10, 3) == 1e-3
    cos = spec(training={"learningRate": 1e-3, "schedule": "cosine", "minLearningRate": 1e-4})
    assert derive.lr_at(cos, 11, 0) == pytest.approx(1e-3)
    assert derive.lr_at(cos, 11, 11) == pytest.approx(1e-4)
    assert 1e-4 < derive.lr_at(cos, 11, 5) < 1e-3


def shards(*rows: int) -> tuple[data.Shard, ...]:
    return tuple(data.Shard(f"s3://b/part-{i}.parquet", r) for i, r in enumerate(rows))


def test_every_sample_once_per_epoch_in_a_seeded_order() -> None:
    index = data.SampleIndex(shards(5, 3, 4), 100, 100, seed=7)
    seen = [index.locate(p) for p in range(index.total)]
    assert len(set(seen)) == index.total == 12
    assert seen == [
        data.SampleIndex(shards(5, 3, 4), 100, 100, seed=7).locate(p) for p in range(12)
    ]
    assert seen != [
        data.SampleIndex(shards(5, 3, 4), 100, 100, seed=8).locate(p) for p in range(12)
    ]
    second = [index.locate(p) for p in range(12, 24)]
    assert sorted(second) == sorted(seen) and second != seen  # the next epoch reshuffles


def test_rechunking_counts_whole_samples_per_shard() -> None:
    index = data.SampleIndex(shards(5, 3), 100, 64, seed=None)
    assert index.per_shard == [500 // 64, 300 // 64]
    assert [index.locate(p) for p in range(3)] == [(0, 0), (0, 1), (0, 2)]


def test_micro_batches_partition_a_step() -> None:
    b = derive.derive_batch(
        spec(training={"batchTokens": 8192 * 16}, deepspeed={"sequenceParallel": 2})
    )
    taken = [
        p for rank in range(b.dataParallel) for mb in data.micro_batches(32, b, rank) for p in mb
    ]
    assert sorted(taken) == list(range(32, 32 + b.sequencesPerStep))


def test_vocabulary_check_names_the_file() -> None:
    import numpy as np

    with pytest.raises(InputError, match=r"part-3.parquet holds token id 600"):
        data.check_vocabulary(np.array([1, 600]), 512, "s3://b/part-3.parquet")


@pytest.mark.parametrize(
    ("rope", "expected"),
    [
        ({"theta": 2e6}, {"rope_type": "default", "rope_theta": 2e6}),
        ({"type": "linear", "factor": 4}, {"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0}),
        (
            {"type": "yarn", "factor": 8, "theta": 5e5},
            {"rope_type": "yarn", "rope_theta": 5e5, "factor": 8.0, "original_max_position_embeddings": 4096},
        ),
        (
            {"type": "llama3", "factor": 8, "parameters": {"high_freq_factor": 2}},
            {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0, "original_max_position_embeddings": 4096,
             "low_freq_factor": 1.0, "high_freq_factor": 2},
        ),
    ],
)  # fmt: skip
def test_rope_parameters(rope: dict[str, Any], expected: dict[str, Any]) -> None:
    from longreach.jobs.train.model import rope_parameters

    got = rope_parameters(
        RopeSpec.model_validate(rope), {"rope_theta": 1e4, "rope_type": "default"}, 4096
    )
    assert got == expected


def test_apply_rope_sets_config_for_transformers() -> None:
    from transformers import LlamaConfig

    from longreach.jobs.train.model import apply_rope

    config = LlamaConfig(
        hidden_size=64, num_attention_heads=4, num_hidden_layers=1, max_position_embeddings=128
    )
    settings_out = apply_rope(
        config, spec(rope={"type": "yarn", "factor": 4.0}, sequenceLength=512)
    )
    assert config.rope_parameters["rope_type"] == "yarn"
    assert config.rope_parameters["original_max_position_embeddings"] == 128
    assert config.max_position_embeddings == 512 == settings_out["maxPositionEmbeddings"]


def test_position_buckets_scale_the_papers() -> None:
    assert evaluate.boundaries(131072) == [1024, 16384, 32768, 65536, 131072]
    assert [evaluate.label(b) for b in evaluate.boundaries(131072)] == [
        "1K",
        "16K",
        "32K",
        "64K",
        "128K",
    ]
    assert evaluate.boundaries(81920) == [640, 10240, 20480, 40960, 81920]
    assert evaluate.boundaries(64) == [1, 8, 16, 32, 64]


def test_bucket_sums_count_each_labelled_token_once() -> None:
    import torch

    losses = torch.arange(8, dtype=torch.float32).view(1, 8)
    positions = torch.arange(8).view(1, 8)
    labels = torch.tensor([[1, 1, 1, 1, 1, 1, 1, -100]])
    assert evaluate.bucket_sums(losses, positions, labels, [2, 8]) == [
        1.0,
        2.0,
        2 + 3 + 4 + 5 + 6,
        5.0,
    ]


def test_domain_sums_count_each_predicted_token_under_its_domain() -> None:
    import numpy as np
    import torch

    domains = np.array([0, 0, 1, 1, -1, 1], dtype=np.int16)
    # Position t predicts token t + 1: its domain is that token's.
    whole = evaluate.target_domains(domains, 1, 0, "cpu")
    assert whole.tolist() == [[0, 1, 1, -1, 1, -1]]
    halves = [evaluate.target_domains(domains, 2, r, "cpu").tolist() for r in (0, 1)]
    assert halves == [[[0, 1, 1]], [[-1, 1, -1]]]
    losses = torch.arange(6, dtype=torch.float32).view(1, 6)
    labels = torch.tensor([[1, 1, 1, 1, 1, -100]])
    assert evaluate.domain_sums(losses, whole, labels, 2) == [0.0, 1.0, 1 + 2 + 4, 3.0]


def test_reader_domains_follow_the_spans_through_rechunking(tmp_path: Any) -> None:
    from longreach.jobs.train.testdata import write_mixture

    write_mixture(str(tmp_path), sequence_length=64, vocab_size=300, train_rows=6, rows_per_shard=3)
    mixture = data.open_mixture(str(tmp_path), None)
    names = tuple(sorted(mixture.manifest["domains"]))
    assert names == ("RedPajamaArXiv", "RedPajamaBook")
    index = data.SampleIndex(mixture.train, 64, 48, seed=None)
    reader = data.Reader(index, 64, 300, None)
    # Rows alternate Book, ArXiv, Book, ...; sample 1 of shard 0 is tokens 48-95: row 0's last
    # 16 (Book) and row 1's first 32 (ArXiv).
    assert reader.domains(1, names).tolist() == [1] * 16 + [0] * 32
    assert reader.domains(4, names).tolist() == [0] * 48  # shard 1 starts with row 3 (ArXiv)


def test_flops_per_token_has_the_causal_attention_term() -> None:
    from transformers import LlamaConfig

    from longreach.jobs.train.compute import flops_per_token

    c = LlamaConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    assert flops_per_token(c, 10_000, 1024) - flops_per_token(c, 10_000, 0) == 6 * 2 * 64 * 1024
    assert flops_per_token(c, 10_000, 0) == 6 * (10_000 - 100 * 64)


def test_reader_rechunks_rows_laid_end_to_end(tmp_path: Any) -> None:
    import numpy as np

    from longreach.jobs.train.testdata import pattern_rows, write_mixture

    write_mixture(str(tmp_path), sequence_length=64, vocab_size=300, train_rows=6, rows_per_shard=3)
    mixture = data.open_mixture(str(tmp_path), None)
    assert mixture.sequenceLength == 64 and [s.rows for s in mixture.train] == [3, 3]
    index = data.SampleIndex(mixture.train, 64, 48, seed=None)  # 3 × 64 = 192 tokens = 4 samples
    reader = data.Reader(index, 64, 300, None)
    stream = pattern_rows(6, 64, 300, 0).reshape(-1)
    assert index.total == 8
    for position in range(8):
        shard, local = index.locate(position)
        start = shard * 192 + local * 48
        assert np.array_equal(reader.sample(position), stream[start : start + 48])


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path: Any) -> None:
    from longreach.jobs.train import checkpoint

    out = str(tmp_path)
    for step in (1, 2, 3, 4, 5):
        folder = tmp_path / "checkpoints" / checkpoint.name(step)
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"x")
        if step != 3 and step != 5:  # 3: a crashed upload; 5: one being uploaded now
            checkpoint.commit(out, step, {"tokensSeen": step}, None)
    assert checkpoint.complete_steps(out, None) == [1, 2, 4]
    checkpoint.prune(out, 2, None)
    assert checkpoint.complete_steps(out, None) == [2, 4]
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step-000002", "step-000004", "step-000005"]


def test_chunked_loss_equals_the_whole_sequence_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from longreach.jobs.train import compute

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    model = LlamaForCausalLM(config)
    part = compute.make_slice([np.arange(40) % 50, (np.arange(40) * 3) % 50], 1, 0, "cpu")

    monkeypatch.setattr(compute, "LOSS_CHUNK", 7)
    chunked = compute.token_losses(model, part)
    chunked.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    logits = model(input_ids=part.ids, position_ids=part.positions).logits
    whole = F.cross_entropy(logits.reshape(-1, 50), part.labels.reshape(-1), reduction="none").view(
        2, 40
    )
    whole.sum().backward()
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert all(
        torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(grads, model.parameters(), strict=True)
    )
    assert (chunked[:, -1] == 0).all()  # the last position has no next token


def test_shards_come_from_the_manifest_else_from_the_folder(tmp_path: Any) -> None:
    import json

    from longreach.jobs.train.testdata import write_mixture

    write_mixture(str(tmp_path), sequence_length=32, vocab_size=300, train_rows=5, rows_per_shard=2)
    listed = data.open_mixture(str(tmp_path), None)
    assert [s.rows for s in listed.train] == [2, 2, 1] and [s.rows for s in listed.validation] == [
        2,
        2,
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["shards"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert data.open_mixture(str(tmp_path), None) == data.Mixture(
        str(tmp_path), 32, listed.train, listed.validation, manifest
    )
