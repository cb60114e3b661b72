"""Status follows the children, the way the child controllers would move them: phases,
conditions, events, kubectl columns, dependencies, operator restarts and suspend."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from longreach.contract.datamixture import MixtureProgress, MixtureReport, MixtureResult

from .conftest import Operator, get, wait_for
from .test_children import apply

pytestmark = pytest.mark.integration


def report(out: Path, what: MixtureReport) -> None:
    """Play the mixture job: its progress.json, through the kind's model."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "progress.json").write_text(what.model_dump_json())


def patch_status(cp: Any, kind: str, name: str, ns: str, status: dict[str, Any]) -> None:
    cp.kubectl(
        "patch",
        kind,
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def phase(cp: Any, kind: str, name: str, ns: str) -> str:
    return (get(cp, kind, name, ns).get("status") or {}).get("phase", "")


def mixture(name: str, out: Path) -> str:
    return f"""
        apiVersion: longreach.io/v1alpha1
        kind: DataMixture
        metadata: {{name: {name}}}
        spec:
          sources: [{{uri: s3://corpora/train}}]
          tokenizer: {{uri: s3://models/tok}}
          totalTokens: 4M
          sequenceLength: 4096
          output: {{uri: {out}}}
        """


def test_rayjob_lifecycle_drives_phase_conditions_events_and_columns(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp, out = control_plane, tmp_path / "mix"
    apply(cp, namespace, mixture("mix", out))
    wait_for("RayJob", lambda: get(cp, "rayjob", "mix", namespace), op=operator)
    wait_for("Pending", lambda: phase(cp, "dmix", "mix", namespace) == "Pending", op=operator)

    patch_status(
        cp, "rayjob", "mix", namespace, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    )
    out.mkdir()
    report(
        out,
        MixtureReport(
            message="tokenizing",
            progress=MixtureProgress(documentsRead=1200, tokensWritten=1_640_000, percent=41.0),
        ),
    )
    wait_for(
        "Running at 41%",
        lambda: (
            (get(cp, "dmix", "mix", namespace)["status"].get("progress") or {}).get("percent")
            == 41.0
        ),
        op=operator,
    )
    status = get(cp, "dmix", "mix", namespace)["status"]
    assert status["phase"] == "Running" and status["message"] == "tokenizing"
    assert status["progress"]["documentsRead"] == 1200

    # The RayJob succeeds, but the manifest (the commit marker) is not there yet: not Succeeded.
    report(
        out,
        MixtureReport(
            state="succeeded",
            message="done",
            progress=MixtureProgress(percent=100.0),
            result=MixtureResult(
                uri=str(out),
                tokens=4_000_000,
                chunks=976,
                domainShares={"RedPajamaBook": 0.04},
                longDocumentTokenFraction=0.77,
            ),
        ),
    )
    (out / "manifest.json").write_text("{}")
    patch_status(
        cp,
        "rayjob",
        "mix",
        namespace,
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    )
    wait_for("Succeeded", lambda: phase(cp, "dmix", "mix", namespace) == "Succeeded", op=operator)
    status = get(cp, "dmix", "mix", namespace)["status"]
    assert status["result"]["tokens"] == 4_000_000 and status["result"]["uri"] == str(out)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Succeeded"]["status"] == "True" and conds["Ready"]["status"] == "True"
    assert conds["Failed"]["status"] == "False" and conds["Waiting"]["status"] == "False"
    assert status["completionTime"] and status["startTime"] and status["observedGeneration"] == 1

    table = cp.kubectl("get", "dmix", "mix", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "PHASE", "PROGRESS", "TOKENS", "AGE"]
    assert table[1].split()[:4] == ["mix", "Succeeded", "100", "4000000"]
    events = cp.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=mix",
        "-o",
        "json",
    ).stdout
    said = {
        e["reason"]: e["message"]
        for e in json.loads(events)["items"]
        if e["involvedObject"]["kind"] == "DataMixture"
    }
    assert {"Starting", "Running", "Completed"} <= set(said)
    assert said["Completed"] == status["message"]  # the event says what the status says
    assert "datamixture.longreach.io/mix" in cp.kubectl("get", "longreach", "-n", namespace).stdout

    metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert 'longreach_resources{kind="DataMixture",phase="Succeeded"}' in metrics
    assert (
        'longreach_phase_transitions_total{from_phase="Running",kind="DataMixture",to_phase="Succeeded"}'
        in metrics
    )
    assert (
        "longreach_handler_seconds_bucket" in metrics
        and "longreach_reconcile_errors_total" in metrics
    )


def test_success_without_commit_marker_is_a_failure(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, mixture("nomanifest", tmp_path / "o"))
    wait_for("RayJob", lambda: get(cp, "rayjob", "nomanifest", namespace), op=operator)
    patch_status(
        cp,
        "rayjob",
        "nomanifest",
        namespace,
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    )
    wait_for("Failed", lambda: phase(cp, "dmix", "nomanifest", namespace) == "Failed", op=operator)
    status = get(cp, "dmix", "nomanifest", namespace)["status"]
    assert "manifest.json is missing" in status["message"]
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "OutputMissing"


def test_jobset_failure_reports_why(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(
        cp,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: ContextExtension
        metadata: {{name: ext}}
        spec:
          model: {{uri: s3://m}}
          data: {{uri: s3://d}}
          sequenceLength: 4096
          rope: {{theta: 500000}}
          training: {{tokens: 10M, batchTokens: 64K}}
          resources: {{gpusPerNode: 1}}
          output: {{uri: {tmp_path}/ext}}
        """,
    )
    wait_for("JobSet", lambda: get(cp, "jobset", "ext", namespace), op=operator)
    patch_status(
        cp,
        "jobset",
        "ext",
        namespace,
        {
            "restarts": 2,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "FailedJobs",
                    "message": "jobset failed due to reaching max number of restarts",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    wait_for("Failed", lambda: phase(cp, "ctxext", "ext", namespace) == "Failed", op=operator)
    status = get(cp, "ctxext", "ext", namespace)["status"]
    assert "max number of restarts" in status["message"] and status["attempts"] == 3


def test_waits_for_dependency_then_starts_by_itself(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp, out = control_plane, tmp_path / "mix"
    apply(
        cp,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: NeedleEval
        metadata: {{name: niah}}
        spec:
          model: {{contextExtensionRef: ext}}
          output: {{uri: {tmp_path}/niah}}
        ---
        apiVersion: longreach.io/v1alpha1
        kind: ContextExtension
        metadata: {{name: ext}}
        spec:
          model: {{uri: s3://m}}
          data: {{dataMixtureRef: mix}}
          sequenceLength: 4096
          rope: {{theta: 500000}}
          training: {{tokens: 10M, batchTokens: 64K}}
          output: {{uri: {tmp_path}/ext}}
        """,
    )
    wait_for(
        "Waiting on the mixture",
        lambda: phase(cp, "ctxext", "ext", namespace) == "Waiting",
        op=operator,
    )
    assert (
        get(cp, "ctxext", "ext", namespace)["status"]["message"]
        == "waiting for DataMixture mix: not found"
    )
    wait_for(
        "the eval waiting on the run",
        lambda: (
            get(cp, "needle", "niah", namespace)["status"]["message"]
            == "waiting for ContextExtension ext: Waiting"
        ),
        op=operator,
    )

    apply(cp, namespace, mixture("mix", out))
    wait_for("RayJob", lambda: get(cp, "rayjob", "mix", namespace), op=operator)
    out.mkdir()
    report(out, MixtureReport(progress=MixtureProgress(percent=41.0)))
    patch_status(
        cp, "rayjob", "mix", namespace, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    )
    wait_for(
        "Waiting shows the dependency's progress",
        lambda: (
            get(cp, "ctxext", "ext", namespace)["status"]["message"]
            == "waiting for DataMixture mix: Running, 41%"
        ),
        op=operator,
    )
    cond = {c["type"]: c for c in get(cp, "ctxext", "ext", namespace)["status"]["conditions"]}[
        "Waiting"
    ]
    assert cond["status"] == "True" and cond["reason"] == "DependencyNotReady"
    assert cp.kubectl("get", "jobset", "ext", "-n", namespace, check=False).returncode != 0

    (out / "manifest.json").write_text("{}")
    patch_status(
        cp,
        "rayjob",
        "mix",
        namespace,
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
    )
    js = wait_for(
        "the JobSet, once the mixture succeeded",
        lambda: get(cp, "jobset", "ext", namespace),
        op=operator,
    )
    config = json.loads(get(cp, "configmap", "ext-config", namespace)["data"]["config.json"])
    assert config["dataUri"] == str(out)
    assert js["metadata"]["ownerReferences"][0]["name"] == "ext"


def test_operator_restart_neither_duplicates_nor_loses(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp, out = control_plane, tmp_path / "mix"
    apply(cp, namespace, mixture("mix", out))
    wait_for("RayJob", lambda: get(cp, "rayjob", "mix", namespace), op=operator)
    out.mkdir()
    report(out, MixtureReport(progress=MixtureProgress(percent=10.0)))
    patch_status(
        cp, "rayjob", "mix", namespace, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    )
    wait_for("Running", lambda: phase(cp, "dmix", "mix", namespace) == "Running", op=operator)
    uid = get(cp, "rayjob", "mix", namespace)["metadata"]["uid"]

    operator.stop(crash=True)
    report(out, MixtureReport(progress=MixtureProgress(percent=55.0)))
    operator.start()
    wait_for(
        "progress after restart",
        lambda: get(cp, "dmix", "mix", namespace)["status"]["progress"]["percent"] == 55.0,
        op=operator,
    )
    assert get(cp, "rayjob", "mix", namespace)["metadata"]["uid"] == uid
    items = json.loads(
        cp.kubectl(
            "get",
            "rayjobs,configmaps",
            "-n",
            namespace,
            "-l",
            "longreach.io/name=mix",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert sorted(i["kind"] for i in items) == ["ConfigMap", "RayJob"]
    assert phase(cp, "dmix", "mix", namespace) == "Running"


def test_suspend_stops_and_resumes_the_child(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, mixture("mix", tmp_path / "mix"))
    wait_for("RayJob", lambda: get(cp, "rayjob", "mix", namespace), op=operator)
    cp.kubectl(
        "patch", "dmix", "mix", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}'
    )
    wait_for(
        "RayJob suspended",
        lambda: get(cp, "rayjob", "mix", namespace)["spec"].get("suspend") is True,
        op=operator,
    )
    wait_for("Suspended", lambda: phase(cp, "dmix", "mix", namespace) == "Suspended", op=operator)
    cp.kubectl(
        "patch",
        "dmix",
        "mix",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": false}}',
    )
    wait_for(
        "RayJob resumed",
        lambda: get(cp, "rayjob", "mix", namespace)["spec"].get("suspend") is False,
        op=operator,
    )
    wait_for(
        "no longer Suspended",
        lambda: phase(cp, "dmix", "mix", namespace) in ("Pending", "Running"),
        op=operator,
    )


def test_a_run_that_cannot_fit_is_refused_with_the_numbers(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp, model = control_plane, tmp_path / "llama-7b"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 4096,
                "intermediate_size": 11008,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
                "vocab_size": 32000,
                "max_position_embeddings": 4096,
            }
        )
    )
    apply(
        cp,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: ContextExtension
        metadata: {{name: toobig}}
        spec:
          model: {{uri: {model}}}
          data: {{uri: s3://d}}
          sequenceLength: 262144
          rope: {{theta: 5000000}}
          training: {{tokens: 1B, batchTokens: 4M}}
          deepspeed: {{zeroStage: 2, offloadOptimizer: false, activationCheckpointing: false}}
          resources: {{nodes: 1, gpusPerNode: 1, gpuMemoryGiB: 24}}
          output: {{uri: {tmp_path}/out}}
        """,
    )
    wait_for("Failed", lambda: phase(cp, "ctxext", "toobig", namespace) == "Failed", op=operator)
    status = get(cp, "ctxext", "toobig", namespace)["status"]
    assert status["message"].startswith("does not fit: ") and "GiB" in status["message"]
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "Refused"
    assert cp.kubectl("get", "jobset", "toobig", "-n", namespace, check=False).returncode != 0


def test_active_deadline_stops_the_job_and_ttl_deletes_the_resource(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    manifest = mixture("slow", tmp_path / "slow").replace(
        "sequenceLength: 4096",
        "sequenceLength: 4096\n          activeDeadlineSeconds: 2\n          ttlSecondsAfterFinished: 3",
    )
    apply(cp, namespace, manifest)
    wait_for("RayJob", lambda: get(cp, "rayjob", "slow", namespace), op=operator)
    patch_status(
        cp, "rayjob", "slow", namespace, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    )
    wait_for(
        "DeadlineExceeded", lambda: phase(cp, "dmix", "slow", namespace) == "Failed", op=operator
    )
    status = get(cp, "dmix", "slow", namespace)["status"]
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "DeadlineExceeded"
    wait_for(
        "the RayJob stopped",
        lambda: cp.kubectl("get", "rayjob", "slow", "-n", namespace, check=False).returncode != 0,
        op=operator,
    )
    wait_for(
        "the resource deleted after its TTL",
        lambda: cp.kubectl("get", "dmix", "slow", "-n", namespace, check=False).returncode != 0,
        timeout=90,
        op=operator,
    )


def test_a_rejected_child_is_explained_in_the_status(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(
        cp,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: NeedleEval
        metadata: {{name: rejected}}
        spec:
          model: {{uri: s3://m}}
          nodeSelector: {{gpu: "not a valid label value!"}}
          output: {{uri: {tmp_path}/out}}
        """,
    )
    wait_for(
        "CreateFailed",
        lambda: (
            "cannot create the job"
            in get(cp, "needle", "rejected", namespace)["status"].get("message", "")
        ),
        op=operator,
    )
    status = get(cp, "needle", "rejected", namespace)["status"]
    assert status["phase"] == "Pending" and "nodeSelector" in status["message"]


def test_nothing_of_the_operator_on_the_resource_and_deletes_need_no_operator(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    apply(cp, namespace, mixture("plain", tmp_path / "plain"))
    wait_for("a phase", lambda: phase(cp, "dmix", "plain", namespace), op=operator)
    meta = get(cp, "dmix", "plain", namespace)["metadata"]
    assert not meta.get("finalizers")  # kopf's timers would add one
    assert not any("kopf" in key for key in meta.get("annotations") or {})
    operator.stop()
    try:
        cp.kubectl("delete", "dmix", "plain", "-n", namespace, "--wait=true", "--timeout=20s")
        gone = cp.kubectl("get", "dmix", "plain", "-n", namespace, check=False)
        assert "NotFound" in gone.stderr
    finally:
        operator.start()
