"""The NeedleEval kind: waits for its ContextExtension, runs the grid in a Job (or locally)."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from longreach.operator.contextextension.spec import KIND as CTX_KIND
from longreach.operator.needleeval import children
from longreach.operator.needleeval.spec import KIND, PLURAL, NeedleEvalSpec, NeedleJobConfig
from longreach.operator.reconcile import Adapter, Dependency
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import ChildState


class NeedleEvalAdapter(Adapter):
    kind: ClassVar[str] = KIND
    plural: ClassVar[str] = PLURAL
    spec_model = NeedleEvalSpec
    marker: ClassVar[str] = "results.json"
    child_kind = ("batch/v1", "Job")

    def dependencies(self, spec: NeedleEvalSpec) -> list[Dependency]:
        ref = spec.model.contextExtensionRef
        return [Dependency(CTX_KIND, ref)] if ref else []

    def job_config(
        self, name: str, namespace: str, spec: NeedleEvalSpec, deps: dict[str, Any]
    ) -> NeedleJobConfig:
        model_uri, training_length = spec.model.uri or spec.model.name, None
        if model_uri is None:
            dep = deps[spec.model.contextExtensionRef or ""]
            result = (dep.get("status") or {}).get("result") or {}
            model_uri = (
                result.get("finalUri") or f"{dep['spec']['output']['uri'].rstrip('/')}/final"
            )
            training_length = dep["spec"]["sequenceLength"]
        return NeedleJobConfig(
            name=name,
            namespace=namespace,
            spec=spec,
            modelUri=model_uri,
            trainingLength=training_length,
        )

    def children(
        self,
        name: str,
        namespace: str,
        spec: NeedleEvalSpec,
        config: Any,
        settings: OperatorSettings,
    ) -> list[dict[str, Any]]:
        return children.build(name, namespace, spec, config, settings.evalImage)

    def observe(self, child: dict[str, Any]) -> ChildState:
        return observe_job(child)

    def local_command(self, config_path: str, spec: NeedleEvalSpec) -> list[str]:
        return [sys.executable, "-P", "-m", "longreach.jobs.needle", "--config", config_path]


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
