"""Nothing outlives its runner: `longreach run` killed by SIGKILL or stopped by SIGTERM during
training and during the needle grid leaves no process behind (torchrun, its worker, the eval
job), the job records that it stopped, and the next run continues where it stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    """A tiny Llama, a learnable mixture for it and a prose haystack."""
    import random

    from transformers import AutoTokenizer

    from longreach.jobs.synthetic import build_tiny_llama, sentences
    from longreach.jobs.train.testdata import write_mixture

    root = tmp_path_factory.mktemp("orphans")
    model = build_tiny_llama(root / "model", tokenizer_dir, max_position_embeddings=2048)
    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    write_mixture(str(root / "mix"), sequence_length=256, vocab_size=vocab, train_rows=512,
                  validation_rows=4)  # fmt: skip
    (root / "hay").mkdir()
    (root / "hay" / "a.txt").write_text(sentences(random.Random(3), 4000))
    return {"model": model, "mix": root / "mix", "hay": root / "hay"}


def recipe(kind: str, inputs: dict[str, Path]) -> str:
    if kind == "training":
        return f"""
apiVersion: longreach.io/v1alpha1
kind: ContextExtension
metadata: {{name: ext}}
spec:
  model: {{uri: {inputs["model"]}}}
  data: {{uri: {inputs["mix"]}}}
  sequenceLength: 256
  rope: {{theta: 40000}}
  training: {{tokens: 204800, batchTokens: 1024, learningRate: 0.003, validationSequences: 0}}
  deepspeed: {{zeroStage: 2, offloadOptimizer: false}}
  resources: {{nodes: 1, gpusPerNode: 0}}
  checkpoint: {{everySteps: 5, keep: 2}}
  output: {{uri: ext}}
"""
    return f"""
apiVersion: longreach.io/v1alpha1
kind: NeedleEval
metadata: {{name: niah}}
spec:
  model: {{uri: {inputs["model"]}}}
  haystack: {{uri: {inputs["hay"]}}}
  lengths: {{min: 400, max: 1800, count: 8}}
  depths: {{count: 6}}
  maxNewTokens: 12
  backend: transformers
  output: {{uri: niah}}
"""


def longreach_run(file: Path, artifacts: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "longreach.operator.cli", "run", str(file),
         "--artifacts", str(artifacts)],
        env={**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def running(p: psutil.Process) -> bool:
    """Alive and not a zombie (this machine's init reaps orphans late)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def started(kind: str, out: Path) -> Callable[[], bool]:
    """Work is under way: a checkpoint committed, or a first batch of cells scored."""
    if kind == "training":
        return lambda: any(out.glob("checkpoints/step-*/complete.json"))

    def cells() -> bool:
        progress = out / "progress.json"
        return progress.exists() and json.loads(progress.read_text())["progress"]["cellsDone"] > 0

    return cells


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("kind", ["training", "needle"])
def test_the_runner_takes_its_job_with_it_and_a_rerun_continues(
    kind: str, how: int, inputs: dict[str, Path], tmp_path: Path
) -> None:
    file, artifacts = tmp_path / "recipe.yaml", tmp_path / "art"
    file.write_text(recipe(kind, inputs))
    out = artifacts / ("ext" if kind == "training" else "niah")
    runner = longreach_run(file, artifacts)
    deadline = time.monotonic() + 300
    while not started(kind, out)():
        assert runner.poll() is None, runner.stdout.read() if runner.stdout else ""
        assert time.monotonic() < deadline, f"{kind} never got going"
        time.sleep(0.3)
    family = psutil.Process(runner.pid).children(recursive=True)
    assert family, "the runner has no job process"
    os.kill(runner.pid, how)
    runner.wait(timeout=60)
    deadline = time.monotonic() + 10
    while (alive := [p for p in family if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"still alive 10 s after the runner: {[p.cmdline()[:4] for p in alive]}"
    if how == signal.SIGTERM:
        assert runner.returncode == 128 + signal.SIGTERM
    report = json.loads((out / "progress.json").read_text())
    assert report["state"] == "stopped" and "SIGTERM" in report["message"], report
    assert json.loads((out / "owner.json").read_text())["state"] == "released"

    rerun = longreach_run(file, artifacts)
    output, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, output
    log = (artifacts / ".runs" / ("contextextension/ext" if kind == "training"
                                  else "needleeval/niah") / "job.log").read_text()  # fmt: skip
    if kind == "training":
        assert "resumed from step" in log
    else:
        runs = re.findall(r"needle: (\d+) cells, (\d+) already done", log)
        assert len(runs) == 2 and int(runs[-1][1]) > 0, log  # the second run skipped cells


def test_killing_torchrun_alone_takes_its_workers(inputs: dict[str, Path], tmp_path: Path) -> None:
    file, artifacts = tmp_path / "recipe.yaml", tmp_path / "art"
    two = recipe("training", inputs).replace("nodes: 1", "nodes: 2")  # two processes on CPU
    file.write_text(two)
    runner = longreach_run(file, artifacts)
    deadline = time.monotonic() + 300
    while not started("training", artifacts / "ext")():
        assert runner.poll() is None, runner.stdout.read() if runner.stdout else ""
        assert time.monotonic() < deadline, "training never got going"
        time.sleep(0.3)
    (torchrun,) = psutil.Process(runner.pid).children()
    workers = torchrun.children(recursive=True)
    assert len(workers) == 2, [w.cmdline() for w in workers]
    torchrun.kill()
    deadline = time.monotonic() + 10
    while (alive := [p for p in workers if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"workers alive 10 s after torchrun: {[p.pid for p in alive]}"
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 1 and "failed" in output
