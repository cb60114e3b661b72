"""Fixtures for the training job's tests: a tiny Llama and its vocabulary size."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import Setup, make_setup, run, tail


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A 2-layer Llama (hidden 64, 4 heads, 2 KV heads) trained at 128 positions, with tokenizer."""
    from longreach.jobs.synthetic import build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("model"), tokenizer_dir, max_position_embeddings=128
    )


@pytest.fixture(scope="session")
def vocab_size(tokenizer_dir: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))


@pytest.fixture(scope="session")
def reference(
    s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, vocab_size: int
) -> Setup:
    """One uninterrupted single-process ZeRO-2 run on S3; other tests compare against it."""
    import boto3

    from longreach.contract.common import StorageSpec

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket="train-ref"
    )
    setup = make_setup(
        "s3://train-ref/run",
        tmp_path_factory.mktemp("ref"),
        tiny_model,
        vocab_size,
        StorageSpec(endpoint=s3_endpoint),
    )
    proc = run(setup)
    assert proc.returncode == 0, tail(proc)
    return setup
