"""The reconcile loop shared by the three kinds, and the kopf registration.

For each resource: validate the spec, wait for dependencies, create the children that
should exist (create-if-absent, deterministic names, owner references), then recompute the
status from the child and the job's progress.json. A timer repeats the last step so a
vanished, stuck or finished child is noticed without any event.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from longreach.jobs import storage
from longreach.operator import metrics
from longreach.operator.common import API_VERSION, GROUP, VERSION, Model
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import (
    TERMINAL,
    ChildState,
    Observation,
    changed,
    dependency_message,
    phase_of,
    status_patch,
)


@dataclass(frozen=True)
class Dependency:
    """Another Longreach resource this one needs to have succeeded."""

    kind: str
    name: str


class Adapter:
    """What differs between kinds. Subclasses fill the class attributes and methods."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    spec_model: ClassVar[type[Model]]
    marker: ClassVar[str]  # output file whose existence means the output is committed

    def dependencies(self, spec: Any) -> list[Dependency]:
        return []

    def job_config(
        self, name: str, namespace: str, spec: Any, deps: dict[str, dict[str, Any]]
    ) -> Model:
        raise NotImplementedError

    def children(
        self, name: str, namespace: str, spec: Any, config: Model, settings: OperatorSettings
    ) -> list[dict[str, Any]]:
        """Pure builders: the ConfigMap first, the job object (RayJob, JobSet, Job) last."""
        raise NotImplementedError

    def observe(self, child: dict[str, Any]) -> ChildState:
        raise NotImplementedError

    def local_command(self, config_path: str, spec: Any) -> list[str]:
        raise NotImplementedError

    def admit(self, spec: Any, settings: OperatorSettings) -> str | None:
        """A reason to refuse the spec before any work starts (e.g. it cannot fit), or None."""
        return None

    def extra_status(self, progress: dict[str, Any]) -> dict[str, Any]:
        """Kind-specific status fields taken from progress.json (e.g. lastCheckpoint)."""
        return {}

    def output_uri(self, spec: Any) -> str:
        return str(spec.output.uri)


def with_defaults(spec: Any, settings: OperatorSettings) -> Any:
    """The operator's storage defaults under any field the resource left empty."""
    merged = {
        k: getattr(spec.storage, k) or getattr(settings.storage, k)
        for k in ("endpoint", "secretName", "region")
    }
    return spec.model_copy(update={"storage": spec.storage.model_copy(update=merged)})


def read_progress(uri: str, spec: Any) -> dict[str, Any]:
    try:
        return storage.read_json_if_exists(storage.join(uri, "progress.json"), spec.storage) or {}
    except Exception as e:  # unreachable storage must not break the status; say so instead
        return {"message": f"cannot read progress.json: {e}"}


