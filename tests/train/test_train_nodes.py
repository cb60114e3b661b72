"""Two "nodes" launched as the JobSet launches them (torchrun --nnodes=2 --node-rank=i with a
static master address), each with its own node-local scratch folder: each node uploads its own
ZeRO partitions, and after both are killed with SIGKILL past a checkpoint, a fresh start of both
downloads the checkpoint and ends with the one-process run's losses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longreach.contract import storage

from .helpers import Setup, make_setup, metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_nodes(setup: Setup, tmp: Path, port: int) -> list[subprocess.Popen[str]]:
    procs = []
    for node in (0, 1):
        scratch = tmp / f"node{node}"
        scratch.mkdir(exist_ok=True)
        cmd = [sys.executable, "-P", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}",
               "-m", "longreach.jobs.train", "--config", str(setup.config)]  # fmt: skip
        env = {**setup.env, "TMPDIR": str(scratch)}
        procs.append(subprocess.Popen(cmd, env=env, cwd="/", start_new_session=True, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    return procs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_resume_after_sigkill(
    reference: Setup, tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size, name="nodes",
        resources={"nodes": 2, "gpusPerNode": 0}, extra={"pauseAfterCheckpointSeconds": 60},
    )  # fmt: skip
    procs = start_nodes(setup, tmp_path, free_port())
    marker = storage.join(setup.output, "checkpoints/step-000003/complete.json")
    deadline = time.time() + 240
    while not storage.exists(marker):
        assert all(p.poll() is None for p in procs) and time.time() < deadline, [
            p.communicate()[1][-2000:] for p in procs
        ]
        time.sleep(0.5)
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    files = sorted(f.name for f in (tmp_path / "store/out/checkpoints/step-000003").iterdir())
    # Each node uploaded its own optimizer partition.
    assert {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    } <= set(files)

    job = json.loads(setup.config.read_text())
    job["pauseAfterCheckpointSeconds"] = 0
    setup.config.write_text(json.dumps(job))
    procs = start_nodes(setup, tmp_path, free_port())
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
    assert "resumed from step 3" in outs[0][0] and "resumed from step 3" in outs[1][0]
    lines = metrics(setup)
    assert [m["step"] for m in lines] == list(range(1, 9))
    assert [m["loss"] for m in lines] == pytest.approx(
        [m["loss"] for m in metrics(reference)], rel=1e-4
    )
