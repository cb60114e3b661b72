"""The `longreach` command: operator, crds, plan, run, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _crds(args: argparse.Namespace) -> int:
    from longreach.operator import crds

    for path in crds.write(Path(args.root)):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="longreach", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("crds", help="regenerate the CRDs from the spec models")
    p.add_argument("--root", default=str(REPO_ROOT), help="repository root to write into")
    p.set_defaults(func=_crds)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
