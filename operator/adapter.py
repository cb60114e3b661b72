"""The adapter contract: everything the shared reconcile flow, the local runner and the
generators (CRDs, RBAC) need to know about a kind, declared in one class.

A kind's operator package holds one `Adapter` subclass and its pure builders; the registry
(operator/kinds.py) lists one instance per kind. The models come from the kind's contract.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from longreach.contract.common import Placement, StatusBase
from longreach.contract.kind import JobConfig, KindContract

if TYPE_CHECKING:
    from longreach.operator.settings import OperatorSettings
    from longreach.operator.status import ChildState


@dataclass(frozen=True)
class ChildKind:
    """A kind of object the operator creates for a resource."""

    api_version: str
    kind: str
    plural: str
    install: str = ""
    """What to install when the cluster does not serve this kind (a CRD of another project)."""

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rsplit("/", 1)[0] if "/" in self.api_version else ""


CONFIG_MAP = ChildKind("v1", "ConfigMap", "configmaps")
SERVICE = ChildKind("v1", "Service", "services")


@dataclass(frozen=True)
class Dependency:
    """Another Longreach resource (same namespace) this one needs to have succeeded."""

    kind: str
    name: str


@dataclass(frozen=True)
class Resolved:
    """A dependency that succeeded: its spec and status, parsed by its kind's models."""

    spec: Placement
    status: StatusBase


SpecT = TypeVar("SpecT", bound=Placement)
StatusT = TypeVar("StatusT", bound=StatusBase)
ConfigT = TypeVar("ConfigT", bound=JobConfig)


class Adapter(ABC, Generic[SpecT, StatusT, ConfigT]):
    """What differs between kinds. Subclasses set the class attributes and the abstract methods."""

    contract: ClassVar[KindContract]
    """The kind's models, job module and output marker."""
    job: ClassVar[ChildKind]
    """The child that runs the work (RayJob, JobSet, Job); named like the resource."""
    children_kinds: ClassVar[tuple[ChildKind, ...]]
    """Every kind of object `build` returns (the RBAC rules are generated from these)."""

    @property
    def kind(self) -> str:
        return self.contract.kind

    @property
    def plural(self) -> str:
        return self.contract.plural

    def parse(self, spec: dict[str, Any]) -> SpecT:
        """The spec model of a raw spec (raises pydantic's ValidationError)."""
        return self.contract.spec.model_validate(spec)  # type: ignore[return-value]

    def dependencies(self, spec: SpecT) -> list[Dependency]:
        """The resources this one waits for."""
        return []

    @abstractmethod
    def job_config(
        self, name: str, namespace: str, uid: str, spec: SpecT, deps: dict[str, Resolved]
    ) -> ConfigT:
        """The job's config file, with the dependencies' outputs resolved."""

    @abstractmethod
    def build(
        self, name: str, namespace: str, spec: SpecT, config: ConfigT, settings: OperatorSettings
    ) -> list[dict[str, Any]]:
        """Pure builders: the ConfigMap first, the job object (`job`) last."""

    @abstractmethod
    def observe(self, job: dict[str, Any]) -> ChildState:
        """The state of the job object, as its controller reports it."""

    def local_command(self, config_path: str, spec: SpecT) -> list[str]:
        """The command that runs the job on this machine (local executor, `longreach run`)."""
        return [sys.executable, "-P", "-m", self.contract.job_module, "--config", config_path]

    def admit(self, spec: SpecT, settings: OperatorSettings) -> str | None:
        """A reason to refuse the spec before any work starts (e.g. it cannot fit), or None."""
        return None

    def output_uri(self, spec: SpecT) -> str:
        return str(spec.output.uri)  # type: ignore[attr-defined]

    @abstractmethod
    def summary(self, spec: SpecT, status: StatusT) -> list[str]:
        """What `longreach run` prints for a finished resource: the numbers and the files."""


AnyAdapter = Adapter[Any, Any, Any]
