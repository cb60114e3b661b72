"""The reconcile flow shared by every kind, and its kopf registration.

For each resource, in order: parse the spec, refuse an output that collides with another
resource's, resolve the dependencies, admit the spec, ensure the children (create-if-absent,
deterministic names, owner references), keep the job's suspension in step with the spec,
enforce the deadline, then observe the child and the job's progress.json. A step that decides
the status stops the flow with `Stop`. A resync repeats the flow so a vanished, stuck or
finished child is noticed without any event. A failed resource is retried when its
`longreach.io/retry` annotation gets a new value.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from longreach.contract import storage
from longreach.contract.common import API_VERSION, GROUP, VERSION, Placement
from longreach.contract.report import read_report
from longreach.operator import metrics
from longreach.operator.adapter import Adapter, AnyAdapter, Dependency, Resolved
from longreach.operator.executors import Executor
from longreach.operator.inputs import output_refusal
from longreach.operator.kinds import ADAPTERS, BY_KIND
from longreach.operator.kube import Kube
from longreach.operator.outputs import Claimant, collision, index_keys, lookup_keys, refusal
from longreach.operator.settings import OperatorSettings
from longreach.operator.status import (
    TERMINAL,
    ChildState,
    Observation,
    changed,
    dependency_message,
    observe,
    status_patch,
)

RETRY_ANNOTATION = f"{GROUP}/retry"
STORAGE = ThreadPoolExecutor(max_workers=32, thread_name_prefix="storage")
"""The threads that read the object store (admission probes, progress.json, markers): apart
from the API client's, so a slow or unreachable store never holds up calls to the API server."""


class Stop(Exception):
    """A step decided the status; the flow writes it and ends (raising `then`, if set, for
    kopf: PermanentError ends retries, TemporaryError retries after its delay)."""

    def __init__(self, observation: Observation, then: Exception | None = None) -> None:
        super().__init__(observation.message)
        self.observation, self.then = observation, then


@dataclass(frozen=True)
class Current:
    """What the resource says about itself at the start of a reconcile."""

    name: str
    namespace: str
    uid: str
    generation: int
    created: str
    retry: str
    """The value of the longreach.io/retry annotation."""
    spec: dict[str, Any]
    status: dict[str, Any]

    @classmethod
    def of(cls, body: kopf.Body) -> Current:
        return cls(
            name=body.metadata.name,
            namespace=body.metadata.namespace,
            uid=str(body.metadata.uid or ""),
            generation=int(body.metadata.get("generation") or 0),
            created=str(body.metadata.get("creationTimestamp") or ""),
            retry=str(body.metadata.annotations.get(RETRY_ANNOTATION, "")),
            spec=dict(body.spec or {}),
            status=dict(body.status or {}),
        )

    @property
    def retry_asked(self) -> bool:
        """Failed, and the retry annotation has a value not acted on yet."""
        return (
            self.status.get("phase") == "Failed"
            and bool(self.retry)
            and self.retry != self.status.get("retry")
        )

    @property
    def finished(self) -> bool:
        """Succeeded or Failed, for the current generation of the spec."""
        return (
            self.status.get("phase") in TERMINAL
            and self.status.get("observedGeneration") == self.generation
        )

    @property
    def started(self) -> bool:
        return bool(self.status.get("startTime"))


def with_defaults(spec: Placement, settings: OperatorSettings) -> Placement:
    """The operator's storage defaults under any field the resource left empty."""
    merged = {
        k: getattr(spec.storage, k) or getattr(settings.storage, k)
        for k in ("endpoint", "secretName", "region")
    }
    return spec.model_copy(update={"storage": spec.storage.model_copy(update=merged)})


def parse_spec(adapter: AnyAdapter, raw: dict[str, Any], settings: OperatorSettings) -> Any:
    """The typed spec with the operator's defaults; an invalid one stops with Failed."""
    try:
        return with_defaults(adapter.parse(raw), settings)
    except ValidationError as e:
        first = e.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "spec"
        why = f"{where}: {first['msg']}"
        raise Stop(
            Observation("Failed", "InvalidSpec", why), kopf.PermanentError(f"invalid spec: {why}")
        ) from e


