"""`python -m longreach.jobs.mixture --config config.json`: build a DataMixture's output."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a DataMixture (RECIPE.md section 1).")
    parser.add_argument("--config", required=True, help="the job's config JSON (MixtureJobConfig)")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of a local Ray instance")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="at most this many files at once (output unchanged)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from pydantic import ValidationError

    from longreach.jobs.mixture.job import RunOptions, run
    from longreach.operator.datamixture.spec import MixtureJobConfig

    try:
        config = MixtureJobConfig.model_validate_json(Path(args.config).read_text())
    except (OSError, ValidationError) as exc:
        print(f"mixture: invalid config {args.config}: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    # A RayJob's driver finds its cluster in RAY_ADDRESS; without it we start a local Ray.
    options = RunOptions(
        ray_address=os.environ.get("RAY_ADDRESS") or None, num_cpus=args.cpus, workers=args.workers
    )
    try:
        manifest = run(config, options)
    except Exception as exc:
        print(f"mixture: failed: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    print(
        f"mixture: wrote {manifest['chunks']} chunks ({manifest['tokens']} tokens) to {config.spec.output.uri}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
