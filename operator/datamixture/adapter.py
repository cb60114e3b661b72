"""The DataMixture kind: how its job is configured, built, observed and summarised."""

from __future__ import annotations

from typing import Any, ClassVar

from longreach.contract import storage
from longreach.contract.datamixture import (
    CONTRACT,
    DataMixtureSpec,
    DataMixtureStatus,
    MixtureJobConfig,
    MixtureResult,
)
from longreach.operator.adapter import CONFIG_MAP, Adapter, ChildKind, Resolved
from longreach.operator.datamixture import builders
from longreach.operator.inputs import first_missing
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import ChildState

RAYJOB = ChildKind(
    "ray.io/v1",
    "RayJob",
    "rayjobs",
    install="install KubeRay's operator (v1.5 or later; e.g. helm install kuberay-operator "
    "kuberay/kuberay-operator), which brings the RayJob CRD",
)


class DataMixtureAdapter(Adapter[DataMixtureSpec, DataMixtureStatus, MixtureJobConfig]):
    contract = CONTRACT
    job: ClassVar[ChildKind] = RAYJOB
    children_kinds: ClassVar[tuple[ChildKind, ...]] = (CONFIG_MAP, RAYJOB)

    def job_config(
        self, name: str, namespace: str, uid: str, spec: DataMixtureSpec, deps: dict[str, Resolved]
    ) -> MixtureJobConfig:
        return MixtureJobConfig(name=name, namespace=namespace, uid=uid, spec=spec)

    def build(
        self,
        name: str,
        namespace: str,
        spec: DataMixtureSpec,
        config: MixtureJobConfig,
        settings: OperatorSettings,
    ) -> list[dict[str, Any]]:
        return builders.build(name, namespace, spec, config, settings.dataImage)

    def observe(self, job: dict[str, Any]) -> ChildState:
        return observe_rayjob(job)

    def admit(self, spec: DataMixtureSpec, settings: OperatorSettings) -> str | None:
        """Refuse sources or a tokenizer that are not there: a RayJob retries every failure."""
        tok = spec.tokenizer.uri
        tokenizer = (
            tok if tok.rstrip("/").endswith(".json") else storage.join(tok, "tokenizer.json")
        )
        checks = [
            (f"sources[{i}].uri", s.uri, "point it at a corpus file, prefix or glob")
            for i, s in enumerate(spec.sources)
        ]
        checks.append(
            ("tokenizer.uri", tokenizer, "point it at a tokenizer.json or a folder with one")
        )
        return first_missing(checks, spec.storage, settings)

    def summary(self, spec: DataMixtureSpec, status: DataMixtureStatus) -> list[str]:
        res = status.result or MixtureResult(uri=spec.output.uri)
        strategy = spec.strategy
        est, tok = res.longDocumentShare.byEstimate, res.longDocumentShare.byTokenizer
        shares = ", ".join(
            f"{_short(d)} {s:.3f}"
            + (f" ({res.targetShares[d]:.3f})" if d in res.targetShares else "")
            for d, s in sorted(res.domainShares.items())
        )
        lines = [
            f"{res.tokens:,} tokens (of the tokenizer, BOS included) in {res.chunks} chunks; "
            f"totalTokens {spec.totalTokens:,}",
            f"long-document tokens (documents of {strategy.shortDocumentTokens:,}+ estimated tokens), "
            f"before -> after: by estimate (characters / {strategy.charsPerToken}) "
            f"{est.before:.0%} -> {est.after:.0%}; by tokenizer {tok.before:.0%} "
            f"(estimated from a sample) -> {tok.after:.0%}",
            f"shares (target): {shares}",
        ]
        raised = {d: k for d, k in res.keepProbability.items() if k.effective > k.requested}
        if raised:
            lines.append(
                "short-document keep probability raised to fill budgets: "
                + ", ".join(
                    f"{_short(d)} {k.requested:.3g} -> {k.effective:.3g}"
                    for d, k in sorted(raised.items())
                )
            )
        uri = res.uri
        lines.append(
            f"plots: {storage.join(uri, 'domains.png')}  {storage.join(uri, 'lengths.png')}"
        )
        return lines


def _short(domain: str) -> str:
    return domain.removeprefix("RedPajama")


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
