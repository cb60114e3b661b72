"""The training job end to end on one process through the S3 server: the loss falls, progress
and metrics have the operator's fields, final/ loads with transformers and carries the new RoPE,
and a run killed with SIGKILL after a checkpoint resumes there and ends where an uninterrupted
run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from longreach.contract import storage
from longreach.contract.contextextension import CheckpointRef

from .helpers import Setup, command, make_setup, metrics, progress, run, tail

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_loss_falls_and_reports(reference: Setup) -> None:
    lines = metrics(reference)
    assert [m["step"] for m in lines] == list(range(1, 9))
    assert lines[-1]["loss"] < lines[0]["loss"] - 1.0, [m["loss"] for m in lines]
    for m in lines:
        assert {"step", "tokens", "loss", "lr", "tokensPerSecond"} <= m.keys()
        assert m["tokens"] == m["step"] * 4 * 256
    report = progress(reference)
    p, result = report.progress, report.result
    assert report.state == "succeeded" and result is not None
    assert p.step == p.totalSteps == 8 and p.percent == 100
    assert p.tokensSeen == 8 * 1024 and p.tokensPerSecond > 0
    assert result.uri == f"{reference.output}/final"
    assert result.loss == pytest.approx(lines[-1]["loss"], abs=1e-3)  # the status rounds
    # The paper's five position buckets, scaled to 256 tokens: 1/128 ... 128/128 of the length.
    assert sorted(result.validationLoss, key=int) == ["2", "32", "64", "128", "256"]
    assert all(0 < v < lines[0]["loss"] for v in result.validationLoss.values())
    # By the domain of each predicted token: the mixture's two domains, from its spans.
    assert sorted(result.validationLossByDomain) == ["RedPajamaArXiv", "RedPajamaBook"]
    assert all(0 < v < lines[0]["loss"] for v in result.validationLossByDomain.values())
    assert report.lastCheckpoint == CheckpointRef(
        step=6, uri=storage.join(reference.output, "checkpoints/step-000006")
    )


def test_checkpoints_kept_and_marked(reference: Setup) -> None:
    from longreach.jobs.train import checkpoint

    assert checkpoint.complete_steps(reference.output, reference.store) == [3, 6]


def test_final_loads_with_new_rope(reference: Setup, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = storage.join(reference.output, "final")
    summary = storage.read_json(storage.join(final, "longreach.json"), reference.store)
    assert summary["step"] == 8 and summary["ropeParameters"]["rope_theta"] == 40000
    fs, path = storage.filesystem(final, reference.store)
    fs.get(path + "/", str(tmp_path) + "/", recursive=True)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert model.config.rope_parameters["rope_theta"] == 40000
    assert model.config.rope_parameters["rope_type"] == "default"
    assert model.config.max_position_embeddings == 256
    assert len(AutoTokenizer.from_pretrained(str(tmp_path))) == model.config.vocab_size


def test_sigkill_after_checkpoint_resumes(
    reference: Setup, tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    import boto3

    endpoint = reference.store.endpoint  # type: ignore[union-attr]
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="train-kill"
    )
    # Sleep after each checkpoint so the kill lands right after step 3's checkpoint.
    setup = make_setup(
        "s3://train-kill/run", tmp_path, tiny_model, vocab_size, reference.store,
        extra={"pauseAfterCheckpointSeconds": 60},
    )  # fmt: skip
    proc = subprocess.Popen(command(setup, 1), env=setup.env, cwd="/", start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    marker = storage.join(setup.output, "checkpoints/step-000003/complete.json")
    deadline = time.time() + 240
    while not storage.exists(marker, setup.store):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint at step 3"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert progress(setup).state == "running"
    assert not storage.exists(storage.join(setup.output, "final/longreach.json"), setup.store)

    job = json.loads(setup.config.read_text())
    job["pauseAfterCheckpointSeconds"] = 0
    setup.config.write_text(json.dumps(job))
    resumed = run(setup)
    assert resumed.returncode == 0, tail(resumed)
    assert "resumed from step 3" in resumed.stdout
    lines, ref = metrics(setup), metrics(reference)
    assert [m["step"] for m in lines] == list(range(1, 9))  # no step lost, none twice
    assert [m["loss"] for m in lines] == pytest.approx([m["loss"] for m in ref], rel=1e-5)
    assert progress(setup).result.loss == pytest.approx(  # type: ignore[union-attr]
        progress(reference).result.loss,  # type: ignore[union-attr]
        rel=1e-5,
    )


def test_a_restart_after_success_changes_nothing(reference: Setup) -> None:
    before = metrics(reference)
    proc = run(reference, timeout=120)
    assert proc.returncode == 0, tail(proc)
    assert "DeepSpeed config" not in proc.stdout  # nothing retrained
    assert metrics(reference) == before
    p = progress(reference)
    assert p.state == "succeeded" and p.progress.step == 8 and p.lastCheckpoint.step == 6


def test_a_finished_output_of_another_config_is_refused(reference: Setup, tmp_path: Path) -> None:
    job = json.loads(reference.config.read_text())
    job["spec"]["rope"]["theta"] = 999999
    (tmp_path / "other.json").write_text(json.dumps(job))
    other = Setup(reference.root, tmp_path / "other.json", reference.output, reference.store,
                  reference.env)  # fmt: skip
    proc = run(other, timeout=120)
    assert proc.returncode == 2, tail(proc)  # bad input: never retried
    last = proc.stderr.strip().splitlines()[-1]
    assert "holds a finished output of another config" in last
    assert "spec.rope.theta: 40000.0 -> 999999.0" in last
    final = storage.read_json(storage.join(reference.output, "final/config.json"), reference.store)
    assert final["rope_parameters"]["rope_theta"] == 40000  # the old model is untouched
    assert progress(reference).state == "succeeded"  # and so is its progress
