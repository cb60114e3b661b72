"""Helpers shared by the chart and kustomize tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "longreach"

# render(release, namespace, *helm args) -> the rendered objects
Render = Callable[..., list[dict[str, Any]]]


def helm_binary() -> str | None:
    """The helm that tests/controlplane/build.sh caches, else one on PATH."""
    from controlplane.cluster import BIN

    cached = BIN / "helm"
    return str(cached) if cached.exists() else shutil.which("helm")


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of one kind (and name)."""
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's SafeLoader reads YAML 1.1, where `2e-05` (no dot, as Go's encoders write
    floats) is a string; kubectl, kustomize and the API server read it as a number."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def load_all(text: str) -> list[dict[str, Any]]:
    """The documents of a multi-document YAML stream, read as the Go tools read them."""
    return [d for d in yaml.load_all(text, Loader=Yaml12Loader) if d]