def resolve(dep: Dependency, obj: dict[str, Any] | None) -> Resolved:
    """A dependency that succeeded, parsed by its kind's models; otherwise stop: Failed when
    it failed, Waiting (with its phase and progress) while it is not done."""
    contract = BY_KIND[dep.kind].contract
    status = None if obj is None else contract.status.model_validate(obj.get("status") or {})
    if status is not None and status.phase == "Failed":
        why = f"{dep.kind} {dep.name} failed: {status.message}"
        raise Stop(Observation("Failed", "DependencyFailed", why))
    if obj is None or status is None or status.phase != "Succeeded":
        reason, message = dependency_message(dep.kind, dep.name, status)
        raise Stop(Observation("Waiting", reason, message))
    return Resolved(spec=contract.spec.model_validate(obj["spec"]), status=status)


def claimant(kind: str, body: kopf.Body) -> Claimant | None:
    """A resource's entry in the output index (None without an output)."""
    uri = ((body.spec or {}).get("output") or {}).get("uri")
    if not uri:
        return None
    meta = body.metadata
    created = str(meta.get("creationTimestamp") or "")
    return Claimant(created, kind, meta.namespace, meta.name, str(uri))


def exclusive(me: Claimant, indexes: Iterable[Any]) -> None:
    """Stop with Failed when an earlier resource writes to the same or a nested location."""
    others = (c for index in indexes for key in lookup_keys(me.uri) for c in index.get(key, ()))
    other = collision(me, others)
    if other is not None:
        why = refusal(me, other)
        raise Stop(Observation("Failed", "OutputConflict", why), kopf.PermanentError(why))


def event_key(phase: str, reason: str, message: str) -> tuple[str, str, str]:
    """What makes an event: a new phase, reason, or message (numbers aside, so progress
    updates do not, but a new stage or a dependency's new phase does)."""
    return phase, reason, re.sub(r"\d+(\.\d+)?", "#", message)


def deadline_passed(deadline: int | None, start: str | None, now: float) -> bool:
    """activeDeadlineSeconds: whether a job that started at `start` has run too long."""
    return deadline is not None and bool(start) and now - _epoch(str(start)) > deadline


