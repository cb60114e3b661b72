"""The comparison file: its validation (errors name the field) and its expansion into
resources (names, labels, outputs, one base and budget for every arm)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from longreach.contract.compare import CompareSpec
from longreach.contract.contextextension import ContextExtensionSpec
from longreach.contract.datamixture import DataMixtureSpec
from longreach.contract.needleeval import NeedleEvalSpec
from longreach.operator import compare

pytestmark = pytest.mark.unit

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "manifests/examples/comparisons/demo-strategies.yaml"
)
SPECS = {
    "DataMixture": DataMixtureSpec,
    "ContextExtension": ContextExtensionSpec,
    "NeedleEval": NeedleEvalSpec,
}


def base() -> dict[str, Any]:
    return {
        "name": "strategies",
        "model": {"uri": "s3://models/base"},
        "sources": [{"uri": "s3://corpora/slimpajama/train"}],
        "tokenizer": {"uri": "s3://models/base"},
        "totalTokens": "500M",
        "sequenceLength": 65536,
        "arms": ["original", {"name": "book", "strategy": {"type": "upsample-domains",
                                                           "domainShares": {"RedPajamaBook": 0.55}}}],
        "training": {"rope": {"theta": 5000000}, "training": {"tokens": "500M"}},
        "eval": {"lengths": {"values": [4000, 64000]}, "depths": {"count": 3}},
        "output": {"uri": "s3://artifacts/compare"},
    }  # fmt: skip


def error(raw: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(compare.CompareError) as e:
        compare.load(str(path))
    return str(e.value)


def test_one_seed_expands_into_three_resources_per_arm_under_the_root() -> None:
    spec = CompareSpec.model_validate(base())
    docs = compare.expand(spec)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("DataMixture", "strategies-original-mix"),
        ("ContextExtension", "strategies-original-ext"),
        ("NeedleEval", "strategies-original-needle"),
        ("DataMixture", "strategies-book-mix"),
        ("ContextExtension", "strategies-book-ext"),
        ("NeedleEval", "strategies-book-needle"),
    ]
    for d in docs:
        SPECS[d["kind"]].model_validate(d["spec"])
        arm = d["metadata"]["labels"]["longreach.io/arm"]
        assert d["metadata"]["labels"]["longreach.io/comparison"] == "strategies"
        assert d["spec"]["output"]["uri"].startswith(f"s3://artifacts/compare/{arm}/")
    mix, ext, needle = docs[3:]
    assert mix["spec"]["strategy"] == {"type": "upsample-domains",
                                       "domainShares": {"RedPajamaBook": 0.55}}  # fmt: skip
    assert mix["spec"]["totalTokens"] == 500_000_000 and mix["spec"]["seed"] == 15213
    assert ext["spec"]["model"] == {"uri": "s3://models/base"}
    assert ext["spec"]["data"] == {"dataMixtureRef": "strategies-book-mix"}
    assert ext["spec"]["sequenceLength"] == 65536 and ext["spec"]["training"]["seed"] == 15213
    assert needle["spec"]["model"] == {"contextExtensionRef": "strategies-book-ext"}
    assert needle["spec"]["lengths"] == docs[2]["spec"]["lengths"]  # one grid for all arms
    assert [o.needle for o in compare.outputs(spec)] == [
        "s3://artifacts/compare/original/needle",
        "s3://artifacts/compare/book/needle",
    ]


def test_seeds_name_resources_and_folders_and_seed_mixture_and_training() -> None:
    raw = {**base(), "seeds": [1, 2], "strategy": {"shortDocumentTokens": 1024}}
    docs = compare.expand(CompareSpec.model_validate(raw))
    assert len(docs) == 12
    mix = next(d for d in docs if d["metadata"]["name"] == "strategies-original-s2-mix")
    assert mix["metadata"]["labels"]["longreach.io/seed"] == "2" and mix["spec"]["seed"] == 2
    assert mix["spec"]["output"]["uri"] == "s3://artifacts/compare/original/seed-2/mixture"
    assert mix["spec"]["strategy"] == {"type": "original", "shortDocumentTokens": 1024}
    ext = next(d for d in docs if d["metadata"]["name"] == "strategies-book-s1-ext")
    assert ext["spec"]["training"]["seed"] == 1


def test_the_example_expands_into_valid_resources() -> None:
    docs = compare.expand(compare.load(str(EXAMPLE)))
    assert len(docs) == 2 * 3 * 3
    for d in docs:
        SPECS[d["kind"]].model_validate(d["spec"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r.update(name="Strategies"), "name: "),
        (lambda r: r.update(arms=["original"]), "arms: List should have at least 2 items"),
        (lambda r: r.update(arms=["original", "original"]), "arm names must differ"),
        (lambda r: r.update(arms=["original", "Cut"]), "arm name 'Cut' is not a DNS label"),
        (lambda r: r.update(arms=["original", "best"]), "arms[best].strategy.type"),
        (lambda r: r.update(arms=["original", "upsample-domains"]),
         "arms[upsample-domains].strategy: domainShares: upsample-domains needs domainShares"),
        (lambda r: r.update(seeds=[1, 1]), "seeds repeat"),
        (lambda r: r["training"].update(model={"uri": "x"}), "training: model are set per arm"),
        (lambda r: r["training"].pop("training"), "training.training.tokens: Field required"),
        (lambda r: r["training"].update(rope={"theta": -1}), "training.rope.theta"),
        (lambda r: r["eval"].update(lengths={"values": "many"}), "eval.lengths"),
        (lambda r: r["eval"].update(output={"uri": "x"}), "eval: output are set per arm"),
        (lambda r: r.update(name="a-very-long-comparison-name-indeed-yes"), "shorten the name"),
        (lambda r: r.pop("output"), "output: Field required"),
    ],
)  # fmt: skip
def test_errors_name_the_field(change: Any, expected: str, tmp_path: Path) -> None:
    raw = copy.deepcopy(base())
    change(raw)
    assert expected in error(raw, tmp_path)
