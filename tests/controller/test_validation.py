"""The API server rejects bad input, with a message naming the field (CRD schema + CEL)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

pytestmark = pytest.mark.integration

MIX = """
apiVersion: longreach.io/v1alpha1
kind: DataMixture
metadata: {name: bad}
spec:
  sources: [{uri: s3://c/train}]
  tokenizer: {uri: s3://m/tok}
  totalTokens: 5B
  sequenceLength: 131072
  output: {uri: s3://o/mix}
"""
EXT = """
apiVersion: longreach.io/v1alpha1
kind: ContextExtension
metadata: {name: bad}
spec:
  model: {uri: s3://m/llama}
  data: {dataMixtureRef: mix}
  sequenceLength: 81920
  rope: {theta: 2000000}
  training: {tokens: 5B}
  output: {uri: s3://o/ext}
"""
NEEDLE = """
apiVersion: longreach.io/v1alpha1
kind: NeedleEval
metadata: {name: bad}
spec:
  model: {uri: s3://m/llama}
  output: {uri: s3://o/niah}
"""

# (what, base manifest, replace this, with that, words the error must contain)
CASES = [
    ("wrong type", MIX, "sequenceLength: 131072", "sequenceLength: long", ["spec.sequenceLength"]),
    (
        "out of range",
        MIX,
        "sequenceLength: 131072",
        "sequenceLength: 8",
        ["spec.sequenceLength", "16"],
    ),
    ("negative budget", MIX, "totalTokens: 5B", "totalTokens: -5", ["spec.totalTokens"]),
    ("budget with a bad suffix", MIX, "totalTokens: 5B", "totalTokens: 5X", ["spec.totalTokens"]),
    (
        "unknown strategy",
        MIX,
        "totalTokens: 5B",
        "totalTokens: 5B\n  strategy: {type: length-upsample}",
        ["spec.strategy.type", "per-source"],
    ),
    (
        "upsample without shares",
        MIX,
        "totalTokens: 5B",
        "totalTokens: 5B\n  strategy: {type: upsample-domains}",
        ["spec.strategy.domainShares", "upsample-domains"],
    ),
    (
        "share above one",
        MIX,
        "totalTokens: 5B",
        "totalTokens: 5B\n  strategy: {domainShares: {RedPajamaBook: 1.5}}",
        ["spec.strategy.domainShares", "between 0 and 1"],
    ),
    (
        "probability above one",
        MIX,
        "totalTokens: 5B",
        "totalTokens: 5B\n  strategy: {shortDocumentKeepProbability: 2}",
        ["spec.strategy.shortDocumentKeepProbability"],
    ),
    ("no sources", MIX, "sources: [{uri: s3://c/train}]", "sources: []", ["spec.sources"]),
    ("missing output", MIX, "  output: {uri: s3://o/mix}\n", "", ["spec.output", "Required"]),
    (
        "both data sources",
        EXT,
        "data: {dataMixtureRef: mix}",
        "data: {dataMixtureRef: mix, uri: s3://x}",
        ["spec.data", "exactly one of data.dataMixtureRef and data.uri"],
    ),
    (
        "neither data source",
        EXT,
        "data: {dataMixtureRef: mix}",
        "data: {}",
        ["spec.data", "exactly one"],
    ),
    (
        "length not divisible by SP",
        EXT,
        "sequenceLength: 81920",
        "sequenceLength: 81921\n  deepspeed: {sequenceParallel: 2}",
        ["spec.sequenceLength", "divisible by deepspeed.sequenceParallel"],
    ),
    (
        "SP not dividing the GPUs",
        EXT,
        "sequenceLength: 81920",
        "sequenceLength: 81920\n  deepspeed: {sequenceParallel: 16}",
        ["spec.deepspeed.sequenceParallel", "divide the number of GPUs"],
    ),
    (
        "scaling type without factor",
        EXT,
        "rope: {theta: 2000000}",
        "rope: {type: yarn}",
        ["spec.rope.factor"],
    ),
    (
        "bad ZeRO stage",
        EXT,
        "training: {tokens: 5B}",
        "training: {tokens: 5B}\n  deepspeed: {zeroStage: 4}",
        ["spec.deepspeed.zeroStage"],
    ),
    (
        "unknown attention",
        EXT,
        "training: {tokens: 5B}",
        "training: {tokens: 5B, attention: flash3}",
        ["spec.training.attention", "sdpa-cudnn"],
    ),
    (
        "lengths min above max",
        NEEDLE,
        "output:",
        "lengths: {min: 5000, max: 1000, count: 3}\n  output:",
        ["spec.lengths.min", "must not exceed"],
    ),
    (
        "lengths both forms",
        NEEDLE,
        "output:",
        "lengths: {min: 1000, max: 2000, count: 3, values: [1000]}\n  output:",
        ["spec.lengths", "either lengths.values"],
    ),
    (
        "depth above 100",
        NEEDLE,
        "output:",
        "depths: {values: [0, 150]}\n  output:",
        ["spec.depths.values", "0-100"],
    ),
    ("unknown task", NEEDLE, "output:", "task: multi-hop\n  output:", ["spec.task"]),
    (
        "two models",
        NEEDLE,
        "model: {uri: s3://m/llama}",
        "model: {uri: s3://m/llama, contextExtensionRef: ext}",
        ["spec.model", "exactly one of model.contextExtensionRef"],
    ),
    (
        "misspelt field",
        MIX,
        "totalTokens: 5B",
        "totalTokens: 5B\n  tokenzier: {uri: x}",
        ['unknown field "spec.tokenzier"'],
    ),
]


@pytest.mark.parametrize(("what", "base", "old", "new", "words"), CASES, ids=[c[0] for c in CASES])
def test_rejected_with_the_field_named(
    control_plane: Any, what: str, base: str, old: str, new: str, words: list[str]
) -> None:
    assert old in base, f"case {what!r} does not apply to its manifest"
    r = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        input=textwrap.dedent(base).replace(old, new),
        check=False,
    )
    assert r.returncode != 0, f"{what}: accepted\n{r.stdout}"
    for word in words:
        assert word in r.stderr, f"{what}: {word!r} not in {r.stderr}"


@pytest.mark.parametrize("manifest", [MIX, EXT, NEEDLE], ids=["mix", "ext", "needle"])
def test_the_valid_bases_are_accepted(control_plane: Any, manifest: str) -> None:
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)


@pytest.mark.parametrize(
    "value", ["true", "false", "selective", "auto", "full", "none", "'every:2'"]
)
def test_checkpointing_accepts_a_bool_or_a_mode(control_plane: Any, value: str) -> None:
    manifest = EXT.replace(
        "training: {tokens: 5B}",
        f"training: {{tokens: 5B, attention: sdpa-cudnn, kernels: none}}\n"
        f"  deepspeed: {{activationCheckpointing: {value}}}",
    )
    control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
