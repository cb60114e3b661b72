"""The status state machine, pure: what the status should say, given what was observed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ChildStateName = Literal["pending", "running", "succeeded", "failed", "suspended"]
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


@dataclass
class Observation:
    """Everything the status is computed from."""

    phase: str
    reason: str
    message: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    attempts: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific fields, e.g. lastCheckpoint


def phase_of(
    child: ChildState, progress: dict[str, Any], output_committed: bool, marker: str
) -> tuple[str, str, str]:
    """(phase, reason, message) for a resource whose child exists. `Succeeded` only when the
    child succeeded AND the output's commit marker exists."""
    if child.state == "succeeded":
        if output_committed:
            return (
                "Succeeded",
                "Completed",
                progress.get("message") or "the job succeeded and its output is committed",
            )
        return "Failed", "OutputMissing", f"the job reported success but {marker} is missing"
    if child.state == "failed":
        why = progress.get("error") or child.message or "the job failed"
        return "Failed", "JobFailed", why
    if child.state == "suspended":
        return "Suspended", "Suspended", "suspended; set spec.suspend=false to resume"
    if child.state == "running":
        return "Running", "Running", progress.get("message") or child.message or "running"
    return "Pending", "Starting", child.message or "waiting for the job's pods to start"


_CONDITIONS = ("Ready", "Succeeded", "Failed", "Waiting")


def conditions(
    old: list[dict[str, Any]], obs: Observation, generation: int
) -> list[dict[str, Any]]:
    """Ready, Succeeded, Failed and Waiting; lastTransitionTime moves only when status flips."""
    wanted = {
        "Ready": obs.phase == "Succeeded",
        "Succeeded": obs.phase == "Succeeded",
        "Failed": obs.phase == "Failed",
        "Waiting": obs.phase == "Waiting",
    }
    previous = {c.get("type"): c for c in old}
    out = []
    for ctype in _CONDITIONS:
        status = "True" if wanted[ctype] else "False"
        before = previous.get(ctype, {})
        reason = obs.reason if wanted[ctype] or ctype == "Ready" else obs.phase
        out.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": obs.message if wanted[ctype] or ctype == "Ready" else "",
                "lastTransitionTime": before.get("lastTransitionTime", now())
                if before.get("status") == status
                else now(),
                "observedGeneration": generation,
            }
        )
    return out


def status_patch(old: dict[str, Any], obs: Observation, generation: int) -> dict[str, Any]:
    """The status to write (a merge patch of the whole status)."""
    patch: dict[str, Any] = {
        "phase": obs.phase,
        "message": obs.message[:1000],
        "observedGeneration": generation,
        "conditions": conditions(old.get("conditions") or [], obs, generation),
        **obs.extra,
    }
    if obs.progress:
        patch["progress"] = obs.progress
    if obs.result is not None:
        patch["result"] = obs.result
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


def dependency_message(kind: str, name: str, dep: dict[str, Any] | None) -> tuple[str, str]:
    """(reason, message) for a resource waiting on `kind/name`."""
    if dep is None:
        return "DependencyNotFound", f"waiting for {kind} {name}: not found"
    status = dep.get("status") or {}
    phase = status.get("phase") or "Pending"
    percent = (status.get("progress") or {}).get("percent")
    detail = (
        f"{phase}, {percent:.0f}%"
        if isinstance(percent, int | float) and phase == "Running"
        else phase
    )
    return "DependencyNotReady", f"waiting for {kind} {name}: {detail}"
