"""Where a resource's job runs: Kubernetes children, or local processes.

Both are restart-safe: the Kubernetes executor finds its children by deterministic name,
the local one keeps the pid and the exit code in files, so an operator restart neither
duplicates nor loses a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import kopf

from longreach.contract.kind import JobConfig
from longreach.operator import kueue
from longreach.operator.adapter import AnyAdapter
from longreach.operator.kube import Kube
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import ChildState


class Executor(Protocol):
    """Where a resource's job runs."""

    async def ensure(
        self, adapter: AnyAdapter, body: kopf.Body, spec: Any, config: JobConfig
    ) -> ChildState:
        """The job's state, starting it (and its children) first if it does not exist."""
        ...

    async def suspend(
        self, adapter: AnyAdapter, body: kopf.Body, suspend: bool, child: ChildState
    ) -> None:
        """Suspend (stop, resumable) or resume the job `child` (its state as `ensure` read it)."""
        ...

    async def stop(self, adapter: AnyAdapter, body: kopf.Body) -> None:
        """Stop the job for good."""
        ...

    async def discard(self, adapter: AnyAdapter, body: kopf.Body) -> None:
        """Remove a finished job, so that the next `ensure` starts a new one."""
        ...


class KubernetesExecutor:
    """Creates the children the adapter builds (ConfigMap first, the job last), owned by the resource."""

    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube, self.settings = kube, settings

    async def ensure(
        self, adapter: AnyAdapter, body: kopf.Body, spec: Any, config: JobConfig
    ) -> ChildState:
        name, namespace = body.metadata.name, body.metadata.namespace
        objs = adapter.build(name, namespace, spec, config, self.settings)
        main = objs[-1]
        if (body.status or {}).get("phase"):  # children may exist: look first
            existing = await self.kube.get(
                main["apiVersion"], main["kind"], namespace, main["metadata"]["name"]
            )
            if existing is not None and existing["metadata"].get("deletionTimestamp"):
                return ChildState("pending", "waiting for the previous job to be deleted")
            if existing is not None:
                return await self.queued(adapter, namespace, spec, observed(adapter, existing))
        # A fresh resource: create everything at once (a pod waits for its ConfigMap anyway);
        # 409 means it exists already, e.g. after an operator restart.
        for obj in objs:
            kopf.append_owner_reference(obj, owner=body)
        results = await asyncio.gather(*(self.kube.create(obj) for obj in objs))
        existing, created = results[-1]
        child = replace(observed(adapter, existing), created=created)
        return await self.queued(adapter, namespace, spec, child)

    async def queued(
        self, adapter: AnyAdapter, namespace: str, spec: Any, child: ChildState
    ) -> ChildState:
        """A job in a Kueue queue that Kueue holds suspended while the spec says run: `queued`,
        with the queue and Kueue's reason. (Suspended on purpose, it stays `suspended`: its
        Workload is inactive.)"""
        if not spec.queueName or spec.suspend or child.state != "suspended":
            return child
        kind = adapter.job.kind
        wl = None if child.created else await kueue.workload(self.kube, namespace, child.uid)
        if wl is not None and not kueue.is_active(wl):
            return child
        message = kueue.waiting_message(spec.queueName, namespace, kind, wl, child.created)
        return replace(child, state="queued", message=message)

    async def suspend(
        self, adapter: AnyAdapter, body: kopf.Body, suspend: bool, child: ChildState
    ) -> None:
        """Suspend or resume the job; a queued job through its Kueue Workload (Kueue resumes
        an admitted job that anyone else suspends)."""
        job, namespace, name = adapter.job, body.metadata.namespace, body.metadata.name
        if body.spec.get("queueName") and child.uid:
            wl = await kueue.workload(self.kube, namespace, child.uid)
            if wl is not None:
                await kueue.set_active(self.kube, wl, not suspend)
                return
        await self.kube.patch(
            job.api_version, job.kind, namespace, name, {"spec": {"suspend": suspend}}
        )

    async def stop(self, adapter: AnyAdapter, body: kopf.Body) -> None:
        job = adapter.job
        await self.kube.delete(
            job.api_version, job.kind, body.metadata.namespace, body.metadata.name
        )

    async def discard(self, adapter: AnyAdapter, body: kopf.Body) -> None:
        await self.stop(adapter, body)  # the ConfigMap and Service stay: the spec is immutable


