"""The ContextExtension kind: waits for its DataMixture, refuses specs that cannot fit,
runs a gang-restarted JobSet (or local torchrun), reports steps, loss and checkpoints."""

from __future__ import annotations

from typing import Any, ClassVar

from longreach.contract import storage
from longreach.contract.common import parse_tokens
from longreach.contract.contextextension import (
    CONTRACT,
    ContextExtensionSpec,
    ContextExtensionStatus,
    TrainJobConfig,
    TrainResult,
)
from longreach.contract.datamixture import CONTRACT as DATAMIXTURE
from longreach.contract.datamixture import DataMixtureSpec, DataMixtureStatus
from longreach.operator.adapter import CONFIG_MAP, SERVICE, Adapter, ChildKind, Dependency, Resolved
from longreach.operator.contextextension import builders
from longreach.operator.contextextension.memory import plan
from longreach.operator.inputs import first_missing, model_folder
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import ChildState

JOBSET = ChildKind(
    "jobset.x-k8s.io/v1alpha2",
    "JobSet",
    "jobsets",
    install="install JobSet (v0.10 or later; kubectl apply --server-side -f the release's "
    "manifests.yaml from github.com/kubernetes-sigs/jobset), which brings the JobSet CRD",
)


class ContextExtensionAdapter(
    Adapter[ContextExtensionSpec, ContextExtensionStatus, TrainJobConfig]
):
    contract = CONTRACT
    job: ClassVar[ChildKind] = JOBSET
    children_kinds: ClassVar[tuple[ChildKind, ...]] = (CONFIG_MAP, SERVICE, JOBSET)

    def dependencies(self, spec: ContextExtensionSpec) -> list[Dependency]:
        ref = spec.data.dataMixtureRef
        return [Dependency(DATAMIXTURE.kind, ref)] if ref else []

    def job_config(
        self,
        name: str,
        namespace: str,
        uid: str,
        spec: ContextExtensionSpec,
        deps: dict[str, Resolved],
    ) -> TrainJobConfig:
        data_uri = spec.data.uri
        if data_uri is None:
            mixture = deps[str(spec.data.dataMixtureRef)]
            assert isinstance(mixture.spec, DataMixtureSpec)
            assert isinstance(mixture.status, DataMixtureStatus)
            result = mixture.status.result
            data_uri = result.uri if result else mixture.spec.output.uri
        return TrainJobConfig(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            dataUri=data_uri,
            checkpointing=planned_checkpointing(spec),
        )

    def build(
        self,
        name: str,
        namespace: str,
        spec: ContextExtensionSpec,
        config: TrainJobConfig,
        settings: OperatorSettings,
    ) -> list[dict[str, Any]]:
        return builders.build(name, namespace, spec, config, settings.trainerImage)

    def observe(self, job: dict[str, Any]) -> ChildState:
        return observe_jobset(job)

    def local_command(self, config_path: str, spec: ContextExtensionSpec) -> list[str]:
        return builders.local_command(config_path, spec)

    def admit(self, spec: ContextExtensionSpec, settings: OperatorSettings) -> str | None:
        """Refuse a model or data that are not there, and, with the planner's numbers, a run
        that cannot fit its GPUs (only when the model's config.json was read: an estimate from
        assumed shapes refuses nothing)."""
        checks = []
        if spec.model.uri:
            checks.append(model_folder("model.uri", spec.model.uri))
        if spec.data.uri:
            finished = "point it at a finished DataMixture output (with manifest.json)"
            checks.append(("data.uri", storage.join(spec.data.uri, "manifest.json"), finished))
        refusal = first_missing(checks, spec.storage, settings)
        if refusal:
            return refusal
        config = read_model_config(spec)
        if config is None:
            return None
        p = plan(spec, config)
        return None if p.fits else f"{p.message} (see `longreach plan`)"

    def summary(self, spec: ContextExtensionSpec, status: ContextExtensionStatus) -> list[str]:
        out = spec.output.uri
        res = status.result or TrainResult(uri=storage.join(out, "final"))
        losses = sorted(res.validationLoss.items(), key=lambda kv: parse_tokens(kv[0]))
        val = ", ".join(f"@{k} {v:.3f}" for k, v in losses)
        by_domain = ", ".join(f"{k} {v:.3f}" for k, v in sorted(res.validationLossByDomain.items()))
        return [
            f"final loss {res.loss:.3f}; validation loss by position: {val or 'n/a'}",
            *([f"validation loss by domain: {by_domain}"] if by_domain else []),
            f"model: {storage.join(out, 'final')}  metrics: {storage.join(out, 'metrics.jsonl')}",
        ]


def planned_checkpointing(spec: ContextExtensionSpec) -> str | None:
    """For activationCheckpointing auto, the planner's choice for the model's real shape; None
    otherwise, or when config.json cannot be read (the job then checkpoints every layer)."""
    if spec.deepspeed.checkpointing() != "auto":
        return None
    config = read_model_config(spec)
    return None if config is None else plan(spec, config).checkpointing


def read_model_config(spec: ContextExtensionSpec) -> dict[str, Any] | None:
    """The base model's config.json, or None when it is not a readable folder (e.g. a hub name)."""
    if not spec.model.uri:
        return None
    try:
        return storage.read_json_if_exists(
            storage.join(spec.model.uri, "config.json"), spec.storage.for_probes()
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
