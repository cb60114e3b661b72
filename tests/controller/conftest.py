"""The operator running as a real process (`longreach operator`) against the test API server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from controlplane.cluster import OperatorProcess as Operator


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


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 30.0, op: Operator | None = None
) -> Any:
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
