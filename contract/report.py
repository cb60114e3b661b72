"""`progress.json`: what a job says about itself, typed on both ends.

Each kind's report is a `Report` subclass: the shared `state`, `message` and `error`, plus the
kind's own fields (progress, result, and e.g. the last checkpoint). Those own fields have the
names and types of the kind's status fields, so the operator copies them over as they are
(`status_fields`). Jobs write through `ReportWriter`; the operator, the local runner and a
dependent resource read through `read_report` with the same model.
"""

from __future__ import annotations

import time
from typing import Any, Generic, Literal, TypeVar

from pydantic import ConfigDict

from longreach.contract import storage
from longreach.contract.common import Model, StorageSpec

JobState = Literal["running", "succeeded", "failed", "stopped"]
REPORT_FILE = "progress.json"


class Report(Model):
    """The fields every job's progress.json has. Unknown keys are ignored on reading, so an
    operator reads reports of older and newer jobs."""

    model_config = ConfigDict(extra="ignore")

    state: JobState = "running"
    """running, succeeded, failed, or stopped (the job was told to stop and did)."""
    message: str = ""
    """One line on what the job is doing, or why it ended."""
    error: str = ""
    """The whole error, when state is failed."""
    badInput: bool = False
    """The failure is bad input (exit code 2): retrying cannot help, so nothing retries it."""
    warnings: list[str] = []
    """What the user should know although the job goes on (the operator's Warning condition)."""
    updatedAt: float = 0
    """When the job wrote this (seconds since the epoch)."""
    result: Model | None = None
    """What the job produced, once it succeeded (each kind narrows the type)."""

    def percent(self) -> float:
        """How far the job is, 0-100 (each kind's report says where it keeps that)."""
        return 0.0

    def status_fields(self, *, with_result: bool) -> dict[str, Any]:
        """The kind's own fields in the status's wire form, unset ones left out; the result
        only `with_result` (the operator sets it once the output is committed)."""
        shared = set(Report.model_fields) - {"result"}
        own = set(type(self).model_fields) - shared - (set() if with_result else {"result"})
        return self.model_dump(by_alias=True, mode="json", include=own, exclude_none=True)


R = TypeVar("R", bound=Report)


def report_uri(output_uri: str) -> str:
    return storage.join(output_uri, REPORT_FILE)


def read_report(output_uri: str, model: type[R], store: StorageSpec | None = None) -> R | None:
    """The report next to `output_uri`, parsed with the kind's model; None when there is none."""
    raw = storage.read_json_if_exists(report_uri(output_uri), store)
    return None if raw is None else model.model_validate(raw)


class ReportWriter(Generic[R]):
    """Keeps a job's report and writes it to progress.json: at once for state changes, at most
    every `interval` seconds for progress. A disabled writer (ranks other than 0) keeps the
    report but writes nothing."""

    def __init__(
        self,
        output_uri: str,
        store: StorageSpec | None,
        report: R,
        *,
        interval: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.uri, self.store, self.report = report_uri(output_uri), store, report
        self.interval, self.enabled = interval, enabled
        self._written = 0.0

    def update(self, *, force: bool = False, **fields: Any) -> None:
        """Change fields of the report; write it when forced or when the interval has passed."""
        self.report = self.report.model_copy(update=fields)
        if force or time.time() - self._written >= self.interval:
            self.flush()

    def flush(self) -> None:
        if not self.enabled:
            return
        self._written = time.time()
        self.report = self.report.model_copy(update={"updatedAt": self._written})
        storage.write_bytes(self.uri, self.report.model_dump_json(indent=2).encode(), self.store)

    def running(self, message: str, *, force: bool = True, **fields: Any) -> None:
        self.update(force=force, state="running", message=message, error="", **fields)

    def succeeded(self, message: str, **fields: Any) -> None:
        self.update(force=True, state="succeeded", message=message, error="", **fields)

    def failed(self, error: str, *, bad_input: bool = False, **fields: Any) -> None:
        first = error.strip().splitlines()[0][:300] if error.strip() else "failed"
        self.update(
            force=True, state="failed", message=first, error=error, badInput=bad_input, **fields
        )

    def stopped(self, message: str) -> None:
        self.update(force=True, state="stopped", message=message, error="")
