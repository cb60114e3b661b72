"""Spec models: token budgets, defaults and the cross-field rules, as Python sees them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from longreach.contract.common import format_tokens, parse_tokens
from longreach.contract.contextextension import ContextExtensionSpec
from longreach.contract.datamixture import SLIMPAJAMA_SHARES, DataMixtureSpec
from longreach.contract.needleeval import DepthGrid, LengthGrid, NeedleEvalSpec, round_linspace
from longreach.operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("5B", 5_000_000_000),
        ("4M", 4_000_000),
        ("0.5B", 500_000_000),
        ("812k", 812_000),
        (4096, 4096),
        ("131072", 131072),
    ],
)
def test_token_budgets(given: object, want: int) -> None:
    assert parse_tokens(given) == want


@pytest.mark.parametrize("bad", ["-5", "5X", "", 0, -1, True, 1.5])
def test_bad_token_budgets(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_tokens(bad)


def test_format_tokens() -> None:
    assert [format_tokens(n) for n in (5_000_000_000, 4_200_000, 812_000, 12)] == [
        "5.0B",
        "4.2M",
        "812.0K",
        "12",
    ]


def test_slimpajama_shares_sum_to_one() -> None:
    assert sum(SLIMPAJAMA_SHARES.values()) == pytest.approx(1.0, abs=1e-6)


def test_mixture_defaults_are_the_papers() -> None:
    spec = DataMixtureSpec.model_validate(
        {
            "sources": [{"uri": "s3://c"}],
            "tokenizer": {"uri": "t"},
            "totalTokens": "5B",
            "sequenceLength": 131072,
            "output": {"uri": "o"},
        }
    )
    s = spec.strategy
    assert (s.type, s.shortDocumentTokens, s.shortDocumentKeepProbability, s.charsPerToken) == (
        "per-source",
        4096,
        0.1,
        3.68,
    )
    assert spec.seed == 15213 and spec.sources[0].domainField == "meta.redpajama_set_name"


def _ext(**overrides: object) -> dict:
    base: dict = {
        "model": {"uri": "m"},
        "data": {"uri": "d"},
        "sequenceLength": 81920,
        "rope": {"theta": 2e6},
        "training": {"tokens": "5B"},
        "output": {"uri": "o"},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            {"data": {"uri": "d", "dataMixtureRef": "x"}},
            "exactly one of data.dataMixtureRef and data.uri",
        ),
        ({"model": {}}, "exactly one of model.uri and model.name"),
        ({"deepspeed": {"sequenceParallel": 3}}, "divisible by deepspeed.sequenceParallel"),
        ({"rope": {"type": "yarn"}}, "need a factor"),
        ({"rope": {}}, "set rope.theta"),
    ],
)
def test_context_extension_rules_name_the_field(overrides: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        ContextExtensionSpec.model_validate(_ext(**overrides))


def test_needle_grid_is_the_papers() -> None:
    spec = NeedleEvalSpec.model_validate({"model": {"uri": "m"}, "output": {"uri": "o"}})
    lengths, depths = spec.lengths.resolve(), spec.depths.resolve()
    assert (
        len(lengths) == 40 and lengths[0] == 1000 and lengths[-1] == 128000 and lengths[1] == 4256
    )
    assert depths == [0.0, 11.0, 22.0, 33.0, 44.0, 56.0, 67.0, 78.0, 89.0, 100.0]
    assert spec.harness == "clean"


def test_grid_rounding_is_numpys_ties_included() -> None:
    """round(linspace) as numpy computes it, over 120K (min, max, count) grids, 393 of which
    have an exact .5 tie that another float order rounds the other way: 15 * 100 / 24 is 62.5
    exactly and rounds to 62, numpy's 15 * (100 / 24) is 62.500000000000007 and rounds to 63."""
    import numpy as np

    assert DepthGrid(count=25).resolve()[15] == 63
    assert LengthGrid(min=1, max=25, count=25).resolve() == list(range(1, 26))
    spans = np.arange(1, 1201)
    for lo in (1, 1000):
        assert round_linspace(lo, lo, 7) == [lo] * 7
        for n in range(1, 52):
            # array bounds give one linspace per span (none zero: numpy divides first then)
            want = np.round(np.linspace(lo, lo + spans, n, axis=1)).astype(int).tolist()
            for span, row in zip(spans.tolist(), want, strict=True):
                assert round_linspace(lo, lo + span, n) == row, (lo, lo + span, n)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"harness": "paper", "task": "multi-key"}, "harness: harness paper reproduces"),
        ({"harness": "exact"}, "Input should be 'clean' or 'paper'"),
    ],
)
def test_needle_rules_name_the_field(overrides: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        NeedleEvalSpec.model_validate({"model": {"uri": "m"}, "output": {"uri": "o"}, **overrides})


def test_operator_settings_from_env() -> None:
    s = OperatorSettings.from_env(
        {
            "LONGREACH_EXECUTOR": "local",
            "LONGREACH_NAMESPACES": "a, b",
            "LONGREACH_S3_SECRET": "creds",
            "LONGREACH_RESYNC_SECONDS": "2.5",
        }
    )
    assert (s.executor, s.namespaces, s.storage.secretName, s.resyncSeconds) == (
        "local",
        ["a", "b"],
        "creds",
        2.5,
    )
    with pytest.raises(ValidationError):
        OperatorSettings.from_env({"LONGREACH_EXECUTOR": "slurm"})
