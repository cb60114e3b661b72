"""`longreach run FILE.yaml`: the resources of a file, run on this machine in dependency order.

No cluster, no operator: the same adapters build each job's config (dependencies resolved
from the file), the same job modules run as local processes, and their progress.json drives
a progress line per resource. Relative paths in the file are resolved against the artifact
directory. A resource whose output is already committed is skipped, and the jobs resume
from their own shards and checkpoints, so Ctrl-C then running again continues.
"""

from __future__ import annotations

import json
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

from longreach.jobs import storage
from longreach.operator.common import parse_tokens
from longreach.operator.contextextension.handlers import ContextExtensionAdapter
from longreach.operator.datamixture.handlers import DataMixtureAdapter
from longreach.operator.needleeval.handlers import NeedleEvalAdapter
from longreach.operator.reconcile import Adapter

ADAPTERS: dict[str, Adapter] = {
    a.kind: a for a in (DataMixtureAdapter(), ContextExtensionAdapter(), NeedleEvalAdapter())
}
SCHEMES = ("s3://", "file://", "builtin:", "gs://", "hf://")


class RunError(RuntimeError):
    """A resource failed or the file is invalid; the message says which and why."""


@dataclass
class Resource:
    kind: str
    name: str
    spec: Any
    adapter: Adapter
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


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
        if kind not in ADAPTERS:
            raise RunError(
                f"{path}: document {i + 1}: kind {kind!r} is not one of {', '.join(ADAPTERS)}"
            )
        adapter = ADAPTERS[kind]
        try:
            spec = adapter.spec_model.model_validate(
                _resolve_paths(doc.get("spec") or {}, artifacts)
            )
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


def _dependency_objects(r: Resource, done: dict[str, Resource]) -> dict[str, dict[str, Any]]:
    """What the operator would read from the API server: the dependency's spec and status."""
    out = {}
    for dep in r.adapter.dependencies(r.spec):
        d = done[f"{dep.kind}/{dep.name}"]
        out[dep.name] = {
            "spec": d.spec.model_dump(by_alias=True, mode="json"),
            "status": {"phase": "Succeeded", "result": d.result},
        }
    return out


def run_one(r: Resource, done: dict[str, Resource], workdir: Path, out: TextIO) -> None:
    uri = r.adapter.output_uri(r.spec)
    marker = storage.join(uri, r.adapter.marker)
    if storage.exists(marker, r.spec.storage):
        progress = (
            storage.read_json_if_exists(storage.join(uri, "progress.json"), r.spec.storage) or {}
        )
        r.result = {"uri": uri, **(progress.get("result") or {})}
        print(f"{r.label}: already done ({marker}); skipping", file=out)
        return
    folder = workdir / r.kind.lower() / r.name
    folder.mkdir(parents=True, exist_ok=True)
    config = r.adapter.job_config(r.name, "local", r.spec, _dependency_objects(r, done))
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
    progress = storage.read_json_if_exists(storage.join(uri, "progress.json"), r.spec.storage) or {}
    _show(r, uri, started, out, final=True)
    if proc.returncode != 0 or not storage.exists(marker, r.spec.storage):
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
        why = progress.get("error") or f"exit code {proc.returncode}: {tail}"
        raise RunError(f"{r.label} failed: {why}\n  log: {log_path}")
    r.result = {"uri": uri, **(progress.get("result") or {})}


_last_line: dict[str, str] = {}


def _show(r: Resource, uri: str, started: float, out: TextIO, final: bool = False) -> None:
    """One progress line per resource: redrawn in place on a terminal, printed on change elsewhere."""
    try:
        p = storage.read_json_if_exists(storage.join(uri, "progress.json"), r.spec.storage) or {}
    except (OSError, json.JSONDecodeError):
        p = {}
    percent = float(p.get("percent") or 0)
    bar = "#" * int(percent / 5) + "-" * (20 - int(percent / 5))
    text = f"{r.label:<32} [{bar}] {percent:5.1f}%  {str(p.get('message', ''))[:70]}"
    if out.isatty():
        width = shutil.get_terminal_size().columns
        line = f"{text}  {time.time() - started:.0f}s"[: width - 1]
        print(f"\r{line:<{width - 1}}", end="\n" if final else "", file=out, flush=True)
    elif _last_line.get(r.label) != text or final:
        _last_line[r.label] = text
        print(f"{text}  {time.time() - started:.0f}s", file=out, flush=True)


def summary(resources: list[Resource]) -> str:
    """What a user wants to see at the end: shares, long-document fraction, loss, score, files."""
    lines = ["", "Summary"]
    for r in resources:
        res, uri = r.result, r.result.get("uri", "")
        if r.kind == "DataMixture":
            shares = ", ".join(
                f"{d.removeprefix('RedPajama')} {s:.3f}"
                for d, s in sorted((res.get("domainShares") or {}).items())
            )
            lines.append(
                f"  {r.label}: {res.get('tokens', 0):,} tokens in {res.get('chunks', 0)} chunks; long-document tokens {res.get('longDocumentTokenFraction', 0):.0%}"
            )
            lines.append(f"    shares: {shares}")
            lines.append(
                f"    plots: {storage.join(uri, 'domains.png')}  {storage.join(uri, 'lengths.png')}"
            )
        elif r.kind == "ContextExtension":
            out = r.adapter.output_uri(r.spec)
            losses = sorted(
                (res.get("validationLoss") or {}).items(), key=lambda kv: parse_tokens(kv[0])
            )
            val = ", ".join(f"@{k} {v:.3f}" for k, v in losses)
            lines.append(
                f"  {r.label}: final loss {res.get('loss', 0):.3f}; validation loss by position: {val or 'n/a'}"
            )
            lines.append(
                f"    model: {storage.join(out, 'final')}  metrics: {storage.join(out, 'metrics.jsonl')}"
            )
        else:
            lines.append(
                f"  {r.label}: needle score {res.get('score', 0):.1f} (paper's scorer: {res.get('paperScore', 0):.1f})"
            )
            lines.append(
                f"    heatmap: {storage.join(uri, 'heatmap.png')}  results: {storage.join(uri, 'results.json')}"
            )
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
