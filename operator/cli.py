"""The `longreach` command: operator, crds, plan, run, compare, report, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from longreach.contract.compare import LABEL_COMPARISON, ReportConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def _crds(args: argparse.Namespace) -> int:
    from longreach.operator import crds

    for path in crds.write(Path(args.root)):
        print(f"wrote {path}")
    readme = Path(args.root) / "README.md"
    if readme.exists():
        crds.write_reference(readme)
        print(f"wrote the field reference in {readme}")
    return 0


def _operator(args: argparse.Namespace) -> int:
    from longreach.operator.main import run
    from longreach.operator.settings import OperatorSettings

    settings = OperatorSettings.from_env()
    if args.namespace:
        settings = settings.model_copy(update={"namespaces": args.namespace})
    if args.executor:
        settings = settings.model_copy(update={"executor": args.executor})
    run(settings)
    return 0


def _plan(args: argparse.Namespace) -> int:
    import yaml

    from longreach.contract.contextextension import CONTRACT, ContextExtensionSpec
    from longreach.operator.contextextension.adapter import read_model_config
    from longreach.operator.contextextension.memory import plan, render

    KIND = CONTRACT.kind
    docs = [
        d for d in yaml.safe_load_all(Path(args.file).read_text()) if d and d.get("kind") == KIND
    ]
    if not docs:
        print(f"{args.file}: no {KIND} in the file", file=sys.stderr)
        return 1
    fits = True
    for doc in docs:
        spec = ContextExtensionSpec.model_validate(doc["spec"])
        p = plan(spec, read_model_config(spec))
        print(f"{KIND}/{doc['metadata']['name']}:\n{render(p)}\n")
        fits = fits and p.fits
    return 0 if fits else 1


def _run(args: argparse.Namespace) -> int:
    from longreach.operator.localrun import RunError, run
    from longreach.operator.processes import Stopped

    try:
        run(args.file, args.artifacts, force=args.force)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        return 128 + (e.signum if isinstance(e, Stopped) else 2)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from longreach.operator import compare
    from longreach.operator.localrun import RunError, resolve, run
    from longreach.operator.processes import Stopped

    try:
        spec = compare.load(args.file)
    except compare.CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.print:
        print(compare.to_yaml(compare.expand(spec)), end="")
        return 0
    artifacts = args.artifacts if "://" in args.artifacts else str(Path(args.artifacts).resolve())
    expanded = compare.expanded_file(spec)
    try:
        run(str(expanded), artifacts, force=args.force)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        return 128 + (e.signum if isinstance(e, Stopped) else 2)
    finally:
        expanded.unlink()
    root = resolve(spec.output.uri, artifacts)
    config = ReportConfig(
        title=spec.name, runs=compare.outputs(spec, root), output=root, storage=spec.storage
    )
    return compare.write_report(config, _workdir(artifacts))


def _report(args: argparse.Namespace) -> int:
    from longreach.contract.common import StorageSpec
    from longreach.operator import compare
    from longreach.operator.localrun import resolve

    artifacts = args.artifacts if "://" in args.artifacts else str(Path(args.artifacts).resolve())
    store = StorageSpec(endpoint=args.endpoint, region=args.region)
    try:
        if args.selector:
            runs = compare.from_cluster(args.namespace, args.selector)
            title, out = args.selector.removeprefix(f"{LABEL_COMPARISON}="), "./longreach-report"
        elif len(args.sources) == 1 and args.sources[0].endswith((".yaml", ".yml")):
            spec = compare.load(args.sources[0])
            root = resolve(spec.output.uri, artifacts)
            runs, title, out, store = compare.outputs(spec, root), spec.name, root, spec.storage
        elif args.sources:
            runs = [r for uri in args.sources for r in compare.discover(uri, store)]
            title, out = args.sources[0].rstrip("/").rsplit("/", 1)[-1], args.sources[0]
        else:
            print("error: name a compare file, output roots, or --selector", file=sys.stderr)
            return 1
    except compare.CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    config = ReportConfig(title=title, runs=runs, output=args.out or out, storage=store)
    return compare.write_report(config, _workdir(artifacts))


def _workdir(artifacts: str) -> Path:
    """Where the report job's config goes: beside the local runner's."""
    return Path(artifacts if "://" not in artifacts else ".longreach-runs") / ".runs" / "report"


def _demo(args: argparse.Namespace) -> int:
    import os

    from longreach.operator import processes

    artifacts = str(Path(args.artifacts).resolve())
    # The demo's inputs (corpus, tokenizer, tiny model, haystack) are made by job code, in a
    # process of its own: the operator side never imports the jobs.
    prepare = [sys.executable, "-P", "-m", "longreach.jobs.demo", "--artifacts", artifacts]
    try:
        with processes.stop_on_signals():
            code = processes.run(prepare, {**os.environ, "PYTHONSAFEPATH": "1"})
    except KeyboardInterrupt as e:
        return 128 + (e.signum if isinstance(e, processes.Stopped) else 2)
    if code != 0:
        print(f"error: preparing the demo's inputs failed (exit code {code})", file=sys.stderr)
        return code
    args.artifacts, args.force = artifacts, False
    if args.compare:
        args.file, args.print = str(DEMO_COMPARISON), False
        return _compare(args)
    args.file = str(QUICKSTART)
    return _run(args)


QUICKSTART = REPO_ROOT / "manifests" / "examples" / "quickstart.yaml"
DEMO_COMPARISON = REPO_ROOT / "manifests" / "examples" / "comparisons" / "demo-strategies.yaml"


def _run_options(p: argparse.ArgumentParser) -> None:
    """The options of the commands that run resources locally (run, compare)."""
    p.add_argument(
        "--artifacts",
        default="./longreach-artifacts",
        help="artifact directory or URI; relative paths in the file resolve here",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="an output made from another config is deleted and made again (without: stop)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="longreach", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "crds", help="regenerate the CRDs (and the README's field reference) from the spec models"
    )
    p.add_argument("--root", default=str(REPO_ROOT), help="repository root to write into")
    p.set_defaults(func=_crds)

    p = sub.add_parser("operator", help="run the operator (settings from LONGREACH_* variables)")
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable)",
    )
    p.add_argument(
        "--executor", choices=["kubernetes", "local"], help="override LONGREACH_EXECUTOR"
    )
    p.set_defaults(func=_operator)

    p = sub.add_parser(
        "plan",
        help="estimate GPU memory of each ContextExtension in a file; exit 1 if one cannot fit",
    )
    p.add_argument("file", help="YAML with ContextExtension documents")
    p.set_defaults(func=_plan)

    p = sub.add_parser("run", help="run the resources of a file on this machine (no cluster)")
    p.add_argument("file", help="YAML with DataMixture / ContextExtension / NeedleEval documents")
    _run_options(p)
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "compare",
        help="compare mixture strategies: expand a comparison file, run every arm, write a report",
    )
    p.add_argument("file", help="a comparison file (name, model, sources, arms, training, eval)")
    p.add_argument(
        "--print",
        action="store_true",
        help="print the resources as multi-document YAML for kubectl apply, run nothing",
    )
    _run_options(p)
    p.set_defaults(func=_compare)

    p = sub.add_parser(
        "report",
        help="a comparison's report.md and report.png from finished outputs",
    )
    p.add_argument(
        "sources",
        nargs="*",
        help="a comparison file, or comparison roots (<root>/<arm>[/seed-N]/...; local or s3://)",
    )
    p.add_argument("--namespace", "-n", default="default", help="with --selector: the namespace")
    p.add_argument(
        "--selector",
        "-l",
        default="",
        help="read the NeedleEvals matching this label selector (and what they evaluated) "
        "from the cluster, e.g. longreach.io/comparison=strategies",
    )
    p.add_argument("--out", default="", help="where report.md and report.png go")
    p.add_argument(
        "--artifacts",
        default="./longreach-artifacts",
        help="with a comparison file: the artifact directory it ran with",
    )
    p.add_argument("--endpoint", default="", help="S3 endpoint for s3:// roots (MinIO, Ceph)")
    p.add_argument("--region", default="", help="S3 region for s3:// roots")
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "demo", help="the whole recipe on a laptop: corpus, mixture, training, needle grid"
    )
    p.add_argument(
        "--artifacts", default="./longreach-artifacts", help="where everything is written"
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="instead of the quickstart: the original and per-source mixtures compared, 3 seeds "
        "each (manifests/examples/comparisons/demo-strategies.yaml), and the report",
    )
    p.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
