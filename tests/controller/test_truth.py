"""One output, one owner, and a status that never claims what did not happen, against the real
API server: output collisions refused at admission, immutable specs, the retry annotation,
empty columns until there is a result, rounded numbers, events that say what the status says,
and a missing child CRD named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from longreach.contract.contextextension import TrainProgress, TrainReport

from .conftest import Operator, get, wait_for
from .test_children import apply
from .test_lifecycle import mixture, patch_status, phase

pytestmark = pytest.mark.integration


def needle(name: str, out: Path | str, model: str = "s3://models/m") -> str:
    return f"""
        apiVersion: longreach.io/v1alpha1
        kind: NeedleEval
        metadata: {{name: {name}}}
        spec:
          model: {{uri: {model}}}
          lengths: {{values: [1000]}}
          output: {{uri: {out}}}
        """


def extension(name: str, out: Path) -> str:
    return f"""
        apiVersion: longreach.io/v1alpha1
        kind: ContextExtension
        metadata: {{name: {name}}}
        spec:
          model: {{uri: s3://models/m}}
          data: {{uri: s3://data/m}}
          sequenceLength: 1024
          rope: {{theta: 500000}}
          training: {{tokens: 1M, batchTokens: 4096}}
          resources: {{nodes: 1, gpusPerNode: 0}}
          output: {{uri: {out}}}
        """


ACTIVE = {
    "replicatedJobsStatus": [
        {"name": "node", "active": 1, "ready": 1, "failed": 0, "succeeded": 0, "suspended": 0}
    ]
}


def message(cp: Any, kind: str, name: str, ns: str) -> str:
    return str((get(cp, kind, name, ns).get("status") or {}).get("message", ""))


def test_a_colliding_output_is_refused_naming_the_other_resource(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, needle("first", tmp_path / "eval"))
    wait_for("first's Job", lambda: get(cp, "job", "first", namespace), op=operator)
    apply(cp, namespace, needle("second", f"file://{tmp_path}/eval/"))  # the same place
    apply(cp, namespace, mixture("inside", tmp_path / "eval" / "sub"))  # nested in it
    for kind, name in (("needle", "second"), ("dmix", "inside")):
        wait_for(
            f"{name} Failed",
            lambda k=kind, n=name: phase(cp, k, n, namespace) == "Failed",
            op=operator,
        )
        status = get(cp, kind, name, namespace)["status"]
        conds = {c["type"]: c for c in status["conditions"]}
        assert conds["Failed"]["reason"] == "OutputConflict"
        assert f"NeedleEval {namespace}/first" in status["message"]
    assert phase(cp, "needle", "first", namespace) != "Failed"
    assert "NotFound" in cp.kubectl("get", "job", "second", "-n", namespace, check=False).stderr


def test_the_spec_is_immutable_but_suspend_deadline_and_ttl(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, mixture("mix", tmp_path / "mix"))
    edit = cp.kubectl(
        "patch",
        "dmix",
        "mix",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"totalTokens": "8M", "strategy": {"type": "global"}}}',
        check=False,
    )
    assert edit.returncode != 0
    assert "spec.totalTokens" in edit.stderr and "delete and re-create it" in edit.stderr
    assert "spec.strategy" in edit.stderr
    for field, value in (("suspend", True), ("activeDeadlineSeconds", 600)):
        cp.kubectl(
            "patch", "dmix", "mix", "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {field: value, "ttlSecondsAfterFinished": 60}}),
        )  # fmt: skip
    generation = get(cp, "dmix", "mix", namespace)["metadata"]["generation"]
    assert generation == 3
    wait_for(
        "the edits observed",
        lambda: get(cp, "dmix", "mix", namespace)["status"].get("observedGeneration") == generation,
        op=operator,
    )


def test_a_failed_resource_is_retried_by_annotation(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, needle("niah", tmp_path / "niah"))
    first = wait_for("Job", lambda: get(cp, "job", "niah", namespace), op=operator)
    now = "2026-01-01T00:00:00Z"
    failed = [
        {"type": kind, "status": "True", "reason": "BackoffLimitExceeded", "message": "node lost",
         "lastProbeTime": now, "lastTransitionTime": now}
        for kind in ("FailureTarget", "Failed")
    ]  # fmt: skip
    patch_status(
        cp, "job", "niah", namespace, {"startTime": now, "failed": 1, "conditions": failed}
    )
    wait_for("Failed", lambda: phase(cp, "needle", "niah", namespace) == "Failed", op=operator)
    cp.kubectl("annotate", "needle", "niah", "-n", namespace, "longreach.io/retry=1")
    wait_for(
        "a new Job",
        lambda: get(cp, "job", "niah", namespace)["metadata"]["uid"] != first["metadata"]["uid"],
        timeout=60,
        op=operator,
    )
    status = wait_for(
        "not Failed any more",
        lambda: (s := get(cp, "needle", "niah", namespace)["status"])["phase"] != "Failed" and s,
        op=operator,
    )
    assert status["retry"] == "1" and not status.get("completionTime")
    events = cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert any(e["reason"] == "Retrying" for e in json.loads(events)["items"])


def test_columns_are_empty_until_there_is_a_result_and_numbers_are_rounded(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, needle("niah", tmp_path / "niah"))
    apply(cp, namespace, extension("ext", tmp_path / "ext"))
    wait_for("JobSet", lambda: get(cp, "jobset", "ext", namespace), op=operator)
    wait_for("Job", lambda: get(cp, "job", "niah", namespace), op=operator)
    row = cp.kubectl("get", "needle", "niah", "-n", namespace).stdout.splitlines()
    header, values = row[0].split(), row[1].split()
    assert header == ["NAME", "PHASE", "PROGRESS", "SCORE", "PAPER", "AGE"]
    assert values[:3] == ["niah", "Pending", "0"] and len(values) == 4  # no score: blank
    assert "result" not in get(cp, "needle", "niah", namespace)["status"]

    out = tmp_path / "ext"
    out.mkdir()
    running = TrainReport(progress=TrainProgress(step=3, totalSteps=10, loss=5.1071929931640625))
    (out / "progress.json").write_text(running.model_dump_json())
    patch_status(cp, "jobset", "ext", namespace, ACTIVE)
    wait_for(
        "the loss",
        lambda: get(cp, "ctxext", "ext", namespace)["status"].get("progress", {}).get("loss"),
        op=operator,
    )
    table = cp.kubectl("get", "ctxext", "ext", "-n", namespace).stdout
    assert "5.107 " in table and "5.1071929931640625" not in table


def test_waiting_events_follow_the_dependency_and_match_the_status(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, extension("ext", tmp_path / "ext"))
    apply(
        cp,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: NeedleEval
        metadata: {{name: niah}}
        spec:
          model: {{contextExtensionRef: ext}}
          lengths: {{values: [1000]}}
          output: {{uri: {tmp_path}/niah}}
        """,
    )
    wait_for("JobSet", lambda: get(cp, "jobset", "ext", namespace), op=operator)
    patch_status(cp, "jobset", "ext", namespace, ACTIVE)
    wait_for(
        "waiting on a running dependency",
        lambda: "ContextExtension ext: Running" in message(cp, "needle", "niah", namespace),
        op=operator,
    )

    def said() -> list[str]:
        items = json.loads(cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
        return [e["message"] for e in items["items"] if e["involvedObject"]["kind"] == "NeedleEval"]

    latest = wait_for(
        "an event about it",
        lambda: [m for m in said() if "ContextExtension ext: Running" in m],
        op=operator,
    )
    assert latest[-1].split(":")[:2] == message(cp, "needle", "niah", namespace).split(":")[:2]


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An API server with our CRDs only: no RayJob or JobSet installed."""
    from controlplane.cluster import ControlPlane

    crds = Path(__file__).resolve().parents[2] / "manifests" / "crds"
    cp = ControlPlane(tmp_path_factory.mktemp("bare")).start()
    try:
        cp.kubectl("apply", "--server-side", "-k", str(crds))
        cp.wait_established()
        yield cp
    finally:
        cp.cleanup()


def test_a_missing_child_crd_is_named_with_what_to_install(
    bare_cluster: Any, tmp_path: Path
) -> None:
    cp = bare_cluster
    cp.kubectl("create", "namespace", "bare")
    (tmp_path / "op").mkdir()
    op = Operator(cp.kubeconfig, tmp_path / "op").start()
    try:
        apply(cp, "bare", extension("ext", tmp_path / "ext"))
        wait_for(
            "the status names JobSet",
            lambda: (
                "JobSet API (jobset.x-k8s.io/v1alpha2) is not served"
                in message(cp, "ctxext", "ext", "bare")
            ),
            op=op,
        )
        status = get(cp, "ctxext", "ext", "bare")["status"]
        assert status["phase"] == "Pending" and "install JobSet" in status["message"]
    finally:
        op.stop()
