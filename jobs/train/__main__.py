"""`python -m longreach.jobs.train --config config.json`, under torchrun or alone.

Exit codes (jobs/entry.py): 0 done, 2 bad input (fix the spec; retrying will not help), 1
anything else."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import MutableMapping

from longreach.contract.contextextension import CONTRACT, TrainJobConfig
from longreach.contract.errors import InputError
from longreach.jobs import entry
from longreach.jobs.entry import claim
from longreach.jobs.train import cuda_archs
from longreach.jobs.train.dist import rendezvous
from longreach.jobs.train.job import run_job
from longreach.jobs.train.report import Reporter


def run(config: TrainJobConfig, args: argparse.Namespace) -> None:
    rdzv = rendezvous(os.environ)
    os.environ.update(rdzv.env())  # a plain `python -m` gets single-process rendezvous values
    reporter = Reporter(config.spec.output.uri, config.spec.storage, enabled=rdzv.isMain)
    # Rank 0 holds the lease on the output and writes progress; the other ranks follow it.
    with claim(config, reporter.writer, marker=CONTRACT.marker, holder=rdzv.isMain) as lease:
        readable_archs(os.environ, announce=rdzv.isMain)
        run_job(config, rdzv, reporter, lease)


def readable_archs(environ: MutableMapping[str, str], announce: bool = True) -> None:
    """Rewrite TORCH_CUDA_ARCH_LIST, before DeepSpeed JIT-compiles anything, into a form its
    op builder can read (cuda_archs.py); a list nobody can read is bad input (exit 2)."""
    try:
        update = cuda_archs.environment(environ)
    except ValueError as e:
        raise InputError(f"{e} (set in the image or the pod's environment)") from e
    for name, value in update.items():
        if announce:  # once per job, not once per rank
            print(
                f"longreach: {name}={environ[name]!r} read as {value!r} for DeepSpeed", flush=True
            )
    environ.update(update)


def main(argv: list[str] | None = None) -> int:
    return entry.main("longreach train", TrainJobConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
