"""Bad input is caught before DeepSpeed or any GPU is touched, with the field named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from longreach.contract import storage
from longreach.contract.contextextension import TrainJobConfig
from longreach.contract.errors import InputError as ConfigError
from longreach.jobs.train.prepare import prepare

from .helpers import SEQ, make_setup, progress, run

pytestmark = pytest.mark.integration


def config_of(setup) -> TrainJobConfig:  # type: ignore[no-untyped-def]
    return TrainJobConfig.model_validate_json(setup.config.read_text())


def test_model_folder_without_config_json(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").unlink()
    setup = make_setup(str(tmp_path / "store"), tmp_path, broken, vocab_size)
    with pytest.raises(ConfigError, match=r"model.uri: .* has no config.json"):
        prepare(config_of(setup))


def test_data_token_ids_beyond_the_vocabulary(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(str(tmp_path / "store"), tmp_path, tiny_model, vocab_size * 4)
    with pytest.raises(
        ConfigError,
        match=rf"model: the tokenizer/embedding has {vocab_size} ids but .*part-\d+\.parquet holds token id",
    ):
        prepare(config_of(setup))


def test_batch_smaller_than_one_sequence(tmp_path: Path, tiny_model: Path, vocab_size: int) -> None:
    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size, training={"batchTokens": SEQ - 1}
    )
    with pytest.raises(
        ConfigError, match=r"training.batchTokens: 255 tokens is smaller than one sequence"
    ):
        prepare(config_of(setup))


def test_mixture_shorter_than_one_step(tmp_path: Path, tiny_model: Path, vocab_size: int) -> None:
    setup = make_setup(str(tmp_path / "store"), tmp_path, tiny_model, vocab_size, train_rows=3)
    with pytest.raises(
        ConfigError, match=r"data: the mixture .* holds 3 training sequences .* fewer than one step"
    ):
        prepare(config_of(setup))


def test_heads_not_divisible_by_sequence_parallel(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size,
        deepspeed={"sequenceParallel": 8}, resources={"nodes": 8, "gpusPerNode": 0},
        training={"batchTokens": SEQ * 8},
    )  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"deepspeed.sequenceParallel: 8 must divide the model's 4 attention heads",
    ):
        prepare(config_of(setup))


def test_sequence_length_not_divisible_by_sequence_parallel(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(str(tmp_path / "store"), tmp_path, tiny_model, vocab_size)
    job = json.loads(setup.config.read_text())
    job["spec"].update(
        sequenceLength=250,
        deepspeed={"sequenceParallel": 4},
        resources={"nodes": 4, "gpusPerNode": 0},
    )
    setup.config.write_text(json.dumps(job))
    proc = run(setup, timeout=120)
    assert proc.returncode == 2
    assert "sequenceLength must be divisible by deepspeed.sequenceParallel" in proc.stderr


def test_the_job_reports_bad_input_and_exits_2(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(str(tmp_path / "store"), tmp_path, tiny_model, vocab_size, train_rows=3)
    proc = run(setup, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "fewer than one step" in proc.stderr.strip().splitlines()[-1]
    p = progress(setup)
    assert p.state == "failed" and p.error.startswith("data: the mixture")
    assert not storage.exists(storage.join(setup.output, "checkpoints"))
    assert "DeepSpeed config" not in proc.stdout  # failed before DeepSpeed started


def test_a_cuda_attention_kernel_without_a_gpu(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size,
        training={"attention": "sdpa-cudnn"},
    )  # fmt: skip
    proc = run(setup, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "training.attention: sdpa-cudnn is a CUDA kernel" in proc.stderr.strip().splitlines()[-1]
    assert "DeepSpeed config" not in proc.stdout  # failed before DeepSpeed started
