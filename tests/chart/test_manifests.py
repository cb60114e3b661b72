"""The kustomize base in manifests/base: it renders, the API server accepts it, and it says
what the chart says (same RBAC rules, same operator container, same CRDs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.charttools import REPO, Render, find, load_all

pytestmark = pytest.mark.integration

MANIFESTS = REPO / "manifests"


def _kubectl() -> str:
    from controlplane.cluster import BIN

    return (
        str(BIN / "kubectl") if (BIN / "kubectl").exists() else shutil.which("kubectl") or "kubectl"
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/base`, as `kubectl apply -k` would build it.

    manifests/crds/ must itself be a kustomization (kustomize refuses single files outside
    the base's folder); until `longreach crds` writes one, build from a copy that has it, so
    the rest of the base is still checked (test_crds_folder_is_a_kustomization fails)."""
    root = MANIFESTS
    if not (MANIFESTS / "crds" / "kustomization.yaml").exists():
        root = tmp_path_factory.mktemp("manifests") / "manifests"
        shutil.copytree(MANIFESTS, root)
        files = sorted(p.name for p in (root / "crds").glob("*.yaml"))
        (root / "crds" / "kustomization.yaml").write_text(yaml.safe_dump({"resources": files}))
    r = subprocess.run(
        [_kubectl(), "kustomize", str(root / "base")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return load_all(r.stdout)


def test_crds_folder_is_a_kustomization() -> None:
    kustomization = MANIFESTS / "crds" / "kustomization.yaml"
    assert kustomization.exists(), (
        "manifests/crds/kustomization.yaml is missing: `longreach crds` should write it "
        "(resources: the generated CRD files) so that manifests/base can include ../crds"
    )
    listed = set(yaml.safe_load(kustomization.read_text())["resources"])
    assert listed == {
        p.name for p in (MANIFESTS / "crds").glob("*.yaml") if p.name != "kustomization.yaml"
    }


def test_base_holds_the_operator_and_the_generated_crds(base: list[dict[str, Any]]) -> None:
    assert sorted(o["kind"] for o in base) == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
        ]
        + ["CustomResourceDefinition"] * 3
    )
    for obj in base:
        if obj["kind"] not in (
            "Namespace",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        ):
            assert obj["metadata"]["namespace"] == "longreach-system", obj["metadata"]["name"]
    for crd in find(base, "CustomResourceDefinition"):
        generated = yaml.safe_load(
            (MANIFESTS / "crds" / f"longreach.io_{crd['spec']['names']['plural']}.yaml").read_text()
        )
        assert crd["spec"] == generated["spec"]


def test_base_matches_the_chart(base: list[dict[str, Any]], render: Render) -> None:
    chart = render("longreach", "longreach-system")
    (role,) = find(base, "ClusterRole")
    (chart_role,) = find(chart, "ClusterRole")
    assert role["rules"] == chart_role["rules"], (
        "manifests/base/rbac.yaml differs from the chart's RBAC helpers"
    )
    (binding,) = find(base, "ClusterRoleBinding")
    assert binding["subjects"] == find(chart, "ClusterRoleBinding")[0]["subjects"]

    def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
        (deployment,) = find(objects, "Deployment")
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {
            "type": "Recreate"
        }
        return deployment["spec"]["template"]["spec"]

    assert pod(base) == pod(chart), (
        "manifests/base/deployment.yaml differs from the chart's defaults"
    )
    (service,) = find(base, "Service")
    (chart_service,) = find(chart, "Service")
    assert service["spec"] == chart_service["spec"]


def test_base_passes_server_side_dry_run(
    control_plane: Any, base: list[dict[str, Any]], tmp_path: Path
) -> None:
    # The namespace must exist for a dry run of the objects in it: create it for real.
    (namespace,) = find(base, "Namespace")
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace))
    r = control_plane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(base), check=False
    )
    assert r.returncode == 0, r.stderr
