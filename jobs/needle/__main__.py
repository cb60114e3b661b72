"""`python -m longreach.jobs.needle --config config.json`: run a NeedleEval's grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longreach.jobs.needle", description=__doc__)
    parser.add_argument(
        "--config", required=True, type=Path, help="the job's config JSON (NeedleJobConfig)"
    )
    args = parser.parse_args(argv)

    from longreach.operator.needleeval.spec import NeedleJobConfig

    try:
        config = NeedleJobConfig.model_validate_json(args.config.read_bytes())
    except (OSError, ValidationError) as e:
        print(f"needle: invalid config {args.config}: {_one_line(e)}", file=sys.stderr)
        return 2
    from longreach.jobs.needle.job import run

    try:
        run(config)
    except Exception as e:  # run() has written progress.json with the error already
        print(f"needle: failed: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _one_line(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
