"""The `longreach` command's quick paths: plan, and run's up-front validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from longreach.operator.cli import main
from longreach.operator.localrun import RunError, load, resolve

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def test_plan_prints_the_estimate_and_exit_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["plan", str(EXAMPLES / "paper-recipe.yaml")]) == 0
    assert "memory per GPU" in capsys.readouterr().out
    recipe = (EXAMPLES / "paper-recipe.yaml").read_text()
    assert "    gpusPerNode: 8\n" in recipe
    (tmp_path / "small.yaml").write_text(
        recipe.replace("    gpusPerNode: 8\n", "    gpusPerNode: 8\n    gpuMemoryGiB: 16\n")
    )
    assert main(["plan", str(tmp_path / "small.yaml")]) == 1
    assert "NO does not fit" in capsys.readouterr().out


def test_run_orders_by_dependency_and_resolves_relative_paths() -> None:
    resources = load(str(EXAMPLES / "quickstart.yaml"), "/art")
    kinds = ["DataMixture", "ContextExtension", "NeedleEval", "NeedleEval"]
    assert [r.kind for r in resources] == kinds
    assert resources[0].spec.output.uri.startswith("/art/")
    assert (
        resolve("s3://b/x", "/art") == "s3://b/x"
        and resolve("demo/x", "s3://b/p") == "s3://b/p/demo/x"
    )


def test_run_rejects_a_bad_file_before_any_work(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: longreach.io/v1alpha1\nkind: ContextExtension\nmetadata: {name: x}\nspec:\n  model: {uri: m}\n  data: {dataMixtureRef: missing}\n  sequenceLength: 4096\n  rope: {theta: 1e6}\n  training: {tokens: 1M}\n  output: {uri: o}\n"
    )
    with pytest.raises(RunError, match=r"refers to DataMixture/missing, which is not in the file"):
        load(str(bad), str(tmp_path))
    bad.write_text(
        "kind: DataMixture\nmetadata: {name: y}\nspec: {sources: [], tokenizer: {uri: t}, totalTokens: 5B, sequenceLength: 4096, output: {uri: o}}\n"
    )
    with pytest.raises(RunError, match=r"spec\.sources"):
        load(str(bad), str(tmp_path))


MIXTURE = """
apiVersion: longreach.io/v1alpha1
kind: DataMixture
metadata: {{name: mix}}
spec:
  sources: [{{uri: corpus}}]
  tokenizer: {{uri: tok}}
  strategy: {{type: {strategy}}}
  totalTokens: 1M
  sequenceLength: 1024
  output: {{uri: mix}}
"""


def test_run_reuses_only_an_output_of_the_same_config(tmp_path: Path) -> None:
    import io

    from longreach.contract.ownership import Lease
    from longreach.operator.localrun import reuse_or_start_over

    file, artifacts = tmp_path / "mix.yaml", tmp_path / "art"

    def resource(strategy: str) -> tuple[Any, Any]:
        file.write_text(MIXTURE.format(strategy=strategy))
        (r,) = load(str(file), str(artifacts))
        return r, r.adapter.job_config(r.name, "local", "", r.spec, {})

    r, config = resource("per-source")
    out = io.StringIO()
    assert reuse_or_start_over(r, config, False, out) is False  # nothing there: run it
    lease = Lease(r.spec.output.uri, None, config.owner(), config.output_config())
    lease.acquire()
    (artifacts / "mix" / "manifest.json").write_text("{}")
    lease.finish()
    assert reuse_or_start_over(r, config, False, out) is True
    assert "already done with this config" in out.getvalue()

    changed, config = resource("global")
    with pytest.raises(RunError, match=r'strategy\.type: "per-source" -> "global".*--force'):
        reuse_or_start_over(changed, config, False, out)
    assert (artifacts / "mix" / "manifest.json").exists()
    assert reuse_or_start_over(changed, config, True, out) is False
    assert "deleting it and starting over" in out.getvalue()
    assert not (artifacts / "mix").exists()


def test_run_refuses_two_resources_writing_one_output(tmp_path: Path) -> None:
    file = tmp_path / "two.yaml"
    one = MIXTURE.format(strategy="global")
    file.write_text(
        one + "---" + one.replace("name: mix", "name: other").replace("uri: mix", "uri: mix/sub")
    )
    with pytest.raises(
        RunError,
        match=r"DataMixture/other: output.uri .*mix/sub collides with .*DataMixture local/mix",
    ):
        load(str(file), str(tmp_path / "art"))


def test_run_summary_labels_the_long_document_share_and_shows_warnings() -> None:
    from longreach.contract.datamixture import (
        KeepProbability,
        LongDocumentShare,
        LongDocumentShares,
        MixtureReport,
        MixtureResult,
    )
    from longreach.operator.localrun import summary

    mixture = load(str(EXAMPLES / "quickstart.yaml"), "/art")[0]
    mixture.succeeded(
        MixtureReport(
            state="succeeded",
            warnings=["domain RedPajamaC4 has 240 tokens"],
            result=MixtureResult(
                uri="/art/demo/mixture",
                tokens=2048,
                chunks=2,
                domainShares={"RedPajamaC4": 0.27, "RedPajamaBook": 0.04},
                targetShares={"RedPajamaC4": 0.266, "RedPajamaBook": 0.041},
                longDocumentShare=LongDocumentShares(
                    byEstimate=LongDocumentShare(before=0.276, after=0.565),
                    byTokenizer=LongDocumentShare(before=0.27, after=0.55),
                ),
                keepProbability={
                    "RedPajamaC4": KeepProbability(requested=0.1, effective=0.23),
                    "RedPajamaBook": KeepProbability(requested=0.1, effective=0.1),
                },
            ),
        )
    )
    lines = summary([mixture]).splitlines()
    assert lines[2].endswith(
        "2,048 tokens (of the tokenizer, BOS included) in 2 chunks; totalTokens 200,000"
    )
    assert (
        "long-document tokens (documents of 256+ estimated tokens), before -> after: "
        "by estimate (characters / 3.68) 28% -> 56%; by tokenizer 27% (estimated from a sample) "
        "-> 55%"
    ) in lines[3]
    assert lines[4].strip() == "shares (target): Book 0.040 (0.041), C4 0.270 (0.266)"
    assert lines[5].strip() == (
        "short-document keep probability raised to fill budgets: C4 0.1 -> 0.23"
    )
    assert lines[-1].strip() == "warning: domain RedPajamaC4 has 240 tokens"
