"""The recipe end to end on this machine: `longreach demo` (corpus, tokenizer, tiny model,
per-source mixture, context extension, needle grid), then Ctrl-C and resume semantics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def longreach(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "longreach.operator.cli", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )  # type: ignore[call-overload]


@pytest.mark.timeout(1800)  # two demo runs; slower on a loaded machine
def test_demo_runs_the_recipe_and_resumes_after_ctrl_c(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    demo = artifacts / "demo"

    # First run: interrupt as soon as training has started (the mixture is committed by then).
    first = longreach("demo", "--artifacts", str(artifacts), start_new_session=True)
    deadline = time.monotonic() + 600
    while not (demo / "extension" / "progress.json").exists():
        assert first.poll() is None, (
            f"demo ended early:\n{first.stdout.read() if first.stdout else ''}"
        )
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGINT)
    out1, _ = first.communicate(timeout=120)
    assert first.returncode != 0 and "run the same command again to continue" in out1, out1
    assert (demo / "mixture" / "manifest.json").exists()

    # Second run: the mixture is skipped, training resumes, the needle grid finishes.
    second = longreach("demo", "--artifacts", str(artifacts))
    try:
        out2, _ = second.communicate(timeout=1200)
    finally:
        second.kill()  # on a timeout: its jobs follow it (parent-death signal)
    assert second.returncode == 0, out2
    assert "DataMixture/demo-mixture: already done" in out2
    manifest = json.loads((demo / "mixture" / "manifest.json").read_text())
    assert manifest["sequenceLength"] == 1024
    assert (demo / "mixture" / "domains.png").exists() and (
        demo / "mixture" / "lengths.png"
    ).exists()
    final = demo / "extension" / "final"
    config = json.loads((final / "config.json").read_text())
    assert (
        config["rope_parameters"]["rope_theta"] == 200000
        and config["max_position_embeddings"] >= 1024
    )
    results = json.loads((demo / "needle" / "results.json").read_text())
    assert len(results["cells"]) == 12
    assert (demo / "needle" / "heatmap.png").stat().st_size > 10_000
    assert "needle score" in out2 and "heatmap" in out2 and "long-document tokens" in out2
