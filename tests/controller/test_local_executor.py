"""The operator with the local executor: a DataMixture runs the real mixture job as a local
process, and a broken one fails with the job's own error in the status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Operator, get, wait_for
from .test_children import apply

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_operator(
    control_plane: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    op = Operator(
        control_plane.kubeconfig, tmp_path_factory.mktemp("local-operator"), executor="local"
    ).start()
    try:
        yield op
    finally:
        op.stop()


def test_local_mixture_succeeds_and_a_broken_one_says_why(
    control_plane: Any,
    local_operator: Operator,
    namespace: str,
    tmp_path: Path,
    tokenizer_dir: Path,
) -> None:
    from longreach.jobs.mixture.corpus import write_slimpajama_corpus

    cp, corpus = control_plane, tmp_path / "corpus"
    write_slimpajama_corpus(str(corpus), documents=3000, seed=1, scale=1 / 16)

    def create(name: str, source: Path) -> None:
        apply(
            cp,
            namespace,
            f"""
            apiVersion: longreach.io/v1alpha1
            kind: DataMixture
            metadata: {{name: {name}}}
            spec:
              sources: [{{uri: {source}}}]
              tokenizer: {{uri: {tokenizer_dir}}}
              strategy: {{shortDocumentTokens: 256}}
              totalTokens: 20K
              sequenceLength: 512
              output: {{uri: {tmp_path}/{name}}}
            """,
        )

    def done(name: str) -> bool:
        phase = get(cp, "dmix", name, namespace).get("status", {}).get("phase")
        return phase in ("Succeeded", "Failed")

    # One at a time: each local mixture job starts its own Ray, and two Rays starting at
    # once on two cores can time out.
    create("broken", tmp_path / "nothing-here")
    wait_for("the broken mixture", lambda: done("broken"), timeout=120, op=local_operator)
    broken = get(cp, "dmix", "broken", namespace)["status"]
    assert broken["phase"] == "Failed" and "nothing-here" in broken["message"], broken

    create("good", corpus / "train")
    wait_for("the good mixture", lambda: done("good"), timeout=300, op=local_operator)
    good = get(cp, "dmix", "good", namespace)["status"]
    assert good["phase"] == "Succeeded", good
    assert good["result"]["tokens"] > 0 and good["result"]["uri"] == f"{tmp_path}/good"
