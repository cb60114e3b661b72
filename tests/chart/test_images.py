"""The chart's images: one global registry and tag that the operator and the three job images
follow, each overridable, checked by the schema; NOTES.txt warns when the images are the
chart's defaults at an unreleased version."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

from chart.charttools import CHART, Render, find, run_helm

pytestmark = pytest.mark.integration

APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
JOBS = ("data", "trainer", "eval")


def images(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The operator's image and the job images it hands to its children."""
    (deployment,) = find(objects, "Deployment")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    return {"operator": c["image"]} | {job: env[f"LONGREACH_{job.upper()}_IMAGE"] for job in JOBS}


def test_defaults_are_the_project_registry_at_the_app_version(render: Render) -> None:
    assert images(render()) == {
        name: f"ghcr.io/longreach/{name}:{APP_VERSION}" for name in ("operator", *JOBS)
    }


def test_every_image_follows_the_global_registry_and_tag(render: Render) -> None:
    objects = render("lr", "ops", "--set", "global.registry=registry.example.com:5000/ml/lr",
                     "--set", "global.tag=0.1.0-3f3e935")  # fmt: skip
    assert images(objects) == {
        name: f"registry.example.com:5000/ml/lr/{name}:0.1.0-3f3e935"
        for name in ("operator", *JOBS)
    }
    # The registry alone: the tag stays the chart's version.
    objects = render("lr", "ops", "--set", "global.registry=registry.example.com/ml")
    assert set(images(objects).values()) == {
        f"registry.example.com/ml/{name}:{APP_VERSION}" for name in ("operator", *JOBS)
    }


def test_each_image_can_be_overridden(render: Render, helm: str) -> None:
    digest = "registry.other/eval@sha256:" + "0" * 64
    objects = render("lr", "ops", "--set", "global.registry=registry.example.com/ml",
                     "--set-string", "global.tag=7", "--set", "image.repository=registry.other/op",
                     "--set", "jobImages.trainer=registry.other/trainer:cu129",
                     "--set", f"jobImages.eval={digest}")  # fmt: skip
    assert images(objects) == {
        "operator": "registry.other/op:7",
        "data": "registry.example.com/ml/data:7",
        "trainer": "registry.other/trainer:cu129",
        "eval": digest,
    }
    objects = render("lr", "ops", "--set-string", "global.tag=7", "--set-string", "image.tag=8")
    assert images(objects)["operator"] == "ghcr.io/longreach/operator:8"
    # `--set global.tag=7` makes it the number 7, which the schema refuses: hence --set-string.
    r = run_helm(helm, "template", "x", str(CHART), "--set", "global.tag=7")
    assert r.returncode != 0 and "global/tag" in r.stderr, r.stderr


def test_a_parent_chart_may_pass_other_globals(render: Render) -> None:
    objects = render("lr", "ops", "--set", "global.storageClass=fast")
    assert images(objects)["operator"] == f"ghcr.io/longreach/operator:{APP_VERSION}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "global.registry=Registry.example/ml"], "global/registry"),
        (["--set", "global.registry=registry.example/ml/"], "global/registry"),
        (["--set", "global.registry=registry.example/ml:1.0"], "global/registry"),
        (["--set", "global.registry="], "global/registry"),
        (["--set", "global.tag=1.0 beta"], "global/tag"),
        (["--set", "global.tag=.hidden"], "global/tag"),
        (["--set", "image.tag=registry/op:1"], "image/tag"),
        (["--set", "image.repository=registry.example/op:1.0"], "image/repository"),
        (["--set", "jobImages.data=a b"], "jobImages/data"),
    ],
)
def test_schema_rejects_bad_image_values(helm: str, args: list[str], message: str) -> None:
    r = run_helm(helm, "template", "x", str(CHART), *args)
    assert r.returncode != 0, f"{args} rendered"
    assert message in r.stderr, r.stderr


def _notes(control_plane: Any, helm: str, *args: str) -> str:
    """NOTES.txt of a server-side dry-run install (client-side would need a cluster too)."""
    ns = f"lr-notes-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", ns)
    kube = ["--kubeconfig", str(control_plane.kubeconfig), "--namespace", ns]
    r = run_helm(helm, "install", "rel", str(CHART), *kube, "--dry-run=server",
                 "--set", "crds.install=false", *args)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.split("NOTES:")[-1]


def _warned(notes: str) -> set[str]:
    return {line.strip() for line in notes.splitlines() if line.strip().startswith("ghcr.io/")}


def test_notes_warn_about_unreleased_default_images(control_plane: Any, helm: str) -> None:
    notes = _notes(control_plane, helm)
    assert "WARNING" in notes and "images/build.sh" in notes
    assert _warned(notes) == {
        f"ghcr.io/longreach/{name}:{APP_VERSION}" for name in ("operator", *JOBS)
    }
    # Only the images still left at the defaults.
    notes = _notes(control_plane, helm, "--set", "image.repository=registry.example.com/op",
                   "--set", "jobImages.eval=registry.example.com/eval:1")  # fmt: skip
    assert _warned(notes) == {
        f"ghcr.io/longreach/{name}:{APP_VERSION}" for name in ("data", "trainer")
    }
    # Own images, or a tag chosen on purpose (a released chart sets it): no warning.
    for args in (
        ["--set", "global.registry=registry.example.com/ml"],
        ["--set", "global.tag=0.1.0"],
    ):
        notes = _notes(control_plane, helm, *args)
        assert "WARNING" not in notes and not _warned(notes), notes
