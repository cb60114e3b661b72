"""The registry of kinds: one line per kind. Everything else (kopf handlers, the local runner,
the CRDs, the RBAC rules, the API paths) is derived from these adapters and their contracts."""

from __future__ import annotations

from longreach.operator.adapter import AnyAdapter
from longreach.operator.contextextension.adapter import ContextExtensionAdapter
from longreach.operator.datamixture.adapter import DataMixtureAdapter
from longreach.operator.needleeval.adapter import NeedleEvalAdapter

ADAPTERS: tuple[AnyAdapter, ...] = (
    DataMixtureAdapter(),
    ContextExtensionAdapter(),
    NeedleEvalAdapter(),
)
BY_KIND: dict[str, AnyAdapter] = {a.kind: a for a in ADAPTERS}
