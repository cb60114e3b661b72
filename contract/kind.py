"""What defines a kind on the ground floor: its models, its job and its output marker.

Each kind module ends with one `KindContract`; the operator's registry (operator/kinds.py)
pairs it with the kind's adapter, and everything else (CRDs, RBAC, the local runner, the
job commands) is derived from those two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longreach.contract.common import Model, Placement, StatusBase
from longreach.contract.report import Report


class JobConfig(Model):
    """The fields every job's config file starts with: whose work it is, and the spec."""

    name: str
    """The resource's name."""
    namespace: str = "default"
    """The resource's namespace."""
    spec: Placement
    """The resource's spec, defaults filled in (narrowed by each kind)."""


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
