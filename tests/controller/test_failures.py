"""Bad input fails once, against the real API server: a missing input is refused before any
child is created, an output another resource owns is refused likewise, and a job that reports
bad input stops its child's retries (a RayJob retries every failure by itself)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from longreach.contract.datamixture import MixtureReport
from longreach.contract.ownership import Lease, Owner

from .conftest import Operator, get, wait_for
from .test_children import apply
from .test_lifecycle import mixture, patch_status, phase, report
from .test_truth import needle

pytestmark = pytest.mark.integration


def failed(cp: Any, kind: str, name: str, ns: str, op: Operator) -> dict[str, Any]:
    wait_for(f"{name} Failed", lambda: phase(cp, kind, name, ns) == "Failed", op=op)
    status: dict[str, Any] = get(cp, kind, name, ns)["status"]
    return status


def test_missing_inputs_are_refused_before_any_child(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp = control_plane
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(
        '{"text": "x", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n'
    )
    apply(
        cp,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: DataMixture
        metadata: {{name: mix}}
        spec:
          sources: [{{uri: {corpus}}}, {{uri: {tmp_path}/no-such-corpus}}]
          tokenizer: {{uri: {tmp_path}/tok}}
          totalTokens: 4M
          sequenceLength: 4096
          output: {{uri: {tmp_path}/out}}
        """,
    )
    status = failed(cp, "dmix", "mix", namespace, operator)
    assert status["message"].startswith(f"sources[1].uri: nothing at {tmp_path}/no-such-corpus")
    assert "NotFound" in cp.kubectl("get", "rayjob", "mix", "-n", namespace, check=False).stderr
    apply(cp, namespace, needle("niah", tmp_path / "niah", model=f"{tmp_path}/no-model"))
    status = failed(cp, "needle", "niah", namespace, operator)
    assert status["message"].startswith(f"model.uri: nothing at {tmp_path}/no-model/config.json")
    assert "NotFound" in cp.kubectl("get", "job", "niah", "-n", namespace, check=False).stderr


def test_an_output_owned_by_another_resource_is_refused_before_any_child(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp, out = control_plane, tmp_path / "mix"
    other = Owner(kind="DataMixture", namespace="elsewhere", name="theirs", uid="u-1")
    lease = Lease(str(out), None, other, {"kind": "DataMixture", "spec": {"seed": 7}})
    lease.acquire()
    lease.finish()
    apply(cp, namespace, mixture("mix", out))
    status = failed(cp, "dmix", "mix", namespace, operator)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Failed"]["reason"] == "OutputOwned"
    assert "DataMixture elsewhere/theirs" in status["message"]
    assert "NotFound" in cp.kubectl("get", "rayjob", "mix", "-n", namespace, check=False).stderr


def test_reported_bad_input_stops_a_retrying_rayjob(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cp, out = control_plane, tmp_path / "mix"
    apply(cp, namespace, mixture("mix", out))
    wait_for("RayJob", lambda: get(cp, "rayjob", "mix", namespace), op=operator)
    patch_status(
        cp, "rayjob", "mix", namespace, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
    )
    why = "sources[0].uri s3://corpora/train: no .jsonl / .jsonl.zst / .parquet files found"
    report(
        out,
        MixtureReport(state="failed", error=why, badInput=True, updatedAt=time.time() + 1),
    )
    status = failed(cp, "dmix", "mix", namespace, operator)
    assert {c["type"]: c for c in status["conditions"]}["Failed"]["reason"] == "BadInput"
    assert status["message"] == why
    wait_for(
        "the RayJob deleted (no retries)",
        lambda: (
            "NotFound" in cp.kubectl("get", "rayjob", "mix", "-n", namespace, check=False).stderr
        ),
        op=operator,
    )