class Reconciler:
    """Runs the reconcile flow for one kind with one executor."""

    def __init__(
        self, adapter: Adapter, executor: Any, kube: Any, settings: OperatorSettings
    ) -> None:
        self.adapter, self.executor, self.kube, self.settings = adapter, executor, kube, settings

    async def __call__(self, body: kopf.Body, patch: kopf.Patch, logger: Any) -> None:
        started = time.perf_counter()
        try:
            await self._reconcile(body, patch, logger)
        except (kopf.PermanentError, kopf.TemporaryError):
            raise
        except Exception:
            metrics.RECONCILE_ERRORS.labels(self.adapter.kind).inc()
            raise
        finally:
            metrics.HANDLER_LATENCY.labels(self.adapter.kind).observe(time.perf_counter() - started)

    async def _reconcile(self, body: kopf.Body, patch: kopf.Patch, logger: Any) -> None:
        a = self.adapter
        name, namespace = body.metadata.name, body.metadata.namespace
        old = dict(body.status or {})
        generation = int(body.metadata.get("generation") or 0)
        if old.get("phase") in TERMINAL and old.get("observedGeneration") == generation:
            metrics.track(a.kind, f"{namespace}/{name}", old["phase"])
            await self._expire(body, old)
            return
        try:
            spec = with_defaults(a.spec_model.model_validate(dict(body.spec)), self.settings)
        except ValidationError as e:
            first = e.errors()[0]
            where = "spec." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "spec"
            self._write(
                body,
                patch,
                old,
                Observation("Failed", "InvalidSpec", f"{where}: {first['msg']}"),
                generation,
            )
            raise kopf.PermanentError(f"invalid spec: {where}: {first['msg']}") from e

        deps: dict[str, dict[str, Any]] = {}
        for dep in a.dependencies(spec):
            obj = await self.kube.get(API_VERSION, dep.kind, namespace, dep.name)
            phase = ((obj or {}).get("status") or {}).get("phase")
            if phase == "Failed":
                why = ((obj or {}).get("status") or {}).get("message", "")
                self._write(
                    body,
                    patch,
                    old,
                    Observation(
                        "Failed", "DependencyFailed", f"{dep.kind} {dep.name} failed: {why}"
                    ),
                    generation,
                )
                return
            if phase != "Succeeded":
                reason, message = dependency_message(dep.kind, dep.name, obj)
                self._write(body, patch, old, Observation("Waiting", reason, message), generation)
                return
            deps[dep.name] = obj or {}

        loop = asyncio.get_running_loop()
        admits = type(a).admit is not Adapter.admit  # only some kinds check before starting
        refusal = (
            await loop.run_in_executor(self.kube.pool, a.admit, spec, self.settings)
            if admits and not old.get("startTime")
            else None
        )
        if refusal:
            self._write(body, patch, old, Observation("Failed", "Refused", refusal), generation)
            raise kopf.PermanentError(refusal)

        config = a.job_config(name, namespace, spec, deps)
        try:
            child = await self.executor.ensure(a, body, spec, config)
        except ApiException as e:
            if e.status in (409, 429) or e.status >= 500:
                raise  # conflicts, throttling and server errors: kopf retries
            # Rejected by the API server or an admission webhook (quota, policy, a bad field):
            # say so in the status and try again later, in case the cause goes away.
            why = _api_message(e)
            self._write(body, patch, old, Observation("Pending", "CreateFailed", why), generation)
            raise kopf.TemporaryError(why, delay=15) from e
        if child.created:  # nothing to read yet: the job has not started
            self._write(
                body, patch, old, Observation("Pending", "Created", child.message), generation
            )
            return
        if spec.suspend != (child.state == "suspended") and child.state not in (
            "succeeded",
            "failed",
        ):
            await self.executor.suspend(a, body, spec.suspend)
        if await self._deadline_passed(body, patch, spec, old, generation):
            return

        uri = a.output_uri(spec)
        progress = await loop.run_in_executor(self.kube.pool, read_progress, uri, spec)
        committed = child.state == "succeeded" and await loop.run_in_executor(
            self.kube.pool, storage.exists, storage.join(uri, a.marker), spec.storage
        )
        phase, reason, message = phase_of(child, progress, committed, a.marker)
        obs = Observation(
            phase,
            reason,
            message,
            progress=_progress_fields(progress, phase),
            result=_result(progress, uri) if phase == "Succeeded" else None,
            attempts=max(child.attempts, int(old.get("attempts") or 0), 1),
            extra=a.extra_status(progress),
        )
        self._write(body, patch, old, obs, generation)

    async def _deadline_passed(
        self, body: kopf.Body, patch: kopf.Patch, spec: Any, old: dict[str, Any], generation: int
    ) -> bool:
        """activeDeadlineSeconds: stop the job and fail once it has run longer than allowed."""
        deadline, start = spec.activeDeadlineSeconds, old.get("startTime")
        if deadline is None or not start or _age(start) <= deadline:
            return False
        await self.executor.stop(self.adapter, body)
        message = f"ran longer than activeDeadlineSeconds={deadline}; the job was stopped"
        self._write(
            body, patch, old, Observation("Failed", "DeadlineExceeded", message), generation
        )
        return True

    async def _expire(self, body: kopf.Body, old: dict[str, Any]) -> None:
        """ttlSecondsAfterFinished: delete the finished resource (its children go with it)."""
        ttl = (body.spec or {}).get("ttlSecondsAfterFinished")
        done = old.get("completionTime")
        if ttl is not None and done and _age(done) >= ttl:
            await self.kube.delete(
                API_VERSION, self.adapter.kind, body.metadata.namespace, body.metadata.name
            )

    def _write(
        self,
        body: kopf.Body,
        patch: kopf.Patch,
        old: dict[str, Any],
        obs: Observation,
        generation: int,
    ) -> None:
        # The gauge follows every resource, also those an operator restart found mid-run.
        metrics.track(
            self.adapter.kind, f"{body.metadata.namespace}/{body.metadata.name}", obs.phase
        )
        new = status_patch(old, obs, generation)
        if not changed(old, new):
            return
        for key, value in new.items():
            patch.status[key] = value
        before = old.get("phase") or "Pending"
        if before != obs.phase or not old.get("phase"):
            metrics.TRANSITIONS.labels(self.adapter.kind, before, obs.phase).inc()
            emit = kopf.warn if obs.phase == "Failed" else kopf.info
            emit(dict(body), reason=obs.phase, message=obs.message[:1000] or obs.phase)


def _api_message(e: ApiException) -> str:
    """The API server's own message for a rejected request."""
    try:
        return f"cannot create the job: {json.loads(e.body)['message']}"
    except (TypeError, ValueError, KeyError):
        return f"cannot create the job: {e.status} {e.reason}"


def _age(timestamp: str) -> float:
    """Seconds since an RFC 3339 UTC timestamp of the status."""
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return time.time() - then.timestamp()


def _progress_fields(progress: dict[str, Any], phase: str) -> dict[str, Any]:
    out = {
        k: v
        for k, v in progress.items()
        if k not in ("state", "message", "error", "result", "updatedAt", "lastCheckpoint")
    }
    if phase == "Succeeded" and out:
        out["percent"] = 100.0
    return out


def _result(progress: dict[str, Any], uri: str) -> dict[str, Any]:
    return {"uri": uri, **(progress.get("result") or {})}


def register(adapter: Adapter, executor: Any, kube: Any, settings: OperatorSettings) -> None:
    """Register the reconcile handlers of one kind with kopf."""
    reconciler = Reconciler(adapter, executor, kube, settings)

    async def on_change(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        await reconciler(body, patch, logger)

    # A failed reconcile is retried soon: most failures are a dependency or an API hiccup.
    for decorator in (kopf.on.create, kopf.on.resume):
        decorator(GROUP, VERSION, adapter.plural, id="reconcile", backoff=3)(on_change)
    kopf.on.update(GROUP, VERSION, adapter.plural, id="reconcile", field="spec", backoff=3)(
        on_change
    )
    kopf.timer(
        GROUP,
        VERSION,
        adapter.plural,
        id="resync",
        interval=settings.resyncSeconds,
        initial_delay=settings.resyncSeconds,
    )(on_change)
