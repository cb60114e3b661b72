"""Every example in manifests/examples: valid for the spec models (what the operator and
`longreach run` parse), accepted by the API server with our CRDs (server-side dry run),
chained by references that resolve, and saying what the paper says where it claims to."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from longreach.contract.common import API_VERSION
from longreach.contract.contextextension import ContextExtensionSpec
from longreach.contract.datamixture import SLIMPAJAMA_SHARES, DataMixtureSpec
from longreach.contract.needleeval import NeedleEvalSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
SPECS = {
    "DataMixture": DataMixtureSpec,
    "ContextExtension": ContextExtensionSpec,
    "NeedleEval": NeedleEvalSpec,
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def specs(path: Path) -> dict[tuple[str, str], Any]:
    """(kind, name) -> the validated spec model of each document."""
    return {
        (d["kind"], d["metadata"]["name"]): SPECS[d["kind"]].model_validate(d["spec"])
        for d in documents(path)
    }


@pytest.mark.unit
def test_every_expected_example_is_there() -> None:
    names = {p.name for p in FILES}
    assert {"quickstart.yaml", "paper-recipe.yaml", "strategy-original.yaml", "strategy-cut.yaml",
            "strategy-global.yaml", "strategy-upsample-book.yaml"} <= names  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_validates_with_the_spec_models(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert doc["apiVersion"] == API_VERSION and doc["kind"] in SPECS, doc.get("kind")
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, (
            f"{path.name}: no status in examples"
        )
        SPECS[doc["kind"]].model_validate(doc["spec"])
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{path.name}: duplicate names"


@pytest.mark.unit
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_references_resolve_within_the_file(path: Path) -> None:
    resources = specs(path)
    for (kind, name), spec in resources.items():
        if kind == "ContextExtension" and spec.data.dataMixtureRef:
            assert ("DataMixture", spec.data.dataMixtureRef) in resources, (
                f"{name}: dangling dataMixtureRef"
            )
        if kind == "NeedleEval" and spec.model.contextExtensionRef:
            target = ("ContextExtension", spec.model.contextExtensionRef)
            assert target in resources, f"{name}: dangling contextExtensionRef"
            # A needle grid past the trained length is allowed, but the quickstart stays inside.
            if path.name == "quickstart.yaml":
                assert max(spec.lengths.resolve()) <= resources[target].sequenceLength


@pytest.mark.unit
def test_quickstart_is_local_and_tiny() -> None:
    resources = specs(EXAMPLES / "quickstart.yaml")
    kinds = ["DataMixture", "ContextExtension", "NeedleEval", "NeedleEval"]
    assert [k for k, _ in resources] == kinds
    for spec in resources.values():
        uris = [spec.output.uri]
        uris += [s.uri for s in getattr(spec, "sources", [])]
        # Relative: `longreach run` puts them inside the artifact directory.
        assert all(not u.startswith(("/", "s3://", "file://")) for u in uris), uris
    (_, mixture), (_, extension), (_, base), (_, needle) = resources.items()
    assert mixture.totalTokens <= 1_000_000 and extension.training.tokens <= mixture.totalTokens
    assert extension.resources.gpusPerNode == 0
    # the base model's grid and the extended model's: the same cells, so they compare
    assert base.model.uri == extension.model.uri and needle.model.contextExtensionRef
    for grid in (base, needle):
        assert grid.resources.gpus == 0
        assert grid.lengths.resolve() == needle.lengths.resolve()
        assert len(grid.lengths.resolve()) * len(grid.depths.resolve()) <= 20


@pytest.mark.unit
def test_paper_recipe_has_the_papers_numbers() -> None:
    resources = specs(EXAMPLES / "paper-recipe.yaml")
    (_, mixture), (_, extension), (_, needle) = resources.items()
    assert mixture.strategy.type == "per-source" and mixture.totalTokens == 5 * 10**9
    assert mixture.sequenceLength == 131072 and mixture.strategy.shortDocumentTokens == 4096
    assert mixture.strategy.shortDocumentKeepProbability == 0.1
    assert mixture.strategy.domainShares in ({}, SLIMPAJAMA_SHARES)
    assert extension.sequenceLength == 81920 and extension.rope.theta == 2_000_000
    assert extension.training.learningRate == 2e-5 and extension.training.schedule == "constant"
    assert extension.training.batchTokens == 4 * 10**6 and extension.training.tokens == 5 * 10**9
    assert extension.deepspeed.zeroStage == 3 and extension.deepspeed.offloadOptimizer
    assert extension.resources.nodes * extension.resources.gpusPerNode == 8
    lengths, depths = needle.lengths.resolve(), needle.depths.resolve()
    assert (len(lengths), len(depths), lengths[0], lengths[-1]) == (40, 10, 1000, 128000)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "strategy"),
    [
        ("original", "original"),
        ("cut", "cut"),
        ("global", "global"),
        ("upsample-book", "upsample-domains"),
    ],
)
def test_one_mixture_per_strategy(name: str, strategy: str) -> None:
    (((kind, _), spec),) = specs(EXAMPLES / f"strategy-{name}.yaml").items()
    assert kind == "DataMixture" and spec.strategy.type == strategy
    if name == "upsample-book":
        assert set(spec.strategy.domainShares) == {"RedPajamaBook"}


@pytest.mark.integration
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_passes_server_side_dry_run(control_plane: Any, path: Path) -> None:
    namespace = f"examples-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    r = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(server dry run)") == len(documents(path)), r.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("strategy", "type"), "cut-4k", "spec.strategy.type"),
        (("sequenceLenght",), 4096, "spec.sequenceLenght"),
        (("totalTokens",), "5 billion", "spec.totalTokens"),
    ],
)
def test_server_side_dry_run_has_teeth(
    control_plane: Any, path: tuple[str, ...], value: Any, message: str
) -> None:
    """The dry run above validates against our CRDs: a broken example is rejected, naming the field."""
    namespace = f"examples-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    (doc,) = documents(EXAMPLES / "strategy-cut.yaml")
    node = doc["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    r = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(doc),
        check=False,
    )
    assert r.returncode != 0 and message in r.stderr, r.stderr


COMPARISONS = sorted((EXAMPLES / "comparisons").glob("*.yaml"))


@pytest.mark.unit
def test_the_demo_comparison_is_there_and_compares_the_papers_two_strategies() -> None:
    from longreach.operator.compare import load

    assert [p.name for p in COMPARISONS] == ["demo-strategies.yaml"]
    spec = load(str(COMPARISONS[0]))
    assert sorted(s.type for s in spec.strategies().values()) == ["original", "per-source"]
    assert len(spec.seeds) == 3


@pytest.mark.integration
@pytest.mark.parametrize("path", COMPARISONS, ids=[p.name for p in COMPARISONS])
def test_comparison_expands_into_resources_the_server_accepts(
    control_plane: Any, path: Path
) -> None:
    from longreach.operator.compare import expand, load, to_yaml

    docs = expand(load(str(path)))
    for doc in docs:
        SPECS[doc["kind"]].model_validate(doc["spec"])
    namespace = f"examples-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    r = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=to_yaml(docs), check=False
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(server dry run)") == len(docs), r.stdout