class Reconciler:
    """Runs the reconcile flow for one kind with one executor."""

    def __init__(
        self, adapter: AnyAdapter, executor: Executor, kube: Kube, settings: OperatorSettings
    ) -> None:
        self.adapter, self.executor, self.kube, self.settings = adapter, executor, kube, settings
        # Only kinds that check something before starting pay for the thread hop.
        self.admits = type(adapter).admit is not Adapter.admit
        self.known: dict[tuple[str, str], dict[str, Any]] = {}
        """The latest body of every resource of the kind (a watch event or our own status
        write, whichever came last): what the resync reconciles."""
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        """One reconcile at a time per resource (events and the resync run apart)."""
        self.done_at: dict[tuple[str, str], float] = {}
        """When each resource's last reconcile ended (monotonic seconds)."""
        self.indexes: list[Any] = []
        self.resyncing: asyncio.Task[None] | None = None

    def seen(self, type: str | None, body: Any) -> None:
        """Keep the newer of `body` (a watch event's, or what our status write returned)
        and the one known."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if type == "DELETED":
            self.known.pop(key, None)
            self.locks.pop(key, None)
            self.done_at.pop(key, None)
        elif not _older(body, self.known.get(key)):
            self.known[key] = dict(body)
            # new: its event reconciles it now; the resync's turn comes a period later
            self.done_at.setdefault(key, time.monotonic())

    async def __call__(self, body: kopf.Body, indexes: list[Any]) -> None:
        started = time.perf_counter()
        key = (body.metadata.namespace, body.metadata.name)
        try:
            async with self.locks.setdefault(key, asyncio.Lock()):
                # the latest body: a reconcile that waited for the lock may have written it
                await self.reconcile(kopf.Body(self.known.get(key) or dict(body)), indexes)
        except (kopf.PermanentError, kopf.TemporaryError):
            raise
        except Exception:
            metrics.RECONCILE_ERRORS.labels(self.adapter.kind).inc()
            raise
        finally:
            metrics.HANDLER_LATENCY.labels(self.adapter.kind).observe(time.perf_counter() - started)
            if key in self.known:  # not deleted meanwhile
                self.done_at[key] = time.monotonic()

    async def resync_forever(self) -> None:
        """Reconcile every resource whose last reconcile ended resyncSeconds ago (at most as
        many at once as the API client has threads): a vanished, stuck or finished child is
        noticed without any event, and a failed reconcile is retried. Each resource keeps its
        own cadence, so a burst of creations is not followed by a burst of resyncs."""
        log = logging.getLogger(__name__)
        limit = asyncio.Semaphore(self.kube.workers)

        async def one(raw: dict[str, Any]) -> None:
            async with limit:
                try:
                    await self(kopf.Body(raw), self.indexes)
                except (kopf.PermanentError, kopf.TemporaryError) as e:
                    log.info("%s: %s", raw["metadata"]["name"], e)
                except Exception:
                    log.exception("resync of %s failed", raw["metadata"]["name"])

        period = self.settings.resyncSeconds
        while True:
            await asyncio.sleep(min(1.0, period / 4))
            due = time.monotonic() - period
            stale = [raw for key, raw in self.known.items() if self.done_at.get(key, 0) <= due]
            await asyncio.gather(*(one(raw) for raw in stale))

    async def reconcile(self, body: kopf.Body, indexes: list[Any]) -> None:
        now = Current.of(body)
        if now.retry_asked:
            await self.retry(body, now)
            return
        if now.finished:
            metrics.track(self.adapter.kind, f"{now.namespace}/{now.name}", now.status["phase"])
            await self.expire(now)
            return
        try:
            spec = parse_spec(self.adapter, now.spec, self.settings)
            me = claimant(self.adapter.kind, body)
            if me is not None and not now.started:
                exclusive(me, indexes)
            deps = await self.dependencies(now, spec)
            await self.admit(now, spec)
            child = await self.ensure(body, now, spec, deps)
            await self.sync_suspend(body, spec, child)
            await self.enforce_deadline(body, now, spec)
            obs = await self.observe(body, now, spec, child)
        except Stop as stop:
            await self.write(body, now, stop.observation)
            if stop.then is not None:
                raise stop.then from stop
            return
        await self.write(body, now, obs)

    async def dependencies(self, now: Current, spec: Any) -> dict[str, Resolved]:
        out = {}
        for dep in self.adapter.dependencies(spec):
            obj = await self.kube.get(API_VERSION, dep.kind, now.namespace, dep.name)
            out[dep.name] = resolve(dep, obj)
        return out

    async def admit(self, now: Current, spec: Any) -> None:
        """The kind's check before any work starts (e.g. the memory planner)."""
        if not self.admits or now.started:
            return
        loop = asyncio.get_running_loop()
        refusal = await loop.run_in_executor(STORAGE, self.adapter.admit, spec, self.settings)
        if refusal:
            raise Stop(Observation("Failed", "Refused", refusal), kopf.PermanentError(refusal))

    async def ensure(
        self, body: kopf.Body, now: Current, spec: Any, deps: dict[str, Resolved]
    ) -> ChildState:
        """The job's children, created if absent; stops while a just-created job starts."""
        config = self.adapter.job_config(now.name, now.namespace, now.uid, spec, deps)
        if not now.started:  # the job would refuse its output: say so before creating it
            loop = asyncio.get_running_loop()
            uri = self.adapter.output_uri(spec)
            why = await loop.run_in_executor(
                STORAGE, output_refusal, config, uri, spec.storage, self.settings
            )
            if why:
                raise Stop(Observation("Failed", "OutputOwned", why), kopf.PermanentError(why))
        try:
            child = await self.executor.ensure(self.adapter, body, spec, config)
        except ApiException as e:
            if e.status in (409, 429) or e.status >= 500:
                raise  # conflicts, throttling and server errors: kopf retries
            # Rejected by the API server or an admission webhook (quota, policy, a bad field),
            # or the job's kind is not installed: say so and try again later.
            job = self.adapter.job
            why = (
                f"cannot create the job: the {job.kind} API ({job.api_version}) is not served "
                f"by this cluster; {job.install}"
                if e.status == 404
                else _api_message(e)
            )
            raise Stop(
                Observation("Pending", "CreateFailed", why), kopf.TemporaryError(why, delay=15)
            ) from e
        if child.created:  # nothing to read yet: what a resync will see while it is pending
            attempts = int(now.status.get("attempts") or 0)
            raise Stop(observe(child, None, False, self.adapter.contract.marker, attempts))
        return child

    async def sync_suspend(self, body: kopf.Body, spec: Any, child: ChildState) -> None:
        """spec.suspend, passed on to a job that has not finished."""
        finished = child.state in ("succeeded", "failed")
        if not finished and spec.suspend != (child.state == "suspended"):
            await self.executor.suspend(self.adapter, body, spec.suspend, child)

    async def enforce_deadline(self, body: kopf.Body, now: Current, spec: Any) -> None:
        """activeDeadlineSeconds: stop the job and fail once it has run longer than allowed."""
        deadline = spec.activeDeadlineSeconds
        if not deadline_passed(deadline, now.status.get("startTime"), time.time()):
            return
        await self.executor.stop(self.adapter, body)
        message = f"ran longer than activeDeadlineSeconds={deadline}; the job was stopped"
        raise Stop(Observation("Failed", "DeadlineExceeded", message))

    async def observe(
        self, body: kopf.Body, now: Current, spec: Any, child: ChildState
    ) -> Observation:
        """The child's state, the job's report and the commit marker, as one observation."""
        loop = asyncio.get_running_loop()
        uri, contract = self.adapter.output_uri(spec), self.adapter.contract
        store = spec.storage.for_probes()
        report = await loop.run_in_executor(STORAGE, _read_report, uri, contract.report, store)
        committed = child.state == "succeeded" and await loop.run_in_executor(
            STORAGE, storage.exists, storage.join(uri, contract.marker), store
        )
        attempts = int(now.status.get("attempts") or 0)
        obs = observe(child, report, committed, contract.marker, attempts)
        if obs.phase == "Failed" and child.state not in ("failed", "succeeded"):
            await self.executor.stop(self.adapter, body)  # e.g. a RayJob about to retry
        return obs

    async def retry(self, body: kopf.Body, now: Current) -> None:
        """Discard the failed job and start over: the next reconcile creates a new one, which
        resumes from the job's own shards and checkpoints."""
        await self.executor.discard(self.adapter, body)
        message = (
            f"retrying ({RETRY_ANNOTATION}={now.retry}) after: {now.status.get('message', '')}"
        )
        fields = {"retry": now.retry, "completionTime": ""}
        await self.write(body, now, Observation("Pending", "Retrying", message, fields))

    async def expire(self, now: Current) -> None:
        """ttlSecondsAfterFinished: delete the finished resource (its children go with it)."""
        ttl = now.spec.get("ttlSecondsAfterFinished")
        done = now.status.get("completionTime")
        if ttl is not None and done and time.time() - _epoch(done) >= ttl:
            await self.kube.delete(API_VERSION, self.adapter.kind, now.namespace, now.name)

    async def write(self, body: kopf.Body, now: Current, obs: Observation) -> None:
        """The status for `obs` (a merge patch of the status subresource, written here: kopf's
        own patches diff the whole body, a deep copy per write), and an event and metrics on
        a phase transition."""
        # The gauge follows every resource, also those an operator restart found mid-run.
        metrics.track(self.adapter.kind, f"{now.namespace}/{now.name}", obs.phase)
        old = now.status
        new = status_patch(old, obs, now.generation)
        if not changed(old, new):
            return
        written = await self.kube.patch_status(
            API_VERSION, self.adapter.kind, now.namespace, now.name, {"status": new}
        )
        if written is None:
            return  # deleted meanwhile
        self.seen("MODIFIED", written)
        before = old.get("phase") or "Pending"
        if before != obs.phase or not old.get("phase"):
            metrics.TRANSITIONS.labels(self.adapter.kind, before, obs.phase).inc()
        ready = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), {})
        was = event_key(before, ready.get("reason", ""), old.get("message", ""))
        before_attempts = int(old.get("attempts") or 0)
        if before_attempts and (obs.attempts or 0) > before_attempts and obs.phase != "Failed":
            job = self.adapter.job.kind
            kopf.warn(
                dict(body),
                reason="Restarted",
                message=f"attempt {obs.attempts}: the {job} started its pods again after a pod "
                "or its node failed; the job resumes from what its output holds",
            )
        if not old.get("phase") or was != event_key(obs.phase, obs.reason, obs.message):
            # The event says what the status now says, at every change worth a line.
            emit = kopf.warn if obs.phase == "Failed" else kopf.info
            emit(dict(body), reason=obs.reason, message=obs.message[:1000] or obs.phase)


