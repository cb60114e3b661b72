"""The committed CRDs are exactly what the spec models generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from longreach.operator import crds

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_not_stale() -> None:
    """CRDs (both copies), their kustomization and the RBAC rules, as `longreach crds` writes them."""
    for path, text in crds.generated(ROOT).items():
        assert path.exists() and path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run `longreach crds` and commit the result"
        )
    for folder in crds.targets(ROOT):  # no CRD of a kind that no longer exists
        names = {p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert names == set(crds.render_all()), f"{folder} holds stray CRDs"


def test_crds_carry_names_columns_and_status() -> None:
    for text in crds.render_all().values():
        doc = yaml.safe_load(text)
        names, version = doc["spec"]["names"], doc["spec"]["versions"][0]
        assert names["categories"] == ["longreach"] and names["shortNames"]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[0] == "Phase" and columns[-1] == "Age" and "Progress" in columns
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert "$ref" not in text and "anyOf" not in text and "title" not in spec


def test_every_spec_field_is_documented() -> None:
    def walk(node: dict, path: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            assert child.get("description"), f"{path}.{name} has no description"
            walk(child, f"{path}.{name}")
            if "items" in child:
                walk(child["items"], f"{path}.{name}[]")

    for text in crds.render_all().values():
        doc = yaml.safe_load(text)
        walk(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"], "spec")


def test_readme_reference_is_not_stale() -> None:
    readme = (ROOT / "README.md").read_text()
    assert crds.reference_markdown() in readme, (
        "README's spec reference is stale: run `longreach crds`"
    )


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    setup_and_demo, tests = (line.split("#")[0].strip() for line in block)
    assert setup_and_demo.endswith("longreach demo") and tests.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.split("&& ")[-1] in ci and "bash .ci/setup" in ci
