"""Jobs queued in Kueue (spec.queueName): Kueue, not the operator, decides when they run.

Kueue's webhook creates the job suspended, and Kueue unsuspends it once its Workload is
admitted to the LocalQueue's ClusterQueue, and suspends it again on eviction or preemption.
Kueue unsuspends an admitted job that anyone else suspends, so the operator suspends and
resumes a queued job the way Kueue documents it: through the Workload's `spec.active`.
"""

from __future__ import annotations

from typing import Any

from longreach.operator.kube import Kube

API_VERSION = "kueue.x-k8s.io/v1beta2"
KIND = "Workload"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


async def workload(kube: Kube, namespace: str, job_uid: str) -> dict[str, Any] | None:
    """The Workload Kueue made for the job with this uid, or None (not yet, or no Kueue)."""
    items = await kube.list(API_VERSION, KIND, namespace, f"{JOB_UID_LABEL}={job_uid}")
    return items[0] if items else None


def is_active(wl: dict[str, Any]) -> bool:
    return bool((wl.get("spec") or {}).get("active", True))


async def set_active(kube: Kube, wl: dict[str, Any], active: bool) -> None:
    meta = wl["metadata"]
    await kube.patch(
        API_VERSION, KIND, meta["namespace"], meta["name"], {"spec": {"active": active}}
    )


def waiting_message(
    queue: str, namespace: str, job_kind: str, wl: dict[str, Any] | None, created: bool = False
) -> str:
    """Why a queued job has not started: the queue, and Kueue's own words when it said any."""
    where = f"LocalQueue {namespace}/{queue}"
    if wl is None and not created:
        return (
            f"waiting for Kueue to admit the {job_kind} in {where}; Kueue has made no Workload "
            f"for it yet (is Kueue installed, managing {job_kind}s, and does the queue exist?)"
        )
    conds = {c.get("type"): c for c in ((wl or {}).get("status") or {}).get("conditions") or []}
    said = next(
        (
            c.get("message", "")
            for t in ("Evicted", "QuotaReserved", "Admitted")
            if (c := conds.get(t)) and c.get("message")
        ),
        "",
    )
    return f"waiting for Kueue to admit the {job_kind} in {where}" + (f": {said}" if said else "")
