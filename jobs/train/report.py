"""What the operator and people see: `progress.json` (copied into the resource's status) and
`metrics.jsonl` (one line per optimizer step). Only rank 0 writes; other ranks get a no-op."""

from __future__ import annotations

import json
import time
from typing import Any

from longreach.jobs import storage
from longreach.operator.common import StorageSpec
from longreach.operator.contextextension.spec import CheckpointRef, TrainProgress, TrainResult


class Reporter:
    def __init__(
        self, output: str, store: StorageSpec | None, *, enabled: bool, interval: float = 5.0
    ):
        self.output = output
        self.store = store
        self.enabled = enabled
        self.progress = storage.Progress(output, store, interval=interval)
        self.state = TrainProgress()
        self.checkpoint = CheckpointRef()
        self.metrics: list[dict[str, Any]] = []
        self._flushed = 0.0

    def running(self, message: str, force: bool = True) -> None:
        self._write("running", message, force=force)

    def failed(self, error: str) -> None:
        self._write(
            "failed", error.splitlines()[0][:300] if error else "failed", force=True, error=error
        )

    def succeeded(self, result: TrainResult) -> None:
        self._write(
            "succeeded", f"trained {self.state.step} steps", force=True, result=result.wire()
        )

    def _write(self, state: str, message: str, *, force: bool, **extra: Any) -> None:
        if not self.enabled:
            return
        self.progress.report(
            force=force,
            state=state,
            message=message,
            **self.state.wire(),
            lastCheckpoint=self.checkpoint.wire(),
            **extra,
        )

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
        reporter's interval (S3 has no append), and always at checkpoints and the end."""
        if not self.enabled:
            return
        self.metrics.append(metrics)
        self.state = progress
        if time.time() - self._flushed >= self.progress.interval:
            self.flush_metrics()
        self.running(
            f"step {progress.step}/{progress.totalSteps}, loss {progress.loss:.4f}", force=False
        )

    def flush_metrics(self) -> None:
        if not self.enabled:
            return
        self._flushed = time.time()
        body = "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.metrics)
        storage.write_bytes(storage.join(self.output, "metrics.jsonl"), body.encode(), self.store)
