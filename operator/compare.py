"""`longreach compare` and `longreach report`: a comparison file expanded into resources, and the
outputs of finished arms found again (from the file, from output roots, or from a cluster).

Expansion is pure: one DataMixture, ContextExtension and NeedleEval per arm and seed, named
`<name>-<arm>[-s<seed>]-{mix,ext,needle}`, labelled with the comparison, the arm and the seed,
writing under `<root>/<arm>[/seed-<seed>]/{mixture,model,needle}`. The report itself is drawn
by a job process (`longreach.jobs.compare`): plotting belongs to the job images, not here.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from longreach.contract import storage
from longreach.contract.common import API_VERSION, StorageSpec
from longreach.contract.compare import (
    LABEL_ARM,
    LABEL_COMPARISON,
    LABEL_SEED,
    CompareSpec,
    ReportConfig,
    RunOutputs,
)
from longreach.operator import processes

REPORT_FILES = ("report.md", "report.png")


class CompareError(ValueError):
    """The comparison file or the outputs named are not usable; the message says why."""


def load(path: str) -> CompareSpec:
    """The comparison file, validated; an error names the field and the fix."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CompareError(f"{path}: cannot read it: {e}") from e
    if not isinstance(raw, dict):
        raise CompareError(f"{path}: expected a mapping with name, model, sources, arms, ...")
    try:
        return CompareSpec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{where}: {msg}" if where else msg)
        raise CompareError(f"{path}: " + "; ".join(lines)) from e


def _suffix(spec: CompareSpec, seed: int) -> tuple[str, str]:
    """The name part and the folder part of a seed ('' for a single-seed comparison)."""
    return ("", "") if len(spec.seeds) == 1 else (f"-s{seed}", f"seed-{seed}")


def outputs(spec: CompareSpec, root: str | None = None) -> list[RunOutputs]:
    """Where each arm and seed writes, under `root` (default: the file's output.uri)."""
    base = root or spec.output.uri
    out = []
    for arm in spec.arm_names():
        for seed in spec.seeds:
            folder = storage.join(base, arm, *filter(None, [_suffix(spec, seed)[1]]))
            out.append(
                RunOutputs(
                    arm=arm,
                    seed=seed if len(spec.seeds) > 1 else None,
                    mixture=storage.join(folder, "mixture"),
                    model=storage.join(folder, "model"),
                    needle=storage.join(folder, "needle"),
                )
            )
    return out


def _document(kind: str, name: str, labels: dict[str, str], spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_unset=True),
    }


def expand(spec: CompareSpec) -> list[dict[str, Any]]:
    """The resources of the comparison, in dependency order per arm and seed."""
    strategies = spec.strategies()
    docs = []
    places = iter(outputs(spec))
    for arm in spec.arm_names():
        for seed in spec.seeds:
            where = next(places)
            stem = f"{spec.name}-{arm}{_suffix(spec, seed)[0]}"
            labels = {LABEL_COMPARISON: spec.name, LABEL_ARM: arm, LABEL_SEED: str(seed)}
            mix, ext = f"{stem}-mix", f"{stem}-ext"
            docs += [
                _document(
                    "DataMixture",
                    mix,
                    labels,
                    spec.mixture_spec(strategies[arm], where.mixture, seed),
                ),
                _document(
                    "ContextExtension", ext, labels, spec.training_spec(where.model, mix, seed)
                ),
                _document(
                    "NeedleEval", f"{stem}-needle", labels, spec.eval_spec(ext, where.needle)
                ),
            ]
    return docs


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """Multi-document YAML for `kubectl apply -f -`."""
    return yaml.safe_dump_all(docs, sort_keys=False)


