"""The status state machine and the child-state mappings, pure."""

from __future__ import annotations

import pytest

from longreach.operator.contextextension.handlers import observe_jobset
from longreach.operator.datamixture.handlers import observe_rayjob
from longreach.operator.needleeval.handlers import observe_job
from longreach.operator.status import (
    ChildState,
    Observation,
    changed,
    conditions,
    dependency_message,
    phase_of,
    status_patch,
)

pytestmark = pytest.mark.unit


def test_success_needs_the_commit_marker() -> None:
    assert phase_of(ChildState("succeeded"), {}, True, "manifest.json")[0] == "Succeeded"
    phase, reason, message = phase_of(ChildState("succeeded"), {}, False, "manifest.json")
    assert (phase, reason) == ("Failed", "OutputMissing") and "manifest.json" in message


def test_failure_prefers_the_jobs_own_error() -> None:
    assert (
        phase_of(ChildState("failed", "exit 1"), {"error": "tokenizer cannot load: x"}, False, "m")[
            2
        ]
        == "tokenizer cannot load: x"
    )
    assert phase_of(ChildState("failed", "exit 1"), {}, False, "m")[2] == "exit 1"


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
    running = {"status": {"phase": "Running", "progress": {"percent": 41.2}}}
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
