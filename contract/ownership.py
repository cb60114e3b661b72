"""One output, one owner: the owner record and the lease every job holds on its output location.

Before a job writes anything it claims its output location by writing `owner.json` there: who
owns it (the resource's kind, namespace, name and UID, or a local run), the hash of the
resolved config that shapes the output, and, while it runs, a lease (a holder id and a
heartbeat). The decision, in `decide`:

- nothing there: claim it (an exclusive create);
- another config: refuse, whoever wrote it and whatever its state;
- the same config, another resource: refuse (one output, one owner); the same resource
  re-created (same kind, namespace and name, another UID) adopts what its predecessor left;
- the same owner: a finished output is reused; a released lease (the job stopped or failed) is
  taken over; a live lease of another holder (a second writer: an orphan, a second `longreach
  run`) is waited for until its heartbeat is older than `leaseSeconds`, then taken over, so a
  restarted pod continues after a hard kill of the old one.

Writes are conditional where the store supports it: S3 `If-None-Match: *` to create and
`If-Match: <ETag>` to replace (AWS S3, MinIO and Ceph RGW honour both; see docs/outputs.md),
a file lock on local disks. A store that ignores the headers degrades to last-writer-wins on a
race of a few milliseconds; the heartbeat still makes a second writer refuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict

from longreach.contract import storage
from longreach.contract.common import Model, StorageSpec
from longreach.contract.errors import InputError

OWNER_FILE = "owner.json"
LEASE_SECONDS = 60.0
"""A lease whose heartbeat is older than this is free to take over."""
HEARTBEAT_SECONDS = 10.0
"""How often a running job renews its lease."""


class Owner(Model):
    """Who an output belongs to: a resource, or a local run (`uid` empty)."""

    kind: str
    """The resource kind, e.g. DataMixture."""
    namespace: str
    """The resource's namespace; `local` for `longreach run`."""
    name: str
    """The resource's name."""
    uid: str = ""
    """The resource's UID; empty for a local run."""

    def describe(self) -> str:
        if not self.uid:
            return f"the local run of {self.kind} {self.name}"
        return f"{self.kind} {self.namespace}/{self.name} (uid {self.uid})"

    def same_resource(self, other: Owner) -> bool:
        """The same kind, namespace and name (a re-created resource has another UID)."""
        return (self.kind, self.namespace, self.name) == (other.kind, other.namespace, other.name)