def discover(root: str, store: StorageSpec | None = None) -> list[RunOutputs]:
    """Finished arms under a comparison root: <root>/<arm>[/seed-N]/needle/results.json."""
    fs, path = storage.filesystem(root, store)
    base = path.rstrip("/")
    found = []
    pattern = re.compile(rf"^{re.escape(base)}/([^/]+)(?:/seed-(-?\d+))?/needle/results\.json$")
    hits = fs.glob(f"{base}/*/needle/results.json") + fs.glob(
        f"{base}/*/seed-*/needle/results.json"
    )
    for hit in sorted(hits):
        m = pattern.match(hit.rstrip("/"))
        if not m:
            continue
        folder = storage.join(root, m.group(1), *([f"seed-{m.group(2)}"] if m.group(2) else []))
        found.append(
            RunOutputs(
                arm=m.group(1),
                seed=int(m.group(2)) if m.group(2) else None,
                mixture=storage.join(folder, "mixture"),
                model=storage.join(folder, "model"),
                needle=storage.join(folder, "needle"),
            )
        )
    if not found:
        raise CompareError(
            f"{root}: no finished arm found (expected <root>/<arm>[/seed-N]/needle/results.json)"
        )
    return found


def write_report(config: ReportConfig, workdir: Path) -> int:
    """Run the report job on `config`; it writes report.md and report.png and prints the table."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "report-config.json"
    path.write_text(config.model_dump_json(by_alias=True, indent=2))
    command = [sys.executable, "-P", "-m", "longreach.jobs.compare", str(path)]
    with processes.stop_on_signals():
        return processes.run(command, {**os.environ, "PYTHONSAFEPATH": "1"})


def expanded_file(spec: CompareSpec) -> Path:
    """The expansion written to a file, for the local runner."""
    fd, name = tempfile.mkstemp(prefix=f"compare-{spec.name}-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(to_yaml(expand(spec)))
    return Path(name)


def from_cluster(namespace: str, selector: str) -> list[RunOutputs]:
    """The outputs of the NeedleEvals matching `selector` and of what they evaluated: each
    NeedleEval's ContextExtension and that one's DataMixture, read from the API server. Every
    one must have succeeded; otherwise the error lists what is not done yet."""
    import kubernetes

    from longreach.contract.common import GROUP, VERSION

    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    api = kubernetes.client.CustomObjectsApi()

    def get(plural: str, name: str) -> dict[str, Any]:
        return api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, _request_timeout=30
        )

    evals = api.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "needleevals", label_selector=selector, _request_timeout=30
    )["items"]
    if not evals:
        raise CompareError(f"no NeedleEval in namespace {namespace} matches {selector!r}")
    runs, unfinished = [], []
    for ev in evals:
        meta = ev["metadata"]
        ext_name = ev["spec"]["model"].get("contextExtensionRef")
        if not ext_name:
            raise CompareError(f"NeedleEval/{meta['name']}: evaluates no ContextExtension")
        ext = get("contextextensions", ext_name)
        mix_name = ext["spec"]["data"].get("dataMixtureRef")
        if not mix_name:
            raise CompareError(f"ContextExtension/{ext_name}: trains on no DataMixture")
        mix = get("datamixtures", mix_name)
        for kind, obj in (("NeedleEval", ev), ("ContextExtension", ext), ("DataMixture", mix)):
            phase = (obj.get("status") or {}).get("phase", "Pending")
            if phase != "Succeeded":
                unfinished.append(f"{kind}/{obj['metadata']['name']}: {phase}")
        labels = meta.get("labels") or {}
        seed = labels.get(LABEL_SEED)
        runs.append(
            RunOutputs(
                arm=labels.get(LABEL_ARM, meta["name"]),
                seed=int(seed) if seed and seed.lstrip("-").isdigit() else None,
                mixture=mix["spec"]["output"]["uri"],
                model=ext["spec"]["output"]["uri"],
                needle=ev["spec"]["output"]["uri"],
            )
        )
    if unfinished:
        raise CompareError("not finished yet: " + "; ".join(unfinished))
    arms = {r.arm for r in runs}
    per_arm = {a: sum(r.arm == a for r in runs) for a in arms}
    if max(per_arm.values()) == 1:  # one seed per arm: no seed column, as for a local report
        runs = [r.model_copy(update={"seed": None}) for r in runs]
    return runs
