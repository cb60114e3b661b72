"""The release workflow (.github/workflows/release.yml), which only GitHub runs: actionlint
(with shellcheck on its scripts), and that it releases what the rest of the repository says."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def test_actionlint() -> None:
    from controlplane.cluster import BIN

    actionlint = BIN / "actionlint" if (BIN / "actionlint").exists() else shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (tests/controlplane/build.sh builds it)")
    shellcheck = Path(sys.executable).parent / "shellcheck"
    r = subprocess.run([str(actionlint), "-shellcheck", str(shellcheck), str(WORKFLOW)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_it_releases_on_a_version_tag_with_the_users_script() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow[True] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+*"]}}  # YAML 1.1: on = True
    assert workflow["permissions"] == {"contents": "read", "packages": "write"}
    (job,) = workflow["jobs"].values()
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'images/build.sh "$REGISTRY" "$VERSION"' in scripts
    assert 'helm push "dist/longreach-$VERSION.tgz"' in scripts
    # The chart it packages names the pushed images (NOTES.txt then stays quiet).
    assert ".global.registry = strenv(REGISTRY) | .global.tag = strenv(VERSION)" in scripts
    # The helm the tests run is the helm it packages with.
    helm = next(s for s in job["steps"] if s.get("uses", "").startswith("azure/setup-helm"))
    tested = re.search(
        r"^HELM_VERSION=(\S+)$", (REPO / "tests/controlplane/build.sh").read_text(), re.M
    )
    assert tested and helm["with"]["version"] == tested.group(1)
