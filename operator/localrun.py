"""`longreach run FILE.yaml`: the resources of a file, run on this machine in dependency order.

No cluster, no operator: the same adapters build each job's config (dependencies resolved
from the file), the same job modules run as local processes, and their progress.json drives
a progress line per resource. Relative paths in the file are resolved against the artifact
directory. A resource whose output is already committed is skipped, and the jobs resume
from their own shards and checkpoints, so Ctrl-C then running again continues.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from longreach.contract import storage
from longreach.contract.common import StatusBase
from longreach.contract.report import Report, read_report
from longreach.operator.adapter import AnyAdapter, Resolved
from longreach.operator.kinds import BY_KIND

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


def run_one(r: Resource, done: dict[str, Resource], workdir: Path, out: TextIO) -> None:
    uri = r.adapter.output_uri(r.spec)
    marker = storage.join(uri, r.adapter.contract.marker)
    if storage.exists(marker, r.spec.storage):
        r.succeeded(_report(r, uri))
        print(f"{r.label}: already done ({marker}); skipping", file=out)
        return
    folder = workdir / r.kind.lower() / r.name
    folder.mkdir(parents=True, exist_ok=True)
    config = r.adapter.job_config(r.name, "local", r.spec, _dependencies(r, done))
    (folder / "config.json").write_text(config.model_dump_json(by_alias=True, indent=2))
    command = r.adapter.local_command(str(folder / "config.json"), r.spec)
    log_path = folder / "job.log"
    started = time.time()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
            start_new_session=True,
        )
        try:
            while proc.poll() is None:
                _show(r, uri, started, out)
                time.sleep(0.5)
        except KeyboardInterrupt:
            # Let the job stop cleanly (it checkpoints and flushes); a second Ctrl-C is not needed.
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
            print(f"\n{r.label}: interrupted; run the same command again to continue", file=out)
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
    path: str, artifacts: str = "./longreach-artifacts", out: TextIO = sys.stdout
) -> list[Resource]:
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    resources = load(path, artifacts)
    workdir = Path(artifacts if "://" not in artifacts else ".longreach-runs") / ".runs"
    done: dict[str, Resource] = {}
    print(f"running {len(resources)} resources from {path}; artifacts in {artifacts}", file=out)
    for r in resources:
        run_one(r, done, workdir, out)
        done[r.label] = r
    print(summary(resources), file=out)
    return resources
