"""The operator running as a real process (`longreach operator`) against the test API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane.cluster import free_port


class Operator:
    """`longreach operator` as a subprocess; restartable, like a pod."""

    def __init__(self, kubeconfig: Path, workdir: Path, executor: str = "kubernetes") -> None:
        self.kubeconfig, self.workdir, self.executor = kubeconfig, workdir, executor
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()

    def start(self) -> Operator:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONSAFEPATH": "1",
            "LONGREACH_EXECUTOR": self.executor,
            "LONGREACH_RESYNC_SECONDS": "1",
            "LONGREACH_METRICS_PORT": str(self.metrics_port),
            "LONGREACH_HEALTH_PORT": str(free_port()),
            "LONGREACH_LOCAL_WORKDIR": str(self.workdir / "runs"),
        }
        log = open(self.workdir / "operator.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "longreach.operator.cli", "operator"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def stop(self, crash: bool = False) -> None:
        """Stop like a pod would: SIGTERM with a grace period, or a crash (SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if crash else self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.workdir / "operator.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def operator(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(control_plane.kubeconfig, tmp_path_factory.mktemp("operator")).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(control_plane: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, op: Operator | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail with what was awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # the object may not exist yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.3)
    tail = op.log()[-3000:] if op else ""
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}\n{tail}")


def get(cp: Any, kind: str, name: str, ns: str) -> dict[str, Any]:
    return json.loads(cp.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout)
