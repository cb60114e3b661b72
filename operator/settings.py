"""Operator settings: read once from the environment at start-up (the chart sets them)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from longreach.contract.common import Model, StorageSpec


class OperatorSettings(Model):
    """Everything the operator is configured with; nothing else reads os.environ."""

    executor: Literal["kubernetes", "local"] = "kubernetes"
    """kubernetes creates RayJobs, JobSets and Jobs; local runs the job modules as local processes."""
    namespaces: list[str] = []
    """Namespaces to watch; empty watches the whole cluster."""
    dataImage: str = "ghcr.io/longreach/data:0.1.0"
    """Default image of DataMixture jobs (Ray plus the data extra)."""
    trainerImage: str = "ghcr.io/longreach/trainer:0.1.0"
    """Default image of ContextExtension jobs (CUDA, torch, DeepSpeed, flash-attn)."""
    evalImage: str = "ghcr.io/longreach/eval:0.1.0"
    """Default image of NeedleEval jobs."""
    storage: StorageSpec = StorageSpec()
    """Default S3 endpoint, region and credentials Secret for resources that set none."""
    resyncSeconds: float = Field(default=10.0, gt=0)
    """How often each resource's status is recomputed from its children and progress.json."""
    localWorkdir: str = "./longreach-artifacts/.runs"
    """Local executor: where job configs, logs and exit codes live."""
    metricsPort: int = 8080
    """Port of the Prometheus /metrics endpoint; 0 disables it."""
    healthPort: int = 8081
    """Port of kopf's /healthz liveness endpoint; 0 disables it."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        """LONGREACH_* variables: EXECUTOR, NAMESPACES (comma-separated), DATA_IMAGE,
        TRAINER_IMAGE, EVAL_IMAGE, S3_ENDPOINT, S3_SECRET, S3_REGION, RESYNC_SECONDS,
        LOCAL_WORKDIR, METRICS_PORT, HEALTH_PORT."""
        env = dict(os.environ if env is None else env)
        get = lambda key: env.get(f"LONGREACH_{key}", "")  # noqa: E731
        values: dict[str, object] = {
            "storage": StorageSpec(
                endpoint=get("S3_ENDPOINT"), secretName=get("S3_SECRET"), region=get("S3_REGION")
            ),
            "namespaces": [n.strip() for n in get("NAMESPACES").split(",") if n.strip()],
        }
        for field, key in [
            ("executor", "EXECUTOR"),
            ("dataImage", "DATA_IMAGE"),
            ("trainerImage", "TRAINER_IMAGE"),
            ("evalImage", "EVAL_IMAGE"),
            ("resyncSeconds", "RESYNC_SECONDS"),
            ("localWorkdir", "LOCAL_WORKDIR"),
            ("metricsPort", "METRICS_PORT"),
            ("healthPort", "HEALTH_PORT"),
        ]:
            if get(key):
                values[field] = get(key)
        return cls.model_validate(values)
