"""How local mode starts a training run: torchrun with one process per training rank."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from longreach.operator.contextextension.spec import ContextExtensionSpec


def launch_command(config_path: str, spec: ContextExtensionSpec) -> list[str]:
    """`torchrun --standalone --nproc-per-node=N -m longreach.jobs.train --config PATH` with
    N = spec.world_size() (one process per GPU, or one per node on CPU). Run it with
    `launch_env()` so no process puts the working directory on sys.path."""
    return [
        sys.executable,
        "-P",
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={spec.world_size()}",
        "-m",
        "longreach.jobs.train",
        "--config",
        str(config_path),
    ]


def launch_env(base: Mapping[str, str]) -> dict[str, str]:
    """`base` plus PYTHONSAFEPATH=1: the repository's `operator/` folder would otherwise shadow
    the standard library's `operator` in the worker processes torchrun starts."""
    return {**base, "PYTHONSAFEPATH": "1"}
