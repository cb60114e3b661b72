"""The NeedleEval kind: waits for its ContextExtension, runs the grid in a Job (or locally)."""

from __future__ import annotations

from typing import Any, ClassVar

from longreach.contract import storage
from longreach.contract.contextextension import CONTRACT as CONTEXTEXTENSION
from longreach.contract.contextextension import ContextExtensionSpec, ContextExtensionStatus
from longreach.contract.needleeval import (
    CONTRACT,
    EvalResult,
    NeedleEvalSpec,
    NeedleEvalStatus,
    NeedleJobConfig,
)
from longreach.operator.adapter import CONFIG_MAP, Adapter, ChildKind, Dependency, Resolved
from longreach.operator.inputs import first_missing, model_folder
from longreach.operator.needleeval import builders
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import ChildState

JOB = ChildKind("batch/v1", "Job", "jobs")


class NeedleEvalAdapter(Adapter[NeedleEvalSpec, NeedleEvalStatus, NeedleJobConfig]):
    contract = CONTRACT
    job: ClassVar[ChildKind] = JOB
    children_kinds: ClassVar[tuple[ChildKind, ...]] = (CONFIG_MAP, JOB)

    def dependencies(self, spec: NeedleEvalSpec) -> list[Dependency]:
        ref = spec.model.contextExtensionRef
        return [Dependency(CONTEXTEXTENSION.kind, ref)] if ref else []

    def job_config(
        self, name: str, namespace: str, uid: str, spec: NeedleEvalSpec, deps: dict[str, Resolved]
    ) -> NeedleJobConfig:
        model_uri, training_length = spec.model.uri or spec.model.name, None
        if model_uri is None:
            run = deps[str(spec.model.contextExtensionRef)]
            assert isinstance(run.spec, ContextExtensionSpec)
            assert isinstance(run.status, ContextExtensionStatus)
            result = run.status.result
            model_uri = result.uri if result else storage.join(run.spec.output.uri, "final")
            training_length = run.spec.sequenceLength
        return NeedleJobConfig(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            modelUri=model_uri,
            trainingLength=training_length,
        )

    def build(
        self,
        name: str,
        namespace: str,
        spec: NeedleEvalSpec,
        config: NeedleJobConfig,
        settings: OperatorSettings,
    ) -> list[dict[str, Any]]:
        return builders.build(name, namespace, spec, config, settings.evalImage)

    def observe(self, job: dict[str, Any]) -> ChildState:
        return observe_job(job)

    def admit(self, spec: NeedleEvalSpec, settings: OperatorSettings) -> str | None:
        """Refuse a model folder or haystack that are not there."""
        checks = [("haystack.uri", spec.haystack.uri, "point it at a folder or glob of .txt files")]
        if spec.model.uri:
            checks.insert(0, model_folder("model.uri", spec.model.uri))
        return first_missing(checks, spec.storage, settings)

    def summary(self, spec: NeedleEvalSpec, status: NeedleEvalStatus) -> list[str]:
        res = status.result or EvalResult(uri=spec.output.uri)
        return [
            f"needle score {res.score:.1f} (paper's scorer: {res.paperScore:.1f})",
            f"heatmap: {storage.join(res.uri, 'heatmap.png')}  "
            f"results: {storage.join(res.uri, 'results.json')}",
        ]


def observe_job(job: dict[str, Any]) -> ChildState:
    """Map batch/v1 Job conditions and counters to our child state."""
    status = job.get("status") or {}
    attempts = (
        int(status.get("failed") or 0)
        + int(status.get("active") or 0)
        + int(status.get("succeeded") or 0)
    )
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conds:
        return ChildState("succeeded", "", attempts)
    if "Failed" in conds:
        c = conds["Failed"]
        return ChildState(
            "failed", f"Job failed: {c.get('reason', '')}: {c.get('message', '')}", attempts
        )
    if "Suspended" in conds or (job.get("spec") or {}).get("suspend"):
        return ChildState("suspended", "", attempts)
    if int(status.get("active") or 0):
        return ChildState("running", "", attempts)
    return ChildState("pending", "waiting for the eval pod to start", attempts)
