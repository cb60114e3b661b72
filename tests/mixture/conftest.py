"""Fixtures of the mixture tests: one local Ray for the session, generated corpora."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tiny corpora: lengths are RECIPE.md's medians / 64, so the 4K threshold becomes 64 tokens.
SCALE = 1 / 64
SHORT = 64


@pytest.fixture(scope="session")
def ray_local(s3_endpoint: str) -> Iterator[str]:
    """One local Ray instance (2 CPUs) for every job run of the session; its GCS address.
    Started after the S3 server so that its workers inherit the AWS_* variables."""
    import ray

    from longreach.jobs.mixture.raymap import RunOptions, connect_ray

    os.environ["PYTHONSAFEPATH"] = "1"
    connect_ray(RunOptions(num_cpus=2))
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SlimPajama-layout corpus of 80K documents in 8 files (~1.3M estimated tokens)."""
    from longreach.jobs.mixture.corpus import write_slimpajama_corpus

    root = tmp_path_factory.mktemp("slimpajama")
    write_slimpajama_corpus(
        str(root), documents=80_000, chunks=4, files_per_chunk=2, seed=0, scale=SCALE
    )
    return root


def mixture_config(source: str, tokenizer: str, output: str, **spec: Any) -> Any:
    """A MixtureJobConfig for the tiny corpora; keyword arguments override spec fields."""
    from longreach.contract.datamixture import MixtureJobConfig

    strategy = {
        "shortDocumentTokens": SHORT,
        "shortDocumentKeepProbability": 0.25,
        **spec.pop("strategy", {}),
    }
    base = {
        "sources": [{"uri": source}],
        "tokenizer": {"uri": tokenizer},
        "strategy": strategy,
        "totalTokens": "250K",
        "sequenceLength": 512,
        "validationFraction": 0.01,
        "output": {"uri": output},
    }
    return MixtureJobConfig.model_validate({"name": "test", "spec": {**base, **spec}})
