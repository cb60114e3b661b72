"""One output, one owner: the decision table, and the lease against a live second writer and a
stale one, on a local disk and on the S3 server (conditional writes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from longreach.contract.common import StorageSpec
from longreach.contract.errors import InputError
from longreach.contract.ownership import (
    OWNER_FILE,
    Lease,
    Owner,
    OwnerRecord,
    OwnershipError,
    config_hash,
    decide,
    differences,
    read_record,
    write_record,
)

A = Owner(kind="DataMixture", namespace="ns", name="a", uid="u1")
A_AGAIN = Owner(kind="DataMixture", namespace="ns", name="a", uid="u2")  # re-created
B = Owner(kind="DataMixture", namespace="ns", name="b", uid="u3")
CONFIG = {"spec": {"seed": 1, "strategy": {"type": "per-source"}}}
OTHER = {"spec": {"seed": 1, "strategy": {"type": "global"}}}


def record(owner: Owner, config: dict, state: str, heartbeat: float = 0.0) -> OwnerRecord:
    return OwnerRecord(
        owner=owner,
        configHash=config_hash(config),
        config=config,
        state=state,  # type: ignore[arg-type]
        holder="h",
        heartbeat=heartbeat,
    )


@pytest.mark.unit
def test_decision_table() -> None:
    now = 1000.0
    assert decide(None, A, CONFIG, now, "o")[0] == "claim"
    verdict, why = decide(record(A, OTHER, "finished"), A, CONFIG, now, "o")
    assert verdict == "refuse" and "another config" in why
    assert 'strategy.type: "global" -> "per-source"' in why
    assert decide(record(B, CONFIG, "finished"), A, CONFIG, now, "o")[0] == "refuse"
    assert decide(record(B, CONFIG, "released"), A, CONFIG, now, "o")[0] == "refuse"
    assert decide(record(A, CONFIG, "finished"), A, CONFIG, now, "o")[0] == "reuse"
    assert decide(record(A, CONFIG, "finished"), A_AGAIN, CONFIG, now, "o")[0] == "reuse"
    assert decide(record(A, CONFIG, "released"), A, CONFIG, now, "o")[0] == "claim"
    live = record(A, CONFIG, "running", heartbeat=now - 5)
    assert decide(live, A, CONFIG, now, "o")[0] == "wait"
    assert decide(live, B, CONFIG, now, "o")[0] == "refuse"
    stale = record(A, CONFIG, "running", heartbeat=now - 600)
    assert decide(stale, A, CONFIG, now, "o")[0] == "claim"


@pytest.mark.unit
def test_differences_name_the_fields() -> None:
    assert differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4}) == [
        "a.c: 2 -> 3",
        "d: null -> 4",
    ]


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, StorageSpec | None]:
    if request.param == "local":
        return str(tmp_path / "out"), None
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/out", request.getfixturevalue("s3_storage")


@pytest.mark.integration
def test_conditional_writes_let_one_writer_win(location: tuple[str, StorageSpec | None]) -> None:
    uri, store = location
    path = f"{uri}/{OWNER_FILE}"
    first = write_record(path, record(A, CONFIG, "running"), None, store)
    assert first is not None
    assert write_record(path, record(B, CONFIG, "running"), None, store) is None  # exists
    assert write_record(path, record(B, CONFIG, "running"), "stale-tag", store) is None
    second = write_record(path, record(A, CONFIG, "finished"), first, store)
    assert second is not None and second != first
    current, tag = read_record(path, store)
    assert current is not None and current.state == "finished" and tag == second


@pytest.mark.integration
def test_lease_lifecycle(location: tuple[str, StorageSpec | None]) -> None:
    uri, store = location
    lease = Lease(uri, store, A, CONFIG, lease_seconds=30, heartbeat_seconds=0.2)
    assert lease.acquire() is False
    time.sleep(0.6)  # heartbeats renew the record under the lease's own version tag
    current, _ = read_record(f"{uri}/{OWNER_FILE}", store)
    assert current is not None and current.state == "running"
    assert current.heartbeat > time.time() - 5
    # A second writer of another resource, or of another config, refuses while it lives.
    with pytest.raises(OwnershipError, match="belongs to DataMixture ns/a"):
        Lease(uri, store, B, CONFIG).acquire()
    with pytest.raises(OwnershipError, match="another config"):
        Lease(uri, store, A, OTHER).acquire()
    lease.finish()
    assert read_record(f"{uri}/{OWNER_FILE}", store)[0].state == "finished"  # type: ignore[union-attr]
    # The same owner (or the same resource re-created) finds it finished.
    assert Lease(uri, store, A_AGAIN, CONFIG).acquire() is True


@pytest.mark.integration
def test_a_live_writer_of_the_same_resource_is_waited_for_then_refused(
    location: tuple[str, StorageSpec | None],
) -> None:
    uri, store = location
    first = Lease(uri, store, A, CONFIG, lease_seconds=2, heartbeat_seconds=0.2)
    first.acquire()
    started = time.time()
    with pytest.raises(OwnershipError, match="still alive: stop it first"):
        Lease(uri, store, A, CONFIG, lease_seconds=2, heartbeat_seconds=0.2).acquire()
    assert time.time() - started >= 2  # it waited a whole lease for the first to die
    first.release()
    assert read_record(f"{uri}/{OWNER_FILE}", store)[0].state == "released"  # type: ignore[union-attr]
    second = Lease(uri, store, A, CONFIG, lease_seconds=2, heartbeat_seconds=0.2)
    assert second.acquire() is False  # a released lease is taken at once
    second.release()


@pytest.mark.integration
def test_a_stale_lease_is_taken_over_and_its_holder_learns_it(
    location: tuple[str, StorageSpec | None],
) -> None:
    uri, store = location
    lost = threading.Event()
    first = Lease(
        uri, store, A, CONFIG, lease_seconds=1, heartbeat_seconds=0.3, on_lost=lambda _: lost.set()
    )
    first.acquire()
    first._stop_heartbeat()  # a hard kill: the heartbeat stops, the record stays "running"
    time.sleep(1.2)
    second = Lease(uri, store, A, CONFIG, lease_seconds=30, heartbeat_seconds=0.3)
    assert second.acquire() is False
    current, _ = read_record(f"{uri}/{OWNER_FILE}", store)
    assert current is not None and current.holder == second.holder
    # The old holder comes back to life: its next renewal fails and it is told so.
    first._start_heartbeat()
    assert lost.wait(5)
    with pytest.raises(OwnershipError, match="taken over"):
        first.check()
    second.finish()


@pytest.mark.integration
def test_an_unclaimed_finished_output_is_refused_and_a_missing_bucket_named(
    tmp_path: Path, s3_storage: StorageSpec
) -> None:
    out = tmp_path / "legacy"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(OwnershipError, match="no owner record claims"):
        Lease(str(out), None, A, CONFIG).acquire(finished_marker="manifest.json")
    with pytest.raises(InputError, match=r"output.uri s3://no-such-bucket-z/o: cannot write there"):
        Lease("s3://no-such-bucket-z/o", s3_storage, A, CONFIG).acquire()


@pytest.mark.integration
def test_a_holder_killed_on_this_host_is_not_waited_for(tmp_path: Path) -> None:
    import subprocess
    import sys

    uri = str(tmp_path / "out")
    first = Lease(uri, None, A, CONFIG, lease_seconds=600)
    first.acquire()
    first._stop_heartbeat()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    current, tag = read_record(f"{uri}/{OWNER_FILE}", None)
    assert current is not None
    write_record(
        f"{uri}/{OWNER_FILE}", current.model_copy(update={"pid": int(gone.stdout)}), tag, None
    )
    started = time.time()
    assert Lease(uri, None, A, CONFIG, lease_seconds=600).acquire() is False
    assert time.time() - started < 5
