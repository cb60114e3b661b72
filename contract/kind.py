"""What defines a kind on the ground floor: its models, its job and its output marker.

Each kind module ends with one `KindContract`; the operator's registry (operator/kinds.py)
pairs it with the kind's adapter, and everything else (CRDs, RBAC, the local runner, the
job commands) is derived from those two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from longreach.contract.common import Model, Placement, StatusBase
from longreach.contract.ownership import LEASE_SECONDS, Owner
from longreach.contract.report import Report


class JobConfig(Model):
    """The fields every job's config file starts with: whose work it is, and the spec."""

    kind: ClassVar[str] = ""
    """The kind this config belongs to (set by each kind's subclass)."""
    output_format: ClassVar[int] = 1
    """The version of the output's layout; a new one makes every old output another config."""
    run_only: ClassVar[dict[str, Any]] = {}
    """Fields (pydantic `exclude` form) that change how the job runs, not what it writes; the
    placement fields of the spec and the config's own bookkeeping are always left out."""

    name: str
    """The resource's name."""
    namespace: str = "default"
    """The resource's namespace (`local` for `longreach run`)."""
    uid: str = ""
    """The resource's UID; empty for a local run. With kind, namespace and name, the owner of
    the output."""
    leaseSeconds: float = Field(default=LEASE_SECONDS, gt=0)
    """How long the job's lease on its output lasts without a heartbeat: a second writer of the
    same resource waits this long for a killed one before taking over."""
    spec: Placement
    """The resource's spec, defaults filled in (narrowed by each kind)."""

    def owner(self) -> Owner:
        return Owner(kind=self.kind, namespace=self.namespace, name=self.name, uid=self.uid)

    def output_config(self) -> dict[str, Any]:
        """What decides the output's bytes: the spec without placement and run-only fields,
        and the config's resolved inputs (e.g. the data or model URI)."""
        placement = {f: True for f in Placement.model_fields}
        spec_skip = {**placement, "output": True, **self.run_only.get("spec", {})}
        own = {"name", "namespace", "uid", "leaseSeconds", "spec"} | {
            k for k in self.run_only if k != "spec"
        }
        return {
            "kind": self.kind,
            "format": self.output_format,
            "spec": self.spec.model_dump(by_alias=True, mode="json", exclude=spec_skip),
            **self.model_dump(by_alias=True, mode="json", exclude=own),
        }


def column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    """A printer column of `kubectl get` (additionalPrinterColumns)."""
    out: dict[str, Any] = {
        "name": name,
        "type": type_,
        "jsonPath": path,
        "description": description,
    }
    return {**out, "priority": priority} if priority else out


@dataclass(frozen=True)
class KindContract:
    """A resource kind as both sides see it."""

    kind: str
    """The Kubernetes kind, e.g. DataMixture."""
    plural: str
    """The resource's plural name, e.g. datamixtures."""
    short_name: str
    """The kubectl short name, e.g. dmix."""
    spec: type[Placement]
    """The spec model (the CRD's spec schema)."""
    status: type[StatusBase]
    """The status model (the CRD's status schema)."""
    report: type[Report]
    """The model of the job's progress.json."""
    job_config: type[JobConfig]
    """The model of the job's config file."""
    job_module: str
    """The job's entry module: `python -m <job_module> --config PATH`."""
    marker: str
    """The output file written last; its existence means the output is committed."""
    columns: tuple[dict[str, Any], ...] = ()
    """Printer columns besides Phase, Message and Age."""
