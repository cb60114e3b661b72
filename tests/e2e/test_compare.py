"""`longreach compare` end to end on this machine: two arms (original, per-source) of a tiny
model on a generated corpus, the report from the real outputs, a resumed run that redoes only
what is missing, `longreach report` giving the same table, and `--print` for kubectl."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from longreach.contract.contextextension import ContextExtensionSpec
from longreach.contract.datamixture import DataMixtureSpec
from longreach.contract.needleeval import NeedleEvalSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPECS = {
    "DataMixture": DataMixtureSpec,
    "ContextExtension": ContextExtensionSpec,
    "NeedleEval": NeedleEvalSpec,
}

COMPARISON: dict[str, Any] = {
    "name": "tiny",
    "model": {"uri": "inputs/model"},
    "sources": [{"uri": "inputs/slimpajama/train"}],
    "tokenizer": {"uri": "inputs/model"},
    "totalTokens": "30K",
    "sequenceLength": 256,
    "strategy": {"shortDocumentTokens": 64, "missingDomains": "renormalize"},
    "arms": ["original", "per-source"],
    "validationFraction": 0.1,
    "training": {
        "rope": {"theta": 40000},
        "training": {"tokens": 4096, "batchTokens": 1024, "learningRate": 1e-3,
                     "validationSequences": 4},
        "deepspeed": {"zeroStage": 2, "offloadOptimizer": False, "activationCheckpointing": False},
        "resources": {"nodes": 1, "gpusPerNode": 0, "cpu": "2", "memory": "4Gi"},
        "checkpoint": {"everySteps": 2, "keep": 1},
    },
    "eval": {
        "haystack": {"uri": "inputs/haystack"},
        "lengths": {"values": [160, 250]},
        "answerBufferTokens": 16,
        "depths": {"values": [0, 100]},
        "maxNewTokens": 4,
        "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
    },
    "output": {"uri": "compare"},
}  # fmt: skip


def longreach(
    *args: str, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "longreach.operator.cli", *args],
        env={**os.environ, "PYTHONSAFEPATH": "1", **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A small SlimPajama-layout corpus, a tiny Llama at 128 positions and a prose haystack."""
    from longreach.jobs.mixture.corpus import write_slimpajama_corpus
    from longreach.jobs.synthetic import build_tiny_llama, sentences

    root = tmp_path_factory.mktemp("artifacts")
    inputs = root / "inputs"
    write_slimpajama_corpus(str(inputs / "slimpajama"), documents=1500, seed=0, scale=1 / 64)
    build_tiny_llama(inputs / "model", tokenizer_dir, max_position_embeddings=128)
    (inputs / "haystack").mkdir()
    (inputs / "haystack" / "essay.txt").write_text(sentences(random.Random(3), 800))
    return root


def tables(report: str) -> list[dict[str, dict[str, str]]]:
    """The tables of report.md, each as {arm: {column: cell}}."""
    out: list[dict[str, dict[str, str]]] = []
    head: list[str] = []
    for line in report.splitlines():
        if not line.startswith("|"):
            head = []
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not head:
            head = cells
            out.append({})
        elif not line.startswith("|---"):
            out[-1][cells[0]] = dict(zip(head, cells, strict=True))
    return out


def rows(report: str) -> dict[str, dict[str, str]]:
    """The first table of report.md (the arms)."""
    return tables(report)[0]


def manifest_domains(arm: Path) -> list[str]:
    return list(json.loads((arm / "mixture" / "manifest.json").read_text())["domains"])


def test_print_gives_labelled_resources_that_pass_the_spec_models(tmp_path: Path) -> None:
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(COMPARISON))
    proc = longreach("compare", str(path), "--print", timeout=120)
    assert proc.returncode == 0, proc.stdout
    docs = list(yaml.safe_load_all(proc.stdout))
    assert [d["kind"] for d in docs] == ["DataMixture", "ContextExtension", "NeedleEval"] * 2
    for d in docs:
        SPECS[d["kind"]].model_validate(d["spec"])
        labels = d["metadata"]["labels"]
        assert labels["longreach.io/comparison"] == "tiny"
        assert d["metadata"]["name"] == f"tiny-{labels['longreach.io/arm']}-" + {
            "DataMixture": "mix", "ContextExtension": "ext", "NeedleEval": "needle"
        }[d["kind"]]  # fmt: skip


@pytest.fixture(scope="module")
def compared(artifacts: Path) -> tuple[Path, Path, str]:
    """The comparison run once: (the file, the comparison root, what the command printed)."""
    path = artifacts / "compare.yaml"
    path.write_text(yaml.safe_dump(COMPARISON))
    first = longreach("compare", str(path), "--artifacts", str(artifacts))
    assert first.returncode == 0, first.stdout[-4000:]
    return path, artifacts / "compare", first.stdout


