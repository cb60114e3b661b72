"""CRDs generated from the spec models: one source of truth per schema.

`longreach crds` writes them to manifests/crds/ and the chart's files/crds/ (with the RBAC
rules of operator/rbac.py and the README's field reference); a test fails when the committed
files differ from what the models generate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from longreach.contract.common import GROUP, VERSION
from longreach.contract.kind import KindContract
from longreach.operator import rbac
from longreach.operator.kinds import ADAPTERS

CATEGORY = "longreach"
CONTRACTS: tuple[KindContract, ...] = tuple(a.contract for a in ADAPTERS)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema node into a Kubernetes structural OpenAPI v3 node."""
    node = dict(schema)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        node = {**target, **node}
    inner: dict[str, Any] = {}
    if "anyOf" in node:  # Optional[X]: drop the null branch; absence means unset
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union {branches} in a structural schema")
        inner = structural(branches[0], defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs") or (
            key == "additionalProperties" and not isinstance(value, dict)
        ):
            continue  # unknown fields are rejected by field validation, not by the schema
        if key == "properties":
            out[key] = {k: structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = structural(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            if value is not None:  # defaults are validated by CEL as given: write them whole
                out[key] = _without_nulls(value)
        else:
            out[key] = value
    out = {**inner, **out}
    if "enum" in out and "type" not in out:
        out["type"] = "integer" if isinstance(out["enum"][0], int) else "string"
    return out


def schema_of(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    return structural(raw, raw.get("$defs", {}))


def immutability(spec_schema: dict[str, Any], kind: str, editable: tuple[str, ...]) -> list[Any]:
    """CEL transition rules: every spec field but the editable ones keeps its value."""
    required = set(spec_schema.get("required", []))
    rules = []
    for name, prop in spec_schema["properties"].items():
        if name in editable:
            continue
        same = f"self.{name} == oldSelf.{name}"
        if name not in required and "default" not in prop:
            same = f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || {same})"
        rules.append(
            {
                "rule": same,
                "message": f"cannot change once the {kind} exists: delete and re-create it "
                f"(only {', '.join(editable)} can be edited)",
                "fieldPath": f".{name}",
            }
        )
    return rules


def crd(contract: KindContract) -> dict[str, Any]:
    kind, plural, spec_model = contract.kind, contract.plural, contract.spec
    spec_schema = schema_of(spec_model)
    spec_schema["x-kubernetes-validations"] = [
        *spec_schema.get("x-kubernetes-validations", []),
        *immutability(spec_schema, kind, spec_model.editable),
    ]
    status_schema = schema_of(contract.status)
    status_schema.pop("default", None)
    printer = [
        {
            "name": "Phase",
            "type": "string",
            "jsonPath": ".status.phase",
            "description": "Pending, Waiting, Running, Succeeded, Failed or Suspended",
        },
        *contract.columns,
        {
            "name": "Message",
            "type": "string",
            "jsonPath": ".status.message",
            "priority": 1,
            "description": "Why it waits or failed",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "longreach"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [contract.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (spec_model.__doc__ or kind).strip().splitlines()[0],
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # shared rule lists must not become &anchors
        return True


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    out = {}
    for contract in CONTRACTS:
        text = yaml.dump(crd(contract), Dumper=_Dumper, sort_keys=False, width=120)
        out[f"{GROUP}_{contract.plural}.yaml"] = (
            "# Generated by `longreach crds` from the spec models. Do not edit.\n" + text
        )
    return out


def targets(root: Path) -> list[Path]:
    return [root / "manifests" / "crds", root / "charts" / "longreach" / "files" / "crds"]


def kustomization() -> str:
    """manifests/crds as a kustomization, so manifests/base can include it."""
    files = "".join(f"  - {name}\n" for name in render_all())
    return (
        "# Generated by `longreach crds`. Do not edit.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
        + files
    )


def generated(root: Path) -> dict[Path, str]:
    """Every generated file under `root` and its text: the CRDs in each target folder, the
    kustomization of manifests/crds, and the RBAC rules."""
    out = {folder / name: text for folder in targets(root) for name, text in render_all().items()}
    out[root / "manifests" / "crds" / "kustomization.yaml"] = kustomization()
    return out | rbac.render_all(root)


def write(root: Path) -> list[Path]:
    """Write every generated file."""
    files = generated(root)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


REFERENCE_START = "<!-- reference:start (generated by `longreach crds`; do not edit) -->"
REFERENCE_END = "<!-- reference:end -->"


def _rows(node: dict[str, Any], path: str) -> list[str]:
    rows = []
    for name, child in (node.get("properties") or {}).items():
        field = f"{path}.{name}" if path else name
        kind = child.get("type", "int or string" if child.get("x-kubernetes-int-or-string") else "")
        if not kind and child.get("x-kubernetes-preserve-unknown-fields"):
            kind = "untyped in the CRD (the operator checks it)"
        if "enum" in child:
            kind = " \\| ".join(f"`{v}`" if v != "" else '`""`' for v in child["enum"])
        default = child.get("default")
        shown = "" if default is None or isinstance(default, dict | list) else f"`{default}`"
        rows.append(f"| `{field}` | {kind} | {shown} | {child.get('description', '')} |")
        if child.get("type") == "object" and "properties" in child:
            rows += _rows(child, field)
        elif child.get("type") == "array" and "properties" in child.get("items", {}):
            rows += _rows(child["items"], f"{field}[]")
    return rows


def reference_markdown() -> str:
    """The spec-field reference of the README, from the same schemas as the CRDs."""
    out = [REFERENCE_START]
    for c in CONTRACTS:
        out += ["", f"#### {c.kind} (`{c.plural}`, short name `{c.short_name}`)", ""]
        out += ["| field | type | default | description |", "|---|---|---|---|"]
        out += _rows(schema_of(c.spec), "spec")
    out += ["", REFERENCE_END]
    return "\n".join(out)


def write_reference(readme: Path) -> None:
    """Replace the reference section between the markers of README.md."""
    text = readme.read_text()
    start, end = text.index(REFERENCE_START), text.index(REFERENCE_END) + len(REFERENCE_END)
    readme.write_text(text[:start] + reference_markdown() + text[end:])
