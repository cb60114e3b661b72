"""The operator's entry module: kopf settings, and every kind of the registry registered."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from longreach.contract.common import GROUP, VERSION
from longreach.operator import metrics
from longreach.operator.executors import Executor, KubernetesExecutor, LocalExecutor
from longreach.operator.kinds import ADAPTERS
from longreach.operator.kube import Kube
from longreach.operator.reconcile import register
from longreach.operator.settings import OperatorSettings


def setup(settings: OperatorSettings) -> None:
    """Register every kind's handlers with kopf for the given settings."""
    kube = Kube()
    executor: Executor = (
        KubernetesExecutor(kube, settings)
        if settings.executor == "kubernetes"
        else LocalExecutor(settings.localWorkdir)
    )
    for adapter in ADAPTERS:
        register(adapter, executor, kube, settings)

        @kopf.on.delete(GROUP, VERSION, adapter.plural, id="forget", optional=True)
        async def forget(body: kopf.Body, kind: str = adapter.kind, **_: Any) -> None:
            metrics.forget(kind, f"{body.metadata.namespace}/{body.metadata.name}")

    @kopf.on.startup()
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Handler state lives in annotations: the status is ours and schema-checked.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = 20  # INFO: every phase transition becomes an event
        settings.watching.server_timeout = 300


def run(settings: OperatorSettings) -> None:
    """Run the operator until interrupted (standalone: no peering objects needed)."""
    import asyncio

    from prometheus_client import start_http_server

    kopf.configure(verbose=False, log_format=kopf.LogFormat.FULL)
    # Every resource's resync timer succeeds every few seconds; that is not news.
    for handler in logging.getLogger().handlers:
        handler.addFilter(
            lambda record: not record.getMessage().startswith("Timer 'resync' succeeded")
        )
    setup(settings)
    if settings.metricsPort:
        start_http_server(settings.metricsPort)
    liveness = f"http://0.0.0.0:{settings.healthPort}/healthz" if settings.healthPort else None
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=liveness,
        )
    )
