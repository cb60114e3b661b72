"""`python -m longreach.jobs.mixture --config config.json`: build a DataMixture's output."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from longreach.contract.datamixture import MixtureJobConfig
from longreach.jobs import entry


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of a local Ray instance")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="at most this many files at once (output unchanged)",
    )


def run(config: MixtureJobConfig, args: argparse.Namespace) -> None:
    from longreach.jobs.mixture.job import run as build
    from longreach.jobs.mixture.raymap import RunOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # A RayJob's driver finds its cluster in RAY_ADDRESS; without it we start a local Ray.
    address = os.environ.get("RAY_ADDRESS") or None
    manifest = build(
        config, RunOptions(ray_address=address, num_cpus=args.cpus, workers=args.workers)
    )
    print(
        f"mixture: wrote {manifest['chunks']} chunks ({manifest['tokens']} tokens) to "
        f"{config.spec.output.uri}"
    )


def main(argv: list[str] | None = None) -> int:
    return entry.main("mixture", MixtureJobConfig, run, argv, options)


if __name__ == "__main__":
    sys.exit(main())
