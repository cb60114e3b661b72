"""The status state machine, the reconcile flow's pure steps and the child-state mappings."""

from __future__ import annotations

import kopf
import pytest

from longreach.contract.contextextension import TrainProgress, TrainReport, TrainResult
from longreach.contract.datamixture import DataMixtureStatus, MixtureProgress, MixtureReport
from longreach.operator.adapter import Dependency
from longreach.operator.contextextension.adapter import observe_jobset
from longreach.operator.datamixture.adapter import DataMixtureAdapter, observe_rayjob
from longreach.operator.needleeval.adapter import observe_job
from longreach.operator.reconcile import Stop, deadline_passed, parse_spec, resolve
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import (
    ChildState,
    Observation,
    changed,
    conditions,
    dependency_message,
    observe,
    phase_of,
    status_patch,
)

pytestmark = pytest.mark.unit


def test_success_needs_the_commit_marker() -> None:
    assert phase_of(ChildState("succeeded"), None, True, "manifest.json")[0] == "Succeeded"
    phase, reason, message = phase_of(ChildState("succeeded"), None, False, "manifest.json")
    assert (phase, reason) == ("Failed", "OutputMissing") and "manifest.json" in message


def test_failure_prefers_the_jobs_own_error() -> None:
    report = MixtureReport(state="failed", error="tokenizer cannot load: x")
    assert phase_of(ChildState("failed", "exit 1"), report, False, "m")[2] == report.error
    assert phase_of(ChildState("failed", "exit 1"), None, False, "m")[2] == "exit 1"


def test_observation_copies_the_reports_fields_and_the_result_only_once_committed() -> None:
    report = TrainReport(
        state="succeeded",
        progress=TrainProgress(step=4, totalSteps=4, loss=2.5, percent=100),
        result=TrainResult(uri="s3://b/o/final", loss=2.5),
    )
    done = observe(ChildState("succeeded", attempts=2), report, True, "final/longreach.json", 1)
    assert done.phase == "Succeeded" and done.attempts == 2
    assert done.fields["result"]["uri"] == "s3://b/o/final"
    assert done.fields["progress"]["step"] == 4 and "lastCheckpoint" in done.fields
    missing = observe(ChildState("succeeded"), report, False, "final/longreach.json", 3)
    assert missing.phase == "Failed" and "result" not in missing.fields and missing.attempts == 3
    assert observe(ChildState("running"), None, False, "m", 0).fields == {}


def test_an_invalid_spec_stops_with_the_field_named() -> None:
    with pytest.raises(Stop) as stop:
        parse_spec(DataMixtureAdapter(), {"sources": []}, OperatorSettings())
    assert stop.value.observation.phase == "Failed"
    assert stop.value.observation.message.startswith("spec.sources")
    assert isinstance(stop.value.then, kopf.PermanentError)


def test_operator_storage_defaults_fill_what_the_spec_left_empty() -> None:
    raw = {
        "sources": [{"uri": "s3://c/x"}],
        "tokenizer": {"uri": "t"},
        "totalTokens": "1M",
        "sequenceLength": 1024,
        "output": {"uri": "s3://o/x"},
        "storage": {"region": "eu-1"},
    }
    settings = OperatorSettings.model_validate(
        {"storage": {"endpoint": "http://minio", "region": "x"}}
    )
    spec = parse_spec(DataMixtureAdapter(), raw, settings)
    assert (spec.storage.endpoint, spec.storage.region) == ("http://minio", "eu-1")


def test_dependencies_resolve_through_their_kinds_models() -> None:
    dep = Dependency("DataMixture", "m")
    spec = {
        "sources": [{"uri": "c"}],
        "tokenizer": {"uri": "t"},
        "totalTokens": "1M",
        "sequenceLength": 1024,
        "output": {"uri": "o"},
    }
    with pytest.raises(Stop) as waiting:
        resolve(dep, {"spec": spec, "status": {"phase": "Running", "progress": {"percent": 41.2}}})
    assert waiting.value.observation.phase == "Waiting"
    assert waiting.value.observation.message == "waiting for DataMixture m: Running, 41%"
    with pytest.raises(Stop) as failed:
        resolve(dep, {"spec": spec, "status": {"phase": "Failed", "message": "no data"}})
    assert failed.value.observation.reason == "DependencyFailed"
    assert "no data" in failed.value.observation.message
    done = resolve(
        dep,
        {"spec": spec, "status": {"phase": "Succeeded", "result": {"uri": "o", "tokens": 7}}},
    )
    assert isinstance(done.status, DataMixtureStatus) and done.status.result.tokens == 7
    assert done.spec.output.uri == "o"  # type: ignore[attr-defined]


def test_deadline() -> None:
    assert not deadline_passed(None, "2020-01-01T00:00:00Z", 2e9)
    assert not deadline_passed(60, None, 2e9)
    start = 1_600_000_000.0
    assert not deadline_passed(60, "2020-09-13T12:26:40Z", start + 59)
    assert deadline_passed(60, "2020-09-13T12:26:40Z", start + 61)


