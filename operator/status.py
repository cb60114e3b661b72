"""The status state machine, pure: what the status should say, given what was observed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from longreach.contract.common import StatusBase
from longreach.contract.report import Report

ChildStateName = Literal["pending", "queued", "running", "succeeded", "failed", "suspended"]
TERMINAL = ("Succeeded", "Failed")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ChildState:
    """What the job's child (RayJob, JobSet, Job or local process) says about itself."""

    state: ChildStateName
    message: str = ""
    attempts: int = 0
    created: bool = False
    """True when this reconcile has just created the job."""
    uid: str = ""
    """The job object's uid (Kueue's Workload carries it as a label)."""
    since: float = 0.0
    """When the job object was created (seconds since the epoch): reports older than that are
    from an earlier job."""


@dataclass
class Observation:
    """Everything the status is computed from."""

    phase: str
    reason: str
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    """The kind's own status fields (progress, result, ...) from the job's report."""
    attempts: int | None = None
    warnings: list[str] | None = None
    """The job's warnings (its report's), shown as a Warning condition; None where the job's
    report was not read (the Warning condition stays as it was)."""


def bad_input(child: ChildState, report: Report | None) -> bool:
    """The current job reported bad input: it fails once, whatever the child's own retry
    policy would do next (a RayJob retries any failure)."""
    return (
        report is not None
        and report.state == "failed"
        and report.badInput
        and child.state != "succeeded"
        and report.updatedAt >= child.since
    )


def phase_of(
    child: ChildState, report: Report | None, output_committed: bool, marker: str
) -> tuple[str, str, str]:
    """(phase, reason, message) for a resource whose child exists. `Succeeded` only when the
    child succeeded AND the output's commit marker exists."""
    said = report.message if report else ""
    if bad_input(child, report):
        return "Failed", "BadInput", report.error or said  # type: ignore[union-attr]
    if child.state == "succeeded":
        if output_committed:
            return "Succeeded", "Completed", said or "the job succeeded and its output is committed"
        return "Failed", "OutputMissing", f"the job reported success but {marker} is missing"
    if child.state == "failed":
        why = (report.error if report else "") or child.message or "the job failed"
        return "Failed", "JobFailed", why
    if child.state == "suspended":
        return "Suspended", "Suspended", "suspended; set spec.suspend=false to resume"
    if child.state == "queued":
        return "Waiting", "AwaitingAdmission", child.message
    if child.state == "running":
        return "Running", "Running", said or child.message or "running"
    return "Pending", "Starting", child.message or "waiting for the job's pods to start"


def observe(
    child: ChildState, report: Report | None, committed: bool, marker: str, attempts_before: int
) -> Observation:
    """The observation of a resource whose job exists: phase from the child and the marker,
    the kind's fields from the job's own report (the result only once committed)."""
    phase, reason, message = phase_of(child, report, committed, marker)
    fields = report.status_fields(with_result=phase == "Succeeded") if report else {}
    return Observation(
        phase,
        reason,
        message,
        fields,
        attempts=max(child.attempts, attempts_before, 1),
        warnings=list(report.warnings) if report else [],
    )


_CONDITIONS = ("Ready", "Succeeded", "Failed", "Waiting")


def conditions(
    old: list[dict[str, Any]], obs: Observation, generation: int
) -> list[dict[str, Any]]:
    """Ready, Succeeded, Failed and Waiting, then Warning once the job has warned;
    lastTransitionTime moves only when status flips."""
    wanted = {
        "Ready": obs.phase == "Succeeded",
        "Succeeded": obs.phase == "Succeeded",
        "Failed": obs.phase == "Failed",
        "Waiting": obs.phase == "Waiting",
    }
    previous = {c.get("type"): c for c in old}
    out = []
    for ctype in _CONDITIONS:
        shown = wanted[ctype] or ctype == "Ready"
        out.append(
            _condition(
                previous.get(ctype, {}),
                ctype,
                wanted[ctype],
                obs.reason if shown else obs.phase,
                obs.message if shown else "",
                generation,
            )
        )
    before = previous.get("Warning")
    if obs.warnings is None:  # the job's report was not read: the condition stays as it was
        out.extend([before] if before else [])
    elif obs.warnings or before:
        reason = "JobWarning" if obs.warnings else obs.phase
        message = "; ".join(obs.warnings)[:1000]
        out.append(
            _condition(before or {}, "Warning", bool(obs.warnings), reason, message, generation)
        )
    return out


def _condition(
    before: dict[str, Any], ctype: str, true: bool, reason: str, message: str, generation: int
) -> dict[str, Any]:
    status = "True" if true else "False"
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": before.get("lastTransitionTime", now())
        if before.get("status") == status
        else now(),
        "observedGeneration": generation,
    }


def status_patch(old: dict[str, Any], obs: Observation, generation: int) -> dict[str, Any]:
    """The status to write (a merge patch of the whole status)."""
    patch: dict[str, Any] = {
        "phase": obs.phase,
        "message": obs.message[:1000],
        "observedGeneration": generation,
        "conditions": conditions(old.get("conditions") or [], obs, generation),
        **obs.fields,
    }
    if obs.attempts is not None:
        patch["attempts"] = obs.attempts
    if obs.phase in ("Pending", "Running") and not old.get("startTime"):
        patch["startTime"] = now()
    if obs.phase in TERMINAL and not old.get("completionTime"):
        patch["completionTime"] = now()
    return patch


def _without_times(conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conds]


def changed(old: dict[str, Any], patch: dict[str, Any]) -> bool:
    """True when writing `patch` would change anything but timestamps."""
    for key, value in patch.items():
        if key == "conditions":
            if _without_times(value) != _without_times(old.get("conditions") or []):
                return True
        elif old.get(key) != value:
            return True
    return False


def dependency_message(kind: str, name: str, status: StatusBase | None) -> tuple[str, str]:
    """(reason, message) for a resource waiting on `kind/name` (None: it does not exist)."""
    if status is None:
        return "DependencyNotFound", f"waiting for {kind} {name}: not found"
    detail = f"Running, {status.percent():.0f}%" if status.phase == "Running" else status.phase
    return "DependencyNotReady", f"waiting for {kind} {name}: {detail}"
