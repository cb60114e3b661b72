"""The layers hold at run time too: each entry module, imported alone in a fresh interpreter,
pulls in nothing its side must not import (import-linter checks the static graph in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

ML = ("torch", "ray", "deepspeed", "transformers")
# module -> top-level packages (or our layers) it must not load
RULES: dict[str, tuple[str, ...]] = {
    "longreach.operator.main": (*ML, "longreach.jobs"),
    "longreach.operator.cli": (*ML, "longreach.jobs"),
    "longreach.operator.localrun": (*ML, "longreach.jobs"),
    "longreach.operator.crds": (*ML, "longreach.jobs"),
    "longreach.jobs.mixture.__main__": ("kopf", "kubernetes", "longreach.operator"),
    "longreach.jobs.mixture.job": ("kopf", "kubernetes", "longreach.operator"),
    "longreach.jobs.train.__main__": ("kopf", "kubernetes", "longreach.operator"),
    "longreach.jobs.train.trainer": ("kopf", "kubernetes", "longreach.operator"),
    "longreach.jobs.needle.__main__": ("kopf", "kubernetes", "longreach.operator"),
    "longreach.jobs.needle.job": ("kopf", "kubernetes", "longreach.operator"),
    "longreach.jobs.demo": ("kopf", "kubernetes", "longreach.operator"),
    "longreach.contract.datamixture": ("kopf", "kubernetes", *ML, "longreach.operator", "longreach.jobs"),
    "longreach.contract.contextextension": ("kopf", "kubernetes", *ML, "longreach.operator", "longreach.jobs"),
    "longreach.contract.needleeval": ("kopf", "kubernetes", *ML, "longreach.operator", "longreach.jobs"),
    "longreach.contract.report": ("kopf", "kubernetes", *ML, "longreach.operator", "longreach.jobs"),
}  # fmt: skip


def loaded_by(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", sorted(RULES))
def test_entry_module_loads_nothing_forbidden(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded
    bad = sorted(m for m in loaded for f in RULES[module] if m == f or m.startswith(f + "."))
    assert not bad, f"{module} loads {bad[:5]}"
