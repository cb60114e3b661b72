"""The GPU benchmark scripts' code paths, run on CPU so that a lent GPU's short time is not
spent finding a Python error: the today-vs-best comparison (with the offload row) on the tiny
model, and the attention backend timing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 300) -> list[str]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_compare_table_runs_every_configuration() -> None:
    out = bench(
        "benchmarks/train_throughput.py", "--compare", "--cpu-tiny", "--lengths", "256",
        "--steps", "2", "--offload-length", "128", "--accumulation", "2",
    )  # fmt: skip
    rows = [
        line.split("|")[1:-1] for line in out if line.startswith("| 1") or line.startswith("| 2")
    ]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        ("256", "today"), ("256", "best"), ("128", "paper offload, 2 seq/step"),
    ]  # fmt: skip
    for r in rows:  # ran (tokens/s), and recorded what ran
        assert float(r[5].replace(",", "")) > 0 and r[2].strip() == "sdpa" and r[4].strip()


def test_attention_backends_table() -> None:
    out = bench("benchmarks/attention_backends.py", "--cpu", "--lengths", "64,128", "--reps", "1")
    assert any(line.startswith("| 128 | ") for line in out)
    assert out[-1].startswith("MEASURED entry: 'cpu': [(64, [")
