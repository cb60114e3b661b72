"""The DataMixture kind: how its job is configured, built, observed and run locally."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from longreach.operator.datamixture import children
from longreach.operator.datamixture.spec import KIND, PLURAL, DataMixtureSpec, MixtureJobConfig
from longreach.operator.reconcile import Adapter
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import ChildState


class DataMixtureAdapter(Adapter):
    kind: ClassVar[str] = KIND
    plural: ClassVar[str] = PLURAL
    spec_model = DataMixtureSpec
    marker: ClassVar[str] = "manifest.json"
    child_kind = ("ray.io/v1", "RayJob")

    def job_config(
        self, name: str, namespace: str, spec: DataMixtureSpec, deps: dict[str, Any]
    ) -> MixtureJobConfig:
        return MixtureJobConfig(name=name, namespace=namespace, spec=spec)

    def children(
        self,
        name: str,
        namespace: str,
        spec: DataMixtureSpec,
        config: Any,
        settings: OperatorSettings,
    ) -> list[dict[str, Any]]:
        return children.build(name, namespace, spec, config, settings.dataImage)

    def observe(self, child: dict[str, Any]) -> ChildState:
        return observe_rayjob(child)

    def local_command(self, config_path: str, spec: DataMixtureSpec) -> list[str]:
        return [sys.executable, "-P", "-m", "longreach.jobs.mixture", "--config", config_path]


def observe_rayjob(rayjob: dict[str, Any]) -> ChildState:
    """Map KubeRay's jobDeploymentStatus / jobStatus to our child state."""
    status = rayjob.get("status") or {}
    deployment, job = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
    message = status.get("message", "")
    attempts = int(status.get("failed") or 0) + int(status.get("succeeded") or 0) or 1
    if deployment in ("Suspended", "Suspending") or (rayjob.get("spec") or {}).get("suspend"):
        return ChildState("suspended", message, attempts)
    if job == "SUCCEEDED" and deployment in ("Complete", "Running", ""):
        return ChildState("succeeded", message, attempts)
    if deployment == "Failed" or job in ("FAILED", "STOPPED"):
        reason = status.get("reason", "")
        return ChildState("failed", f"RayJob failed: {reason} {message}".strip(), attempts)
    if job == "RUNNING" or deployment == "Running":
        return ChildState("running", message, attempts)
    return ChildState("pending", message or "the Ray cluster is starting", attempts)
