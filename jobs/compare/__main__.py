"""`python -m longreach.jobs.compare CONFIG.json`: write a comparison's report.md and report.png
(a ReportConfig names the runs and where the report goes) and print the table.

Exit codes as for every job: 0 done, 2 bad input (an output missing or unreadable), 1 else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from longreach.contract import storage
from longreach.contract.compare import ReportConfig
from longreach.contract.errors import BAD_INPUT_EXIT_CODE, InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longreach.jobs.compare", description=__doc__)
    parser.add_argument("config", help="a ReportConfig as JSON")
    args = parser.parse_args(argv)
    try:
        config = ReportConfig.model_validate_json(Path(args.config).read_text())
    except (OSError, ValidationError) as e:
        print(f"error: {args.config}: {e}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    from longreach.jobs.compare.report import build

    try:
        text = build(config)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    print(text)
    print(f"report: {storage.join(config.output, 'report.md')} and report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