def _read_report(uri: str, model: Any, store: Any) -> Any:
    """The job's report; unreadable storage must not break the status, so it is logged and
    treated as no report yet (the child's own state still decides the phase)."""
    try:
        return read_report(uri, model, store)
    except Exception as e:
        return model(message=f"cannot read progress.json: {e}")


def _api_message(e: ApiException) -> str:
    """The API server's own message for a rejected request."""
    try:
        return f"cannot create the job: {json.loads(e.body)['message']}"
    except (TypeError, ValueError, KeyError):
        return f"cannot create the job: {e.status} {e.reason}"


def _epoch(timestamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC timestamp of the status."""
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _older(body: Any, than: dict[str, Any] | None) -> bool:
    """Whether `body` is an older version of the object than `than`. Resource versions are
    opaque to clients, but the API server's (etcd revisions) are integers that grow: compared
    only when both are."""
    if than is None:
        return False
    mine, theirs = body["metadata"].get("resourceVersion"), than["metadata"].get("resourceVersion")
    return str(mine).isdigit() and str(theirs).isdigit() and int(mine) < int(theirs)


def index_name(adapter: AnyAdapter) -> str:
    """The kopf index of a kind's output locations (every handler receives every index)."""
    return f"{adapter.plural}_outputs"


def echo(body: kopf.Body) -> bool:
    """An event that asks for nothing: the status already describes this generation of the
    spec and the retry annotation (our own status patch coming back, typically)."""
    status = body.status or {}
    retry = body.metadata.annotations.get(RETRY_ANNOTATION, "")
    return (
        status.get("observedGeneration") == body.metadata.get("generation")
        and retry == status.get("retry", "")
        and not body.metadata.get("deletionTimestamp")
    )


def register(
    adapter: AnyAdapter, executor: Executor, kube: Kube, settings: OperatorSettings
) -> None:
    """Register one kind with kopf: its output index and the reconcile on every event that
    asks for something; the kind's resync starts with its first event. Nothing of kopf's is
    stored on the resources: no handler state (an annotation PATCH per create) and no
    finalizer (a kopf timer adds one: a PATCH per create and another per delete, and a
    resource that cannot be deleted while the operator is away). The reconcile is idempotent
    and writes the status itself; the resync repeats it every resyncSeconds, which is also
    how a failed reconcile is retried."""
    reconciler = Reconciler(adapter, executor, kube, settings)

    def indexes(kwargs: dict[str, Any]) -> list[Any]:
        return [kwargs[index_name(a)] for a in ADAPTERS]

    @kopf.index(GROUP, VERSION, adapter.plural, id=index_name(adapter))
    def outputs(body: kopf.Body, **_: Any) -> dict[tuple[str, str], Claimant] | None:
        me = claimant(adapter.kind, body)
        return {key: me for key in index_keys(me.uri)} if me else None

    @kopf.on.event(GROUP, VERSION, adapter.plural, id="reconcile")
    async def on_event(type: str | None, body: kopf.Body, **kwargs: Any) -> None:
        reconciler.seen(type, body)
        reconciler.indexes = indexes(kwargs)
        if reconciler.resyncing is None:
            reconciler.resyncing = asyncio.create_task(reconciler.resync_forever())
        if type == "DELETED":
            metrics.forget(adapter.kind, f"{body.metadata.namespace}/{body.metadata.name}")
        elif not (type == "MODIFIED" and echo(body)):
            try:
                await reconciler(body, reconciler.indexes)
            except (kopf.PermanentError, kopf.TemporaryError) as e:
                # The status says why; the resync tries again where that can help.
                logging.getLogger(__name__).info("%s: %s", body.metadata.name, e)

    @kopf.on.cleanup()
    async def stop_resync(**_: Any) -> None:
        if reconciler.resyncing is not None:
            reconciler.resyncing.cancel()
