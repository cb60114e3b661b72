"""The operator's entry module: kopf settings, and every kind of the registry registered."""

from __future__ import annotations

import logging
from typing import Any

import kopf

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

    @kopf.on.startup()
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = 20  # INFO: every change of what the status says is an event
        settings.watching.server_timeout = 300


def run(settings: OperatorSettings) -> None:
    """Run the operator until interrupted (standalone: no peering objects needed)."""
    import asyncio

    from prometheus_client import start_http_server

    kopf.configure(verbose=False, log_format=kopf.LogFormat.FULL)
    # Every event of every resource succeeds; that is not news.
    quiet = ("Handler 'reconcile' succeeded",)
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: not record.getMessage().startswith(quiet))
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
