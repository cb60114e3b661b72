"""`python -m longreach.jobs.needle --config config.json`: run a NeedleEval's grid."""

from __future__ import annotations

import argparse
import sys

from longreach.contract.needleeval import NeedleJobConfig
from longreach.jobs import entry


def run(config: NeedleJobConfig, args: argparse.Namespace) -> None:
    from longreach.jobs.needle.job import run as evaluate

    evaluate(config)  # writes progress.json, including any failure


def main(argv: list[str] | None = None) -> int:
    return entry.main("needle", NeedleJobConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