@pytest.mark.timeout(1500)
def test_compare_runs_both_arms_reports_resumes_and_reports_again(
    artifacts: Path, compared: tuple[Path, Path, str]
) -> None:
    path, root, printed = compared
    report = (root / "report.md").read_text()
    assert report in printed
    assert (root / "report.png").stat().st_size > 10_000
    table = rows(report)
    assert set(table) == {"original", "per-source"}
    for arm, row in table.items():
        results = json.loads((root / arm / "needle" / "results.json").read_text())
        assert row["needle score"] == f"{results['score']:.1f}"
        assert row["paper score"] == f"{results['paperScore']:.1f}"
        final = json.loads((root / arm / "model" / "final" / "longreach.json").read_text())
        losses = final["validationLoss"]
        assert losses and {f"Loss@{k}" for k in losses} <= set(row)
        for k, v in losses.items():
            assert row[f"Loss@{k}"] == f"{v:.3f}"
        by_domain = final["validationLossByDomain"]
        assert by_domain and set(by_domain) <= set(manifest_domains(root / arm))
        domain_table = tables(report)[2]
        for d, v in by_domain.items():
            assert domain_table[arm][d] == f"{v:.3f}"
        manifest = json.loads((root / arm / "mixture" / "manifest.json").read_text())
        assert row["long-doc share"] == (
            f"{manifest['longDocumentTokenFraction']['byEstimate']['after']:.3f}"
        )
        assert float(row["val loss"]) > 0 and float(row["train s"]) >= 0
    assert "| original | " in report.split("Domain shares")[1]  # the domain-share table

    # Resume: one arm's needle output is gone; the rerun redoes only that.
    shutil.rmtree(root / "per-source" / "needle")
    second = longreach("compare", str(path), "--artifacts", str(artifacts))
    assert second.returncode == 0, second.stdout[-4000:]
    assert second.stdout.count("already done") == 5, second.stdout
    assert "NeedleEval/tiny-per-source-needle: already done" not in second.stdout
    again = rows((root / "report.md").read_text())
    for arm in table:  # the finished resources were not redone: the same numbers
        keep = [c for c in table[arm] if c != "eval s"]
        assert {c: again[arm][c] for c in keep} == {c: table[arm][c] for c in keep}

    # `longreach report` from the comparison root, and from the file: the same table.
    written = (root / "report.md").read_text()
    out = artifacts / "from-root"
    by_root = longreach("report", str(root), "--out", str(out), timeout=300)
    assert by_root.returncode == 0, by_root.stdout
    assert rows((out / "report.md").read_text()) == rows(written)
    assert (out / "report.png").exists()
    by_file = longreach("report", str(path), "--artifacts", str(artifacts), timeout=300)
    assert by_file.returncode == 0, by_file.stdout
    assert (root / "report.md").read_text() == written


@pytest.mark.timeout(600)
def test_report_from_the_cluster_follows_the_labels_and_references(
    control_plane: Any, compared: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The resources `--print` gives, applied to a real API server (its CRDs validate them),
    with their outputs where the local run wrote them; the report waits for every one to
    succeed, then reads the same outputs as the local one."""
    _, root, _ = compared
    absolute = {**COMPARISON, "output": {"uri": str(root)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(absolute))
    printed = longreach("compare", str(tmp_path / "c.yaml"), "--print", timeout=120)
    assert printed.returncode == 0, printed.stdout
    ns = "compare-report"
    control_plane.kubectl("create", "namespace", ns)
    control_plane.kubectl("apply", "-n", ns, "-f", "-", input=printed.stdout)
    env = {"KUBECONFIG": str(control_plane.kubeconfig)}
    selector = ("-n", ns, "-l", "longreach.io/comparison=tiny", "--out", str(tmp_path / "r"))

    waiting = longreach("report", *selector, timeout=120, env=env)
    assert waiting.returncode == 1 and "not finished yet" in waiting.stdout, waiting.stdout
    assert "NeedleEval/tiny-original-needle: Pending" in waiting.stdout

    for doc in yaml.safe_load_all(printed.stdout):
        control_plane.kubectl(
            "patch", doc["kind"].lower(), doc["metadata"]["name"], "-n", ns,
            "--subresource=status", "--type=merge", "-p", '{"status": {"phase": "Succeeded"}}',
        )  # fmt: skip
    done = longreach("report", *selector, timeout=300, env=env)
    assert done.returncode == 0, done.stdout
    assert rows((tmp_path / "r" / "report.md").read_text()) == rows(
        (root / "report.md").read_text()
    )


@pytest.mark.timeout(300)
def test_report_reads_a_comparison_root_on_s3(
    compared: tuple[Path, Path, str], s3_bucket: str, s3_storage: Any, tmp_path: Path
) -> None:
    """The same outputs copied to S3 (outputs only: no report), read by `longreach report`."""
    from longreach.contract import storage

    _, root, _ = compared
    fs, bucket = storage.filesystem(s3_bucket, s3_storage)
    for arm in ("original", "per-source"):
        fs.put(str(root / arm), f"{bucket}/runs/{arm}", recursive=True)
    uri = f"{s3_bucket}/runs"
    proc = longreach("report", uri, "--endpoint", s3_storage.endpoint, timeout=240)
    assert proc.returncode == 0, proc.stdout
    report = fs.cat(f"{bucket}/runs/report.md").decode()
    assert rows(report) == rows((root / "report.md").read_text())
    assert fs.exists(f"{bucket}/runs/report.png")


def test_report_of_an_unfinished_arm_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "original" / "needle").mkdir(parents=True)
    (tmp_path / "original" / "needle" / "results.json").write_text("{}")
    proc = longreach("report", str(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stdout
    assert "final/longreach.json is missing: the ContextExtension has not finished" in proc.stdout
