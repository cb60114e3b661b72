"""What the operator and people see: `progress.json` (the kind's TrainReport, copied into the
resource's status) and `metrics.jsonl` (one line per optimizer step). Only rank 0 writes;
other ranks keep the same state and write nothing."""

from __future__ import annotations

import json
import time
from typing import Any

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.contextextension import (
    CheckpointRef,
    TrainProgress,
    TrainReport,
    TrainResult,
)
from longreach.contract.report import ReportWriter


class Reporter:
    def __init__(
        self, output: str, store: StorageSpec | None, *, enabled: bool, interval: float = 5.0
    ):
        self.output = output
        self.store = store
        self.enabled = enabled
        self.writer = ReportWriter(output, store, TrainReport(), interval=interval, enabled=enabled)
        self.metrics: list[dict[str, Any]] = []
        self._flushed = 0.0

    @property
    def progress(self) -> TrainProgress:
        return self.writer.report.progress

    def running(self, message: str) -> None:
        self.writer.running(message)

    def failed(self, error: str) -> None:
        self.writer.failed(error)

    def succeeded(self, result: TrainResult, progress: TrainProgress | None = None) -> None:
        done = progress or self.progress.model_copy(update={"percent": 100.0})
        self.writer.succeeded(f"trained {done.step} steps", progress=done, result=result)

    def checkpointed(self, checkpoint: CheckpointRef) -> None:
        """A checkpoint is complete: every later report names it."""
        self.writer.update(lastCheckpoint=checkpoint)

    def resume_metrics(self, step: int) -> None:
        """Keep the metric lines up to a resumed step; later ones are about to be redone."""
        if not self.enabled:
            return
        fs, path = storage.filesystem(storage.join(self.output, "metrics.jsonl"), self.store)
        if fs.exists(path):
            with fs.open(path, "r") as f:
                lines = [json.loads(line) for line in f if line.strip()]
            self.metrics = [m for m in lines if m.get("step", 0) <= step]

    def step(self, metrics: dict[str, Any], progress: TrainProgress) -> None:
        """Record one optimizer step; progress.json and metrics.jsonl are rewritten at the
        writer's interval (S3 has no append), and always at checkpoints and the end."""
        self.metrics.append(metrics)
        if self.enabled and time.time() - self._flushed >= self.writer.interval:
            self.flush_metrics()
        message = f"step {progress.step}/{progress.totalSteps}, loss {progress.loss:.4f}"
        self.writer.running(message, force=False, progress=progress)

    def flush_metrics(self) -> None:
        if not self.enabled:
            return
        self._flushed = time.time()
        body = "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.metrics)
        storage.write_bytes(storage.join(self.output, "metrics.jsonl"), body.encode(), self.store)
