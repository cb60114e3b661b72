"""Local job processes that never outlive their runner (`longreach run`, `longreach demo`).

Each job starts in a process group of its own (so a signal reaches the job, torchrun and its
workers, and Ray started for the job, and a terminal's Ctrl-C reaches only the runner), with
the kernel's parent-death signal set: if the runner dies, even by SIGKILL, the job gets
SIGTERM and stops cleanly (the jobs set the same signal for their own children). When the
runner is told to stop (Ctrl-C, SIGTERM, SIGHUP), it passes the signal on to the job's group
and waits for it to record that it stopped; what is still alive after the grace period is
killed."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import IO, Any

PR_SET_PDEATHSIG = 1
GRACE_SECONDS = 30.0


class Stopped(KeyboardInterrupt):
    """The runner was told to stop (SIGTERM or SIGHUP; Ctrl-C raises KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _die_with_parent(parent: int) -> Any:
    def preexec() -> None:  # runs in the child, between fork and exec
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(143)

    return preexec


def start(
    command: list[str], env: dict[str, str], log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """The job as the leader of a new process group that dies with this process; its output
    goes to `log` (or this process's own output)."""
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()),
    )


def run(command: list[str], env: dict[str, str]) -> int:
    """Run a job to its end in the foreground; a stop of the runner is passed on to it."""
    proc = start(command, env)
    try:
        return proc.wait()
    except KeyboardInterrupt as e:
        stop(proc, e.signum if isinstance(e, Stopped) else signal.SIGINT)
        raise


def stop(proc: subprocess.Popen[bytes], signum: int, grace: float = GRACE_SECONDS) -> None:
    """Pass `signum` to the job's group; after `grace` seconds, kill what is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (a stuck worker)
    proc.wait()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Stopped in the runner, as Ctrl-C raises KeyboardInterrupt."""

    def raise_stopped(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    before = {sig: signal.signal(sig, raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