def observed(adapter: AnyAdapter, job: dict[str, Any]) -> ChildState:
    """The adapter's reading of the job object, with the object's creation time."""
    created = job["metadata"].get("creationTimestamp") or ""
    since = (
        datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        if created
        else 0.0
    )
    return replace(adapter.observe(job), since=since, uid=job["metadata"].get("uid", ""))


class LocalExecutor:
    """Runs the job module as a local process group; state lives in files under `workdir`."""

    def __init__(self, workdir: str) -> None:
        self.workdir = Path(workdir)

    def folder(self, adapter: AnyAdapter, body: kopf.Body) -> Path:
        return self.workdir / body.metadata.namespace / adapter.plural / body.metadata.name

    async def ensure(
        self, adapter: AnyAdapter, body: kopf.Body, spec: Any, config: JobConfig
    ) -> ChildState:
        d = self.folder(adapter, body)
        if (d / "suspended").exists():
            return ChildState("suspended", attempts=_attempts(d))
        if not (d / "pid").exists():
            self.start(d, adapter.local_command(str(d / "config.json"), spec), config)
            return ChildState("running", "started a local process", attempts=_attempts(d))
        return state_of(d)

    @staticmethod
    def start(d: Path, command: list[str], config: JobConfig) -> None:
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(config.model_dump_json(by_alias=True, indent=2))
        (d / "exitcode").unlink(missing_ok=True)
        # sh records the exit code after the job ends, so state survives an operator restart.
        script = f"{shlex.join(command)} >> {shlex.quote(str(d / 'job.log'))} 2>&1; echo $? > {shlex.quote(str(d / 'exitcode'))}"
        env = {**os.environ, "PYTHONSAFEPATH": "1"}
        proc = subprocess.Popen(["sh", "-c", script], start_new_session=True, env=env, cwd=d)
        (d / "pid").write_text(str(proc.pid))
        (d / "attempts").write_text(str(_attempts(d) + 1))

    async def suspend(
        self, adapter: AnyAdapter, body: kopf.Body, suspend: bool, child: ChildState
    ) -> None:
        d = self.folder(adapter, body)
        if suspend:
            (d / "suspended").touch()
            _kill(d)
            (d / "pid").unlink(missing_ok=True)
        else:
            (d / "suspended").unlink(missing_ok=True)

    async def stop(self, adapter: AnyAdapter, body: kopf.Body) -> None:
        _kill(self.folder(adapter, body))

    async def discard(self, adapter: AnyAdapter, body: kopf.Body) -> None:
        d = self.folder(adapter, body)
        _kill(d)
        for name in ("pid", "exitcode"):
            (d / name).unlink(missing_ok=True)


def state_of(d: Path) -> ChildState:
    """The state of a local job from its files: exit code, else whether the pid lives."""
    return replace(_state_of(d), since=(d / "pid").stat().st_mtime if (d / "pid").exists() else 0.0)


def _state_of(d: Path) -> ChildState:
    attempts = _attempts(d)
    if (d / "exitcode").exists():
        code = (d / "exitcode").read_text().strip()
        if code == "0":
            return ChildState("succeeded", attempts=attempts)
        return ChildState("failed", f"exit code {code}: {_tail(d / 'job.log')}", attempts)
    pid = int((d / "pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ChildState("failed", "the job's process vanished without an exit code", attempts)
    return ChildState("running", attempts=attempts)


def _attempts(d: Path) -> int:
    f = d / "attempts"
    return int(f.read_text()) if f.exists() else 0


def _kill(d: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.killpg(int((d / "pid").read_text()), signal.SIGTERM)


def _tail(log: Path, lines: int = 3) -> str:
    if not log.exists():
        return ""
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])[-500:]
