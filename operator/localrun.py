"""`longreach run FILE.yaml`: the resources of a file, run on this machine in dependency order.

No cluster, no operator: the same adapters build each job's config (dependencies resolved
from the file), the same job modules run as local processes, and their progress.json drives
a progress line per resource. Relative paths in the file are resolved against the artifact
directory. A resource whose output was committed from the same resolved config is skipped;
one whose output holds another config stops the run with what differs (`--force` deletes it
and starts over); the jobs resume from their own shards and checkpoints, so Ctrl-C then
running again continues.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from longreach.contract import storage
from longreach.contract.common import StatusBase
from longreach.contract.kind import JobConfig
from longreach.contract.ownership import OWNER_FILE, config_hash, differences, read_record
from longreach.contract.report import Report, read_report
from longreach.operator import processes
from longreach.operator.adapter import AnyAdapter, Resolved
from longreach.operator.kinds import BY_KIND
from longreach.operator.outputs import Claimant, collision, refusal

SCHEMES = ("s3://", "file://", "builtin:", "gs://", "hf://")


class RunError(RuntimeError):
    """A resource failed or the file is invalid; the message says which and why."""


@dataclass
class Resource:
    kind: str
    name: str
    spec: Any
    adapter: AnyAdapter
    status: StatusBase | None = None
    """The status the operator would write once it succeeded (from the job's report)."""
    warnings: list[str] = field(default_factory=list)
    """The job's warnings (the operator's Warning condition)."""

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    def succeeded(self, report: Report | None) -> None:
        fields = report.status_fields(with_result=True) if report else {}
        self.status = self.adapter.contract.status.model_validate({"phase": "Succeeded", **fields})
        self.warnings = list(report.warnings) if report else []


def resolve(value: str, base: str) -> str:
    """A relative path becomes a location inside the artifact directory; URIs stay as they are."""
    if value.startswith(SCHEMES) or value.startswith("/") or "://" in value:
        return value
    return storage.join(base, value.removeprefix("./"))


def _resolve_paths(node: Any, base: str, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _resolve_paths(v, base, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_paths(v, base, key) for v in node]
    if key == "uri" and isinstance(node, str):
        return resolve(node, base)
    return node


def load(path: str, artifacts: str) -> list[Resource]:
    """Parse and validate every resource of the file before any work starts; dependency order."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    found: dict[str, Resource] = {}
    for i, doc in enumerate(docs):
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        if kind not in BY_KIND:
            raise RunError(
                f"{path}: document {i + 1}: kind {kind!r} is not one of {', '.join(BY_KIND)}"
            )
        adapter = BY_KIND[kind]
        try:
            spec = adapter.parse(_resolve_paths(doc.get("spec") or {}, artifacts))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise RunError(f"{path}: {kind}/{name}: spec.{where}: {err['msg']}") from e
        found[f"{kind}/{name}"] = Resource(kind, name, spec, adapter)
    claims = [
        Claimant(f"{i:06d}", r.kind, "local", r.name, r.adapter.output_uri(r.spec))
        for i, r in enumerate(found.values())
    ]
    for me in claims:
        other = collision(me, claims)
        if other is not None:
            raise RunError(f"{path}: {me.kind}/{me.name}: {refusal(me, other)}")
    ordered: list[Resource] = []
    visiting: set[str] = set()

    def visit(r: Resource) -> None:
        if r in ordered:
            return
        if r.label in visiting:
            raise RunError(f"{path}: dependency cycle through {r.label}")
        visiting.add(r.label)
        for dep in r.adapter.dependencies(r.spec):
            key = f"{dep.kind}/{dep.name}"
            if key not in found:
                raise RunError(f"{path}: {r.label} refers to {key}, which is not in the file")
            visit(found[key])
        ordered.append(r)

    for r in found.values():
        visit(r)
    return ordered


def _dependencies(r: Resource, done: dict[str, Resource]) -> dict[str, Resolved]:
    """What the operator would read from the API server: each dependency's spec and status."""
    out = {}
    for dep in r.adapter.dependencies(r.spec):
        d = done[f"{dep.kind}/{dep.name}"]
        assert d.status is not None
        out[dep.name] = Resolved(spec=d.spec, status=d.status)
    return out


def _report(r: Resource, uri: str) -> Report | None:
    return read_report(uri, r.adapter.contract.report, r.spec.storage)


def reuse_or_start_over(r: Resource, config: JobConfig, force: bool, out: TextIO) -> bool:
    """True when the output is committed from this very config (nothing to run). An output of
    another config or owner stops the run with what differs, unless `force`, which deletes it
    so the job starts over."""
    uri, store = r.adapter.output_uri(r.spec), r.spec.storage
    committed = storage.exists(storage.join(uri, r.adapter.contract.marker), store)
    record, _ = read_record(storage.join(uri, OWNER_FILE), store)
    mine = config.output_config()
    if record is not None and record.configHash == config_hash(mine):
        if record.owner == config.owner() and committed and record.state == "finished":
            print(f"{r.label}: already done with this config ({uri}); skipping", file=out)
            return True
        if record.owner.same_resource(config.owner()):
            return False  # unfinished: the job continues it
    if record is None and not committed:
        return False
    if record is None:
        why = "a finished output that no owner record claims"
    elif record.configHash != config_hash(mine):
        changed = differences(record.config, mine)
        why = f"an output of another config ({'; '.join(changed[:8]) or 'see owner.json'})"
    else:
        why = f"an output of {record.owner.describe()}"
    if not force:
        raise RunError(
            f"{r.label}: {uri} holds {why}; run with --force to delete it and start over, "
            "or point output.uri somewhere else"
        )
    print(f"{r.label}: --force: {uri} holds {why}; deleting it and starting over", file=out)
    fs, path = storage.filesystem(uri, store)
    fs.rm(path, recursive=True)
    return False


def run_one(
    r: Resource, done: dict[str, Resource], workdir: Path, out: TextIO, force: bool = False
) -> None:
    uri = r.adapter.output_uri(r.spec)
    marker = storage.join(uri, r.adapter.contract.marker)
    config = r.adapter.job_config(r.name, "local", "", r.spec, _dependencies(r, done))
    if reuse_or_start_over(r, config, force, out):
        r.succeeded(_report(r, uri))
        return
    folder = workdir / r.kind.lower() / r.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(config.model_dump_json(by_alias=True, indent=2))
    command = r.adapter.local_command(str(folder / "config.json"), r.spec)
    log_path = folder / "job.log"
    started = time.time()
    with open(log_path, "ab") as log:
        proc = processes.start(command, {**os.environ, "PYTHONSAFEPATH": "1"}, log)
        try:
            while proc.poll() is None:
                _show(r, uri, started, out)
                time.sleep(0.5)
        except KeyboardInterrupt as e:  # Ctrl-C, or processes.Stopped (SIGTERM, SIGHUP)
            # Pass it on and let the job stop cleanly: it releases its output and records
            # that it stopped; the next run continues from its shards and checkpoints.
            signum = e.signum if isinstance(e, processes.Stopped) else signal.SIGINT
            processes.stop(proc, signum)
            print(f"\n{r.label}: stopped; run the same command again to continue", file=out)
            raise
    report = _report(r, uri)
    _show(r, uri, started, out, final=True)
    if proc.returncode != 0 or not storage.exists(marker, r.spec.storage):
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
        why = (report.error if report else "") or f"exit code {proc.returncode}: {tail}"
        raise RunError(f"{r.label} failed: {why}\n  log: {log_path}")
    r.succeeded(report)


_last_line: dict[str, str] = {}


def _show(r: Resource, uri: str, started: float, out: TextIO, final: bool = False) -> None:
    """One progress line per resource: redrawn in place on a terminal, printed on change elsewhere."""
    try:
        report = _report(r, uri)
    except (OSError, ValueError):  # half-visible or unreadable: show the last line again
        report = None
    percent = report.percent() if report else 0.0
    bar = "#" * int(percent / 5) + "-" * (20 - int(percent / 5))
    text = f"{r.label:<32} [{bar}] {percent:5.1f}%  {(report.message if report else '')[:70]}"
    if out.isatty():
        width = shutil.get_terminal_size().columns
        line = f"{text}  {time.time() - started:.0f}s"[: width - 1]
        print(f"\r{line:<{width - 1}}", end="\n" if final else "", file=out, flush=True)
    elif _last_line.get(r.label) != text or final:
        _last_line[r.label] = text
        print(f"{text}  {time.time() - started:.0f}s", file=out, flush=True)


def summary(resources: list[Resource]) -> str:
    """What a user wants to see at the end: each kind's own summary lines."""
    lines = ["", "Summary"]
    for r in resources:
        assert r.status is not None
        first, *rest = r.adapter.summary(r.spec, r.status)
        lines += [f"  {r.label}: {first}", *(f"    {line}" for line in rest)]
        lines += [f"    warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def run(
    path: str,
    artifacts: str = "./longreach-artifacts",
    out: TextIO = sys.stdout,
    force: bool = False,
) -> list[Resource]:
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    resources = load(path, artifacts)
    workdir = Path(artifacts if "://" not in artifacts else ".longreach-runs") / ".runs"
    done: dict[str, Resource] = {}
    print(f"running {len(resources)} resources from {path}; artifacts in {artifacts}", file=out)
    with processes.stop_on_signals():
        for r in resources:
            run_one(r, done, workdir, out, force)
            done[r.label] = r
    print(summary(resources), file=out)
    return resources
