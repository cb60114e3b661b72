"""The ContextExtension kind: waits for its DataMixture, refuses specs that cannot fit,
runs a gang-restarted JobSet (or local torchrun), reports steps, loss and checkpoints."""

from __future__ import annotations

from typing import Any, ClassVar

from longreach.jobs import storage
from longreach.operator.contextextension import children
from longreach.operator.contextextension.plan import plan
from longreach.operator.contextextension.spec import (
    KIND,
    PLURAL,
    ContextExtensionSpec,
    TrainJobConfig,
)
from longreach.operator.datamixture.spec import KIND as DMIX_KIND
from longreach.operator.reconcile import Adapter, Dependency
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import ChildState


class ContextExtensionAdapter(Adapter):
    kind: ClassVar[str] = KIND
    plural: ClassVar[str] = PLURAL
    spec_model = ContextExtensionSpec
    marker: ClassVar[str] = "final/longreach.json"
    child_kind = ("jobset.x-k8s.io/v1alpha2", "JobSet")

    def dependencies(self, spec: ContextExtensionSpec) -> list[Dependency]:
        ref = spec.data.dataMixtureRef
        return [Dependency(DMIX_KIND, ref)] if ref else []

    def job_config(
        self, name: str, namespace: str, spec: ContextExtensionSpec, deps: dict[str, Any]
    ) -> TrainJobConfig:
        data_uri = spec.data.uri
        if data_uri is None:
            dep = deps[spec.data.dataMixtureRef or ""]
            data_uri = ((dep.get("status") or {}).get("result") or {}).get("uri") or dep["spec"][
                "output"
            ]["uri"]
        return TrainJobConfig(name=name, namespace=namespace, spec=spec, dataUri=data_uri)

    def children(
        self,
        name: str,
        namespace: str,
        spec: ContextExtensionSpec,
        config: Any,
        settings: OperatorSettings,
    ) -> list[dict[str, Any]]:
        return children.build(name, namespace, spec, config, settings.trainerImage)

    def observe(self, child: dict[str, Any]) -> ChildState:
        return observe_jobset(child)

    def local_command(self, config_path: str, spec: ContextExtensionSpec) -> list[str]:
        from longreach.jobs.train.launch import launch_command

        return launch_command(config_path, spec)

    def admit(self, spec: ContextExtensionSpec, settings: OperatorSettings) -> str | None:
        """Refuse, with the planner's numbers, a run that cannot fit its GPUs. Only when the
        model's config.json was read: an estimate from assumed shapes refuses nothing."""
        config = read_model_config(spec)
        if config is None:
            return None
        p = plan(spec, config)
        return None if p.fits else f"{p.message} (see `longreach plan`)"

    def extra_status(self, progress: dict[str, Any]) -> dict[str, Any]:
        checkpoint = progress.get("lastCheckpoint")
        return {"lastCheckpoint": checkpoint} if checkpoint else {}


def read_model_config(spec: ContextExtensionSpec) -> dict[str, Any] | None:
    """The base model's config.json, or None when it is not a readable folder (e.g. a hub name)."""
    if not spec.model.uri:
        return None
    try:
        return storage.read_json_if_exists(
            storage.join(spec.model.uri, "config.json"), spec.storage
        )
    except Exception:  # unreachable storage: the job reports it properly, with the field named
        return None


def observe_jobset(jobset: dict[str, Any]) -> ChildState:
    """Map JobSet conditions (Completed, Failed, Suspended) and restarts to our child state."""
    status = jobset.get("status") or {}
    attempts = int(status.get("restarts") or 0) + 1
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Completed" in conds:
        return ChildState("succeeded", conds["Completed"].get("message", ""), attempts)
    if "Failed" in conds:
        c = conds["Failed"]
        return ChildState(
            "failed", f"JobSet failed: {c.get('reason', '')}: {c.get('message', '')}", attempts
        )
    if "Suspended" in conds or (jobset.get("spec") or {}).get("suspend"):
        return ChildState("suspended", "", attempts)
    jobs = status.get("replicatedJobsStatus") or []
    if any(int(j.get("active") or 0) or int(j.get("ready") or 0) for j in jobs):
        return ChildState("running", f"attempt {attempts}", attempts)
    return ChildState("pending", "waiting for the training pods to start", attempts)
