"""The output index: looking a location up by its path levels finds exactly the colliding
resources that a scan of every resource finds."""

from __future__ import annotations

from collections import defaultdict

import pytest

from longreach.operator.outputs import (
    Claimant,
    collision,
    index_keys,
    lookup_keys,
    nested,
    output_key,
)

pytestmark = pytest.mark.unit

URIS = [
    "s3://bucket/evals/a",
    "s3://bucket/evals/a/",
    "s3://bucket/evals/a/deeper",
    "s3://bucket/evals/ab",
    "s3://bucket/evals",
    "s3://other/evals/a",
    "file:///data/out",
    "/data/out/x",
    "/data/outer",
]


def test_lookup_by_path_level_equals_a_full_scan() -> None:
    claimants = [
        Claimant(f"2026-12-07T00:00:{i:02d}Z", "NeedleEval", "ns", f"r{i}", uri)
        for i, uri in enumerate(URIS)
    ]
    index: dict[tuple[str, str], list[Claimant]] = defaultdict(list)
    for c in claimants:
        for key in index_keys(c.uri):
            index[key].append(c)
    for me in claimants:
        found = [c for key in lookup_keys(me.uri) for c in index.get(key, [])]
        assert collision(me, found) == collision(me, claimants), me.uri
        colliding = {c.name for c in claimants if nested(output_key(c.uri), output_key(me.uri))}
        assert {c.name for c in found} == colliding, me.uri