class OwnerRecord(Model):
    """`owner.json` in an output location."""

    model_config = ConfigDict(extra="ignore")

    owner: Owner
    """Who the output belongs to."""
    configHash: str
    """SHA-256 of the resolved config that shapes the output."""
    config: dict[str, Any] = {}
    """That config, so a refusal can say what differs."""
    state: Literal["running", "finished", "released"] = "running"
    """running (the lease is held), finished (the output is committed), released (stopped or
    failed; the next job of the same owner and config continues it)."""
    holder: str = ""
    """The process holding the lease (random per job attempt)."""
    host: str = ""
    """Host name of the holder."""
    pid: int = 0
    """Process id of the holder."""
    heartbeat: float = 0
    """When the holder last renewed the lease (seconds since the epoch)."""
    leaseSeconds: float = LEASE_SECONDS
    """How long the lease lasts without a heartbeat."""

    def alive(self, now: float) -> bool:
        return self.state == "running" and now - self.heartbeat < self.leaseSeconds

    def holder_text(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.host else "another process"


class OwnershipError(InputError):
    """The output location belongs to another owner or config; the message says which and what
    to do. Bad input: retrying cannot help."""


def config_hash(config: dict[str, Any]) -> str:
    """The hash of an output-shaping config (canonical JSON)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted fields whose values differ between two configs, e.g. `strategy.type`."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, path = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{path}.")
        elif a != b:
            out.append(f"{path}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    return out


Verdict = Literal["claim", "reuse", "wait", "refuse"]
FIX = "point output.uri somewhere else, or delete that output to start it over"


def decide(
    record: OwnerRecord | None, owner: Owner, config: dict[str, Any], now: float, uri: str
) -> tuple[Verdict, str]:
    """What a job of `owner` with the output-shaping `config` may do with the output at `uri`,
    given its owner record; the second element explains a refusal or a wait."""
    if record is None:
        return "claim", ""
    digest = config_hash(config)
    if record.configHash != digest:
        state = "a finished" if record.state == "finished" else "an unfinished"
        changed = differences(record.config, config)
        what = f"; it differs in {'; '.join(changed[:5])}" if changed else ""
        return "refuse", (
            f"output.uri {uri} holds {state} output of another config (made by "
            f"{record.owner.describe()}, config {record.configHash[:12]}, this one "
            f"{digest[:12]}){what}; {FIX}"
        )
    if record.owner != owner and not record.owner.same_resource(owner):
        return "refuse", (
            f"output.uri {uri} belongs to {record.owner.describe()} ({record.state}); "
            f"{owner.describe()} cannot write there; {FIX}"
        )
    if record.state == "finished":
        return "reuse", ""
    if record.alive(now) and record.holder:
        return "wait", (
            f"output.uri {uri} is being written by {record.holder_text()} for "
            f"{record.owner.describe()} (heartbeat {now - record.heartbeat:.0f} s ago)"
        )
    return "claim", ""


class Lease:
    """A job's claim on its output location, renewed by a background thread while it runs.

    `acquire()` decides (see `decide`) and writes the record; `finish()` marks the output
    committed; `release()` frees the lease when the job stops or fails. If another writer takes
    the lease over while this one runs, `on_lost` is called once from the heartbeat thread (the
    jobs stop themselves), and `check()` raises from then on."""

    def __init__(
        self,
        output_uri: str,
        store: StorageSpec | None,
        owner: Owner,
        config: dict[str, Any],
        *,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.uri, self.store, self.owner, self.config = output_uri, store, owner, config
        self.digest = config_hash(config)
        self.lease_seconds, self.heartbeat_seconds = lease_seconds, heartbeat_seconds
        self.on_lost = on_lost
        self.holder = uuid.uuid4().hex
        self.record: OwnerRecord | None = None
        self.lost = ""
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def record_uri(self) -> str:
        return storage.join(self.uri, OWNER_FILE)

    def acquire(self, *, finished_marker: str | None = None) -> bool:
        """Claim the output; True when it is already finished (owned by this config). Waits
        for a live lease of the same owner to expire; raises OwnershipError otherwise. A
        location that holds files but no owner record is refused too (its origin is unknown);
        `finished_marker` (relative to the output) names the commit marker in that message."""
        try:
            return self._acquire(finished_marker)
        except (PermissionError, FileNotFoundError) as e:  # no such bucket, access denied
            hint = (self.store or StorageSpec()).access_hint()
            raise InputError(
                f"output.uri {self.uri}: cannot write there ({type(e).__name__}: {e}); {hint}"
            ) from e

    def _acquire(self, finished_marker: str | None) -> bool:
        deadline = time.time() + self.lease_seconds + self.heartbeat_seconds
        while True:
            record, etag = read_record(self.record_uri, self.store)
            if record is None:
                self._refuse_unclaimed(finished_marker)
            verdict, why = decide(record, self.owner, self.config, time.time(), self.uri)
            if verdict == "refuse":
                raise OwnershipError(why)
            if verdict == "reuse":
                self.record, self._etag = record, etag
                return True
            if verdict == "wait" and record is not None and _holder_dead(record):
                verdict = "claim"  # killed on this very host: no need to wait for its lease
            if verdict == "wait":
                if time.time() > deadline:
                    raise OwnershipError(f"{why}; it is still alive: stop it first")
                time.sleep(min(self.heartbeat_seconds, 2.0))
                continue
            if self._write(self._mine("running"), etag if record is not None else None):
                self._start_heartbeat()
                return False
            # Lost a race with another writer: decide again on what it wrote.

    def _refuse_unclaimed(self, finished_marker: str | None) -> None:
        fs, path = storage.filesystem(self.uri, self.store)
        try:
            found = [p for p in fs.find(path) if not p.endswith(".lock")]
        except FileNotFoundError:
            return
        if not found:
            return
        marker = finished_marker and storage.exists(
            storage.join(self.uri, finished_marker), self.store
        )
        what = f"a finished output ({finished_marker})" if marker else f"{len(found)} files"
        raise OwnershipError(
            f"output.uri {self.uri} holds {what} that no owner record claims; {FIX}"
        )

    def check(self) -> None:
        """Raise if the lease was lost (call before committing anything)."""
        if self.lost:
            raise OwnershipError(self.lost)

    def finish(self) -> None:
        """The output is committed: record it as finished and stop renewing."""
        self._stop_heartbeat()
        self.check()
        self._write(self._mine("finished"), self._etag, must=True)

    def release(self) -> None:
        """The job stops or failed: free the lease so the next attempt continues at once (a
        finished or never acquired lease stays as it is)."""
        self._stop_heartbeat()
        if not self.lost and self.record is not None and self.record.state == "running":
            with contextlib.suppress(Exception):
                self._write(self._mine("released"), self._etag)

    def _mine(self, state: Literal["running", "finished", "released"]) -> OwnerRecord:
        return OwnerRecord(
            owner=self.owner,
            configHash=self.digest,
            config=self.config,
            state=state,
            holder=self.holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            heartbeat=time.time(),
            leaseSeconds=self.lease_seconds,
        )

    def _write(self, record: OwnerRecord, etag: str | None, *, must: bool = False) -> bool:
        new = write_record(self.record_uri, record, etag, self.store)
        if new is None:
            if must:
                self.lost = f"output.uri {self.uri}: another writer took the output over"
                raise OwnershipError(self.lost)
            return False
        self.record, self._etag = record, new
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                ok = self._write(self._mine("running"), self._etag)
            except Exception:  # the store is unreachable: keep trying until the lease expires
                continue
            if not ok:
                record, _ = read_record(self.record_uri, self.store)
                who = record.holder_text() if record else "another process"
                self.lost = f"output.uri {self.uri}: the lease was taken over by {who}"
                if self.on_lost is not None:
                    self.on_lost(self.lost)
                return


def _holder_dead(record: OwnerRecord) -> bool:
    """The holder ran on this host (or in an earlier container of this pod) and its process is
    gone. A reused pid counts as alive: then the lease is waited for, never stolen."""
    if record.host != socket.gethostname() or record.pid <= 0:
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def read_record(uri: str, store: StorageSpec | None) -> tuple[OwnerRecord | None, str | None]:
    """The owner record at `uri` and its version tag (S3 ETag, or a digest of a local file)."""
    fs, path = storage.filesystem(uri, store)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None, None
    if _is_local(fs):
        tag = hashlib.sha256(data).hexdigest()
    else:
        tag = str(fs.info(path, refresh=True).get("ETag") or "") or None
    return OwnerRecord.model_validate_json(data), tag


def write_record(
    uri: str, record: OwnerRecord, etag: str | None, store: StorageSpec | None
) -> str | None:
    """Write the record if the file is still at version `etag` (absent when None); returns the
    new version tag, or None when another writer got there first."""
    data = record.model_dump_json(indent=2).encode()
    fs, path = storage.filesystem(uri, store)
    if _is_local(fs):
        return _write_local(Path(path), data, etag)
    kwargs: dict[str, Any] = {"mode": "create"} if etag is None else {"IfMatch": etag}
    try:
        out = fs.pipe_file(path, data, **kwargs)
    except FileExistsError:
        return None
    except OSError as e:
        if "PreconditionFailed" in str(e) or "412" in str(e) or "At least one of the pre" in str(e):
            return None
        raise
    fs.invalidate_cache(path)
    tag = (out or {}).get("ETag") if isinstance(out, dict) else None
    return str(tag or fs.info(path, refresh=True).get("ETag"))


def _write_local(path: Path, data: bytes, etag: str | None) -> str | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        if current != etag:
            return None
        storage.write_bytes(str(path), data)
    return hashlib.sha256(data).hexdigest()


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols
