"""Ray plumbing of the mixture job, apart from the pipeline: connecting to (or starting) Ray,
and mapping a function over work units with Ray Data, errors carried back intact; or, for
work too small to pay for Ray's processes, in the driver's own process.

A local Ray costs ~25-30 CPU-seconds on two cores before it has done any work (GCS, raylet,
agents, and workers that import Ray Data, pyarrow and the tokenizer: docs/benchmarks.md),
three times a 1M-token mixture's whole work. So a
job without a cluster (no RAY_ADDRESS, no Ray already running) maps in its own process while
a pass is small: the scan up to LOCAL_SCAN_BYTES of input, the build up to LOCAL_BUILD_TOKENS
tokens to tokenize; past that it starts Ray, with one worker per CPU. The output is the same
either way: every decision depends on the config and the documents alone."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from longreach.contract.errors import InputError

log = logging.getLogger("longreach.mixture")
LOCAL_RAY_START_ATTEMPTS = 3
LOCAL_SCAN_BYTES = 256 << 20
"""Input (uncompressed, as estimated from file sizes) a scan reads in the driver's process."""
LOCAL_BUILD_TOKENS = 4_000_000
"""Tokens a build tokenizes in the driver's process (about 4 CPU-seconds)."""
COMPRESSION = {"jsonl": 1, "jsonl.zst": 4, "parquet": 4}
"""Assumed uncompressed / stored size by format, to size the scan before reading."""
WORKER_ENV = {
    "PYTHONSAFEPATH": "1",
    # One tokenizer thread per Ray worker: Ray runs one worker per CPU.
    "RAYON_RS_NUM_CPUS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class RunOptions:
    """How the job runs; none of it changes the output."""

    ray_address: str | None = None
    """Connect to this Ray cluster (a RayJob sets RAY_ADDRESS); None starts a local one."""
    num_cpus: int | None = None
    """CPUs of a local Ray instance; None: all."""
    workers: int | None = None
    """At most this many files processed at once; None: as many as Ray schedules."""
    files_per_task: int = 1
    """Work units per Ray Data block: files in the scan, file groups in the build."""
    batch_size: int = 256
    """Documents per tokenizer batch."""
    progress_interval: float = 2.0
    """Seconds between progress.json writes."""
    ray: bool | None = None
    """Map with Ray (True), in this process (False), or by the work's size (None): Ray where
    a cluster address is set or Ray already runs, else only for passes too big for one process."""

    def use_ray(self, small: bool) -> bool:
        """Whether a pass maps with Ray; `small`: it fits in this process (see the module)."""
        if self.ray is not None:
            return self.ray
        ray = sys.modules.get("ray")  # not imported: not running here (and no import to pay)
        return bool(self.ray_address) or (ray is not None and ray.is_initialized()) or not small


def connect_ray(options: RunOptions) -> None:
    """Reuse an initialised Ray, join RAY_ADDRESS's cluster, or start a local instance.
    Workers inherit PYTHONSAFEPATH so the repository's `operator/` folder never shadows the
    standard library when the driver runs from the repository root."""
    import ray

    if ray.is_initialized():
        return
    if options.ray_address:
        ray.init(
            address=options.ray_address,
            runtime_env={"env_vars": WORKER_ENV},
            log_to_driver=False,
        )
        return
    # A local Ray's processes inherit the driver's environment: no runtime_env, whose set-up
    # would start another set of workers beside the ones Ray starts with.
    os.environ.update(WORKER_ENV)
    # A local start has fixed deadlines (the raylet waits ~15 s for its agents, the driver 30 s
    # for the raylet) that a loaded two-core machine can miss; a second start usually finds
    # the files it imports cached and comes up in seconds.
    for attempt in range(1, LOCAL_RAY_START_ATTEMPTS + 1):
        try:
            ray.init(
                num_cpus=options.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            return
        except Exception as e:
            ray.shutdown()
            if attempt == LOCAL_RAY_START_ATTEMPTS:
                raise
            log.warning("local Ray did not start (attempt %d): %s; trying again", attempt, e)


def map_units(
    items: list[int], fn: Callable[[int], dict[str, Any]], options: RunOptions, *, small: bool
) -> Iterator[dict[str, Any]]:
    """fn over items, one result at a time as they finish (in any order): with Ray Data, or in
    this process where the pass is `small` and no cluster is at hand (RunOptions.use_ray)."""
    if not items:
        return iter(())
    if options.use_ray(small):
        connect_ray(options)
        return ray_map(items, fn, options)
    return (_result(_call(fn, i)) for i in items)


def _result(text: str) -> dict[str, Any]:
    result = json.loads(text)
    if "taskError" in result:
        error = result["taskError"]
        raise (InputError if error["input"] else TaskError)(error["message"])
    return result


def ray_map(
    items: list[int], fn: Callable[[int], dict[str, Any]], options: RunOptions
) -> Iterator[dict[str, Any]]:
    """fn over items in Ray Data, one result at a time as they finish (in any order)."""
    import ray
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    blocks = max(1, math.ceil(len(items) / options.files_per_task))
    ds = ray.data.from_items([{"i": i} for i in items], override_num_blocks=blocks)

    def apply(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "i": batch["i"],
            "result": np.array([_call(fn, int(i)) for i in batch["i"]], dtype=object),
        }

    ds = ds.map_batches(
        apply, batch_size=options.files_per_task, concurrency=options.workers, num_cpus=1
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for text in batch["result"]:
            yield _result(text)


class TaskError(Exception):
    """An unexpected error in a Ray task, with its type and message."""


def _call(fn: Callable[[int], dict[str, Any]], i: int) -> str:
    """fn(i) as JSON, or the error as a result: Ray hands the driver a wrapper whose cause
    chain (our InputError naming the file) does not survive pickling."""
    try:
        return json.dumps(fn(i))
    except Exception as exc:
        is_input = isinstance(exc, InputError)
        message = str(exc) if is_input else f"{type(exc).__name__}: {exc}"
        return json.dumps({"taskError": {"input": is_input, "message": message}})


def unwrap(exc: BaseException) -> BaseException:
    """The user's error inside Ray's wrappers (UserCodeException -> RayTaskError -> cause):
    our own InputError (ConfigConflict is one) where there is one, else the innermost error
    that is not Ray's."""
    found, current, seen = exc, exc, set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InputError):
            return current
        if not type(current).__module__.startswith("ray"):
            found = current
        nxt = getattr(current, "cause", None)
        current = nxt if isinstance(nxt, BaseException) else current.__cause__
    return found
