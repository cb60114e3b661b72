"""Helpers for the training job's tests: a learnable mixture, a config, and a runner that starts
the job exactly as local mode does (a subprocess; torchrun for several ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.contextextension import TrainReport
from longreach.contract.report import read_report

SEQ = 256


@dataclass
class Setup:
    root: str
    config: Path
    output: str
    store: StorageSpec | None
    env: dict[str, str]


def base_spec(model_uri: str, data_uri: str, output: str, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": model_uri},
        "data": {"uri": data_uri},
        "sequenceLength": SEQ,
        "rope": {"theta": 40000},
        "training": {
            "tokens": SEQ * 4 * 8,
            "batchTokens": SEQ * 4,
            "learningRate": 3e-3,
            "validationSequences": 4,
        },
        "deepspeed": {"zeroStage": 2, "offloadOptimizer": False, "activationCheckpointing": True},
        "resources": {"nodes": 1, "gpusPerNode": 0},
        "checkpoint": {"everySteps": 3, "keep": 2},
        "output": {"uri": output},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def make_setup(
    root: str,
    tmp: Path,
    model_dir: Path,
    vocab: int,
    store: StorageSpec | None = None,
    *,
    name: str = "t",
    train_rows: int = 64,
    extra: dict[str, Any] | None = None,
    **spec_over: Any,
) -> Setup:
    """Write a mixture under `root`, upload the model there when `root` is S3, write a config."""
    from longreach.jobs.train.testdata import write_mixture

    data = storage.join(root, "mix")
    write_mixture(
        data,
        sequence_length=SEQ,
        vocab_size=vocab,
        train_rows=train_rows,
        validation_rows=4,
        store=store,
    )
    model_uri = str(model_dir)
    if root.startswith("s3://"):
        model_uri = storage.join(root, "model")
        for f in sorted(model_dir.iterdir()):
            storage.write_bytes(storage.join(model_uri, f.name), f.read_bytes(), store)
    output = storage.join(root, "out")
    spec = base_spec(model_uri, data, output, **spec_over)
    if store is not None:
        spec["storage"] = {"endpoint": store.endpoint}
    config = tmp / f"config-{name}.json"
    # A unique name per setup keeps node-local staging folders of concurrent tests apart.
    job = {"name": f"{name}-{tmp.name}", "spec": spec, "dataUri": data, **(extra or {})}
    config.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": "1"}
    return Setup(root, config, output, store, env)


def command(setup: Setup, nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-P", "-m", "longreach.jobs.train", "--config", str(setup.config)]
    from longreach.contract.contextextension import TrainJobConfig
    from longreach.operator.contextextension.builders import local_command

    spec = TrainJobConfig.model_validate_json(setup.config.read_text()).spec
    assert spec.world_size() == nproc
    return local_command(str(setup.config), spec)


def run(setup: Setup, nproc: int = 1, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(setup, nproc),
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


def metrics(setup: Setup) -> list[dict[str, Any]]:
    fs, path = storage.filesystem(storage.join(setup.output, "metrics.jsonl"), setup.store)
    with fs.open(path, "r") as f:
        return [json.loads(line) for line in f if line.strip()]


def progress(setup: Setup) -> TrainReport:
    """The job's progress.json, read through the kind's model as the operator reads it."""
    report = read_report(setup.output, TrainReport, setup.store)
    assert report is not None, "no progress.json"
    return report


def tail(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout[-3000:] + "\n---\n" + proc.stderr[-4000:]