def test_conditions_keep_transition_times_until_they_flip() -> None:
    first = conditions([], Observation("Running", "Running", "go"), 1)
    for c in first:
        c["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    again = conditions(first, Observation("Running", "Running", "still"), 1)
    assert all(c["lastTransitionTime"] == "2020-01-01T00:00:00Z" for c in again)
    done = {c["type"]: c for c in conditions(again, Observation("Succeeded", "Completed", "ok"), 1)}
    assert (
        done["Succeeded"]["status"] == "True"
        and done["Succeeded"]["lastTransitionTime"] != "2020-01-01T00:00:00Z"
    )


def test_status_patch_sets_times_once_and_change_detection_ignores_timestamps() -> None:
    p = status_patch({}, Observation("Running", "Running", "x"), 2)
    assert p["startTime"] and "completionTime" not in p and p["observedGeneration"] == 2
    assert not changed(p, status_patch(p, Observation("Running", "Running", "x"), 2))
    assert changed(p, status_patch(p, Observation("Running", "Running", "y"), 2))


def test_dependency_messages() -> None:
    assert dependency_message("DataMixture", "m", None)[1] == "waiting for DataMixture m: not found"
    running = DataMixtureStatus(phase="Running", progress=MixtureProgress(percent=41.2))
    assert dependency_message("DataMixture", "m", running) == (
        "DependencyNotReady",
        "waiting for DataMixture m: Running, 41%",
    )


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ({}, "pending"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, "running"),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "succeeded"),
        ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": "oom"}, "failed"),
        ({"jobDeploymentStatus": "Suspended"}, "suspended"),
    ],
)
def test_rayjob_states(status: dict, state: str) -> None:
    assert observe_rayjob({"status": status}).state == state


def test_jobset_states_count_gang_restarts() -> None:
    failed = observe_jobset(
        {
            "status": {
                "restarts": 3,
                "conditions": [{"type": "Failed", "status": "True", "message": "max restarts"}],
            }
        }
    )
    assert failed.state == "failed" and failed.attempts == 4 and "max restarts" in failed.message
    running = observe_jobset({"status": {"replicatedJobsStatus": [{"name": "node", "active": 2}]}})
    assert running.state == "running"
    assert (
        observe_jobset({"status": {"conditions": [{"type": "Completed", "status": "True"}]}}).state
        == "succeeded"
    )


def test_job_states() -> None:
    assert observe_job({"status": {"active": 1}}).state == "running"
    assert (
        observe_job({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).state
        == "succeeded"
    )
    assert (
        observe_job(
            {
                "status": {
                    "failed": 4,
                    "conditions": [
                        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                    ],
                }
            }
        ).state
        == "failed"
    )


def test_the_jobs_warnings_show_as_a_warning_condition() -> None:
    report = MixtureReport(state="running", warnings=["domain C4 has 240 tokens", "second"])
    obs = observe(ChildState("running"), report, False, "manifest.json", 0)
    warned = {c["type"]: c for c in conditions([], obs, 3)}
    assert warned["Warning"]["status"] == "True" and warned["Warning"]["reason"] == "JobWarning"
    assert warned["Warning"]["message"] == "domain C4 has 240 tokens; second"
    assert warned["Warning"]["observedGeneration"] == 3
    # A reconcile that did not read the report (e.g. a Waiting step) leaves it as it was.
    kept = conditions(list(warned.values()), Observation("Suspended", "Suspended", "s"), 3)
    assert {c["type"]: c for c in kept}["Warning"] == warned["Warning"]
    # A job that no longer warns turns it False; one that never warned has none.
    quiet = observe(ChildState("running"), MixtureReport(), False, "manifest.json", 0)
    cleared = {c["type"]: c for c in conditions(list(warned.values()), quiet, 4)}
    assert cleared["Warning"]["status"] == "False" and cleared["Warning"]["message"] == ""
    assert [c["type"] for c in conditions([], quiet, 1)] == [
        "Ready",
        "Succeeded",
        "Failed",
        "Waiting",
    ]
    assert "Warning" in status_patch({}, obs, 3)["conditions"][-1]["type"]


def test_a_job_kueue_has_not_admitted_waits_naming_the_queue_and_kueues_reason() -> None:
    from longreach.operator.kueue import waiting_message

    wl = {
        "status": {
            "conditions": [
                {
                    "type": "QuotaReserved",
                    "status": "False",
                    "message": "couldn't assign flavors to pod set node: insufficient unused "
                    "quota for nvidia.com/gpu in flavor default, 16 more needed",
                }
            ]
        }
    }
    said = waiting_message("gpu", "team-a", "JobSet", wl)
    assert said.startswith("waiting for Kueue to admit the JobSet in LocalQueue team-a/gpu: ")
    assert "16 more needed" in said
    assert "no Workload" in waiting_message("gpu", "team-a", "JobSet", None)
    just_made = waiting_message("gpu", "team-a", "JobSet", None, created=True)
    assert just_made == "waiting for Kueue to admit the JobSet in LocalQueue team-a/gpu"
    phase, reason, message = phase_of(ChildState("queued", said), None, False, "m")
    assert (phase, reason, message) == ("Waiting", "AwaitingAdmission", said)
