"""What every job shares at its edges: the `__main__` (config in, exit code out), the claim on
its output location, and stopping on a signal.

Exit codes: 0 done; 2 bad input (an `InputError`, or a config file that does not parse):
fixing the spec is the only cure, so the children fail at once instead of retrying; 128 + the
signal's number when stopped (SIGTERM, SIGHUP, SIGINT); 1 anything else (retried by the
children's back-off, resuming where it stopped).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from longreach.contract.errors import BAD_INPUT_EXIT_CODE, InputError
from longreach.contract.kind import JobConfig
from longreach.contract.ownership import HEARTBEAT_SECONDS, Lease, OwnershipError
from longreach.contract.report import ReportWriter

C = TypeVar("C", bound=JobConfig)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
STOP_GRACE_SECONDS = 8.0
PR_SET_PDEATHSIG = 1


class JobStopped(BaseException):
    """The job was told to stop. A BaseException, like KeyboardInterrupt, so that no `except
    Exception` in the work swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def stop_on_signals(grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM, SIGHUP and SIGINT raise JobStopped in the main thread, and this process stops
    when its parent dies (the runner, torchrun), so nothing outlives what started it: the kernel
    sends SIGTERM (parent-death signal), and a watchdog thread forces the exit `grace` seconds
    later if the main thread cannot take the signal (stuck in a collective whose peer is gone;
    Python runs signal handlers only between bytecodes)."""

    def stop(signum: int, _frame: object) -> None:
        raise JobStopped(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise JobStopped(signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent, grace), daemon=True).start()


def _watch_parent(parent: int, grace: float) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    time.sleep(grace)  # the SIGTERM of the parent-death signal had its chance
    print("the parent process died and the job did not stop: exiting now", file=sys.stderr)
    os._exit(128 + signal.SIGTERM)


def one_line(e: BaseException) -> str:
    """An error as one line; a pydantic error as `field: message; ...`."""
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
    return " ".join(str(e).split())


@contextlib.contextmanager
def claim(
    config: JobConfig,
    writer: ReportWriter[Any],
    *,
    marker: str,
    holder: bool = True,
) -> Iterator[Lease]:
    """Hold the job's output location for the duration of the work, and report how it ended.

    On entry the lease is acquired (by the one process that writes: `holder`); `lease.record`
    says whether the output is already finished. On the way out: a failure is written to
    progress.json (not when the output belongs to someone else: that progress.json is theirs),
    a stop is recorded as stopped, and the lease is released unless the work called
    `lease.finish()` after committing."""
    spec = config.spec
    lease = Lease(
        spec.output.uri,  # type: ignore[attr-defined]
        spec.storage,
        config.owner(),
        config.output_config(),
        lease_seconds=config.leaseSeconds,
        heartbeat_seconds=min(HEARTBEAT_SECONDS, config.leaseSeconds / 6),
        on_lost=lambda _why: os.kill(os.getpid(), signal.SIGTERM),
    )
    try:
        if holder:
            lease.acquire(finished_marker=marker)
        yield lease
    except OwnershipError:
        raise
    except JobStopped as e:
        why = f"lost its output: {lease.lost}" if lease.lost else str(e)
        with contextlib.suppress(Exception):
            if lease.lost:
                writer.failed(why)
            else:
                writer.stopped(f"{why}; run it again to continue where it stopped")
        raise
    except InputError as e:
        with contextlib.suppress(Exception):
            writer.failed(str(e), bad_input=True)
        raise
    except Exception as e:
        with contextlib.suppress(Exception):
            writer.failed(f"{type(e).__name__}: {e}")
        raise
    finally:
        lease.release()


def main(
    prog: str,
    config_model: type[C],
    run: Callable[[C, argparse.Namespace], object],
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse `--config` (and the job's own options), run, and map the outcome to an exit code.
    `run` claims its output and reports its own progress (see `claim`)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", required=True, type=Path, help="the job's config JSON")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_model.model_validate_json(args.config.read_bytes())
    except (OSError, ValidationError) as e:
        print(f"{prog}: invalid config {args.config}: {one_line(e)}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    try:
        stop_on_signals()
        run(config, args)
    except JobStopped as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 128 + e.signum
    except InputError as e:
        print(f"{prog}: {one_line(e)}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    except Exception as e:
        traceback.print_exc()
        print(f"{prog}: failed: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1
    return 0
