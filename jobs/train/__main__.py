"""`python -m longreach.jobs.train --config config.json`, under torchrun or alone.

Exit codes: 0 done, 2 bad input (fix the spec; retrying will not help), 1 anything else."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from pydantic import ValidationError

from longreach.jobs.train.dist import rendezvous
from longreach.jobs.train.job import run_job
from longreach.jobs.train.report import Reporter
from longreach.jobs.train.settings import ConfigError
from longreach.operator.contextextension.spec import TrainJobConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longreach.jobs.train")
    parser.add_argument("--config", required=True, help="the TrainJobConfig JSON file")
    args = parser.parse_args(argv)
    rdzv = rendezvous(os.environ)
    os.environ.update(rdzv.env())  # a plain `python -m` gets single-process rendezvous values
    try:
        config = TrainJobConfig.model_validate_json(Path(args.config).read_text())
    except (OSError, ValidationError) as e:
        print(
            f"longreach train: invalid config {args.config}: {e}".replace("\n", " "),
            file=sys.stderr,
        )
        return 2
    reporter = Reporter(config.spec.output.uri, config.spec.storage, enabled=rdzv.isMain)
    try:
        run_job(config, rdzv, reporter)
    except ConfigError as e:
        reporter.failed(str(e))
        print(f"longreach train: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        traceback.print_exc()
        reporter.failed(f"{type(e).__name__}: {e}")
        print(f"longreach train: failed: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
