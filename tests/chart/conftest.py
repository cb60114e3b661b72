"""Fixtures for the chart and kustomize tests: the helm binary and a renderer."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from chart.charttools import CHART, Render, helm_binary, run_helm


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the helm binary; the chart tests skip only when there is none."""
    binary = helm_binary()
    if binary is None:
        pytest.skip("helm is not installed (tests/controlplane/build.sh builds it)")
    return binary


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """render(release, namespace, *helm args) -> the objects `helm template` renders."""

    def _render(
        release: str = "longreach", namespace: str = "longreach-system", *args: str
    ) -> list[dict[str, Any]]:
        r = run_helm(helm, "template", release, str(CHART), "--namespace", namespace, *args)
        assert r.returncode == 0, r.stderr
        return [d for d in yaml.safe_load_all(r.stdout) if d]

    return _render
