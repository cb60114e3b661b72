"""What every job's `__main__` does: read the config file into its model, run, and exit with
the code that tells the children's failure policies what to do.

Exit codes: 0 done; 2 bad input (an `InputError`, or a config file that does not parse):
fixing the spec is the only cure, so the Job, JobSet and RayJob fail at once instead of
retrying; 1 anything else (retried by the children's back-off, resuming where it stopped).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from longreach.contract.errors import BAD_INPUT_EXIT_CODE, InputError
from longreach.contract.kind import JobConfig

C = TypeVar("C", bound=JobConfig)


def one_line(e: BaseException) -> str:
    """An error as one line; a pydantic error as `field: message; ...`."""
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in e.errors(include_url=False)
        )
    return " ".join(str(e).split())


def main(
    prog: str,
    config_model: type[C],
    run: Callable[[C, argparse.Namespace], object],
    argv: list[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse `--config` (and the job's own options), run, and map the outcome to an exit code.
    `run` reports its own progress and failures in progress.json."""
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
        run(config, args)
    except InputError as e:
        print(f"{prog}: {one_line(e)}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    except Exception as e:
        traceback.print_exc()
        print(f"{prog}: failed: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1
    return 0
