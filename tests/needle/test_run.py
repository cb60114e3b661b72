"""Full runs of the job: a tiny random Llama on S3 (moto's server), results, heatmap, progress,
resumption after a kill, and the extractive test backend proving the plumbing end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.needleeval import EvalResult, NeedleReport
from longreach.contract.ownership import OwnershipError
from longreach.contract.report import read_report
from longreach.jobs.needle.job import run

from .conftest import job_config, write_haystack
from .extractive import ExtractiveBackend

pytestmark = pytest.mark.integration


def upload(local: Path, uri: str, st: StorageSpec) -> str:
    fs, path = storage.filesystem(uri, st)
    fs.put(str(local) + "/", path + "/", recursive=True)
    return uri


def job_env() -> dict[str, str]:
    return {**os.environ, "PYTHONSAFEPATH": "1"}


def test_full_run_on_s3_writes_results_heatmap_and_progress(
    tiny_model: Path, haystack_dir: Path, s3_bucket: str, s3_storage: StorageSpec
) -> None:
    model = upload(tiny_model, f"{s3_bucket}/models/tiny", s3_storage)
    hay = upload(haystack_dir, f"{s3_bucket}/essays", s3_storage)
    out = f"{s3_bucket}/evals/tiny"
    config = job_config(
        model, hay, out, storage=s3_storage.wire(), lengths={"values": [300, 600, 1200]}
    )
    stats = run(config)
    assert stats["generated"] == 9 and stats["skipped"] == 0

    results = storage.read_json(f"{out}/results.json", s3_storage)
    assert len(results["cells"]) == 9
    for cell in results["cells"]:
        assert set(cell) >= {
            "length",
            "contextTokens",
            "depth",
            "needleTokenOffset",
            "response",
            "score",
            "paperScore",
        }
        assert 0 <= cell["score"] <= 100 and cell["contextTokens"] < cell["length"]
    assert set(results["byLength"]) == {"300", "600", "1200"} and set(results["byDepth"]) == {
        "0",
        "50",
        "100",
    }
    assert results["paperScoreMax"] == pytest.approx(91.6667, abs=1e-3)
    # 1,200 tokens do not fit the model's 1,024 positions: allowed, flagged
    assert results["extrapolation"]["lengths"] == [1200] and results["extrapolation"]["cells"] == 3
    assert all(c["extrapolated"] == (c["length"] == 1200) for c in results["cells"])
    assert results["warnings"] == [
        "lengths [1200] (prompt and answer) exceed the model's max_position_embeddings (1024): "
        "those cells measure extrapolation"
    ]
    assert {"length", "contextTokens", "score", "paperScore"} <= set(results["definitions"])
    assert "91.7" in results["definitions"]["paperScore"]
    fs, path = storage.filesystem(f"{out}/heatmap.png", s3_storage)
    assert fs.cat_file(path)[:8] == b"\x89PNG\r\n\x1a\n"
    report = read_report(out, NeedleReport, s3_storage)
    assert report is not None and report.state == "succeeded"
    assert report.progress.cellsDone == report.progress.cells == 9
    assert report.progress.percent == 100 and report.warnings == results["warnings"]
    assert report.result == EvalResult(
        score=results["score"], paperScore=results["paperScore"], uri=out
    )


@pytest.mark.parametrize("harness", ["clean", "paper"])
def test_extractive_backend_scores_100_with_the_needle_and_0_without(
    tiny_model: Path, haystack_dir: Path, tmp_path: Path, tokenizer: Any, harness: str
) -> None:
    config = job_config(
        str(tiny_model),
        str(haystack_dir),
        str(tmp_path / "out"),
        depths={"values": [0, 40, 77, 100]},
        harness=harness,
    )
    stats = run(config, backend=ExtractiveBackend(tokenizer, removed_depths={40.0}))
    by_depth = stats["summary"]["byDepth"]
    assert by_depth["40"] == {"score": 0, "paperScore": 0}
    for depth in ("0", "77", "100"):
        assert by_depth[depth]["score"] == 100
        assert by_depth[depth]["paperScore"] == pytest.approx(91.6667, abs=1e-3)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["backend"] == "extractive-test" and results["harness"] == harness


@pytest.mark.parametrize("harness", ["clean", "paper"])
def test_a_short_haystack_is_repeated_with_a_warning_before_the_grid(
    tiny_model: Path, tmp_path: Path, tokenizer: Any, harness: str, capsys: Any
) -> None:
    short = write_haystack(tmp_path / "short", files=1, words=120)
    config = job_config(str(tiny_model), str(short), str(tmp_path / "out"), harness=harness)
    run(config, backend=ExtractiveBackend(tokenizer))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    repeats = results["haystack"]["repeats"]
    assert results["haystack"]["repeated"] and repeats > 1
    [warning] = results["warnings"]  # the grid stays within the model's 1,024 positions
    assert f"longest length 900: its text is repeated {repeats} times" in warning
    assert f"needle: warning: {warning}" in capsys.readouterr().out
    report = read_report(str(tmp_path / "out"), NeedleReport)
    assert report is not None and report.warnings == [warning]


@pytest.mark.parametrize("task", ["multi-key", "multi-value"])
def test_extractive_backend_on_the_ruler_variants(
    tiny_model: Path, haystack_dir: Path, tmp_path: Path, tokenizer: Any, task: str
) -> None:
    config = job_config(
        str(tiny_model),
        str(haystack_dir),
        str(tmp_path / "out"),
        task=task,
        lengths={"values": [600, 900]},
    )
    stats = run(config, backend=ExtractiveBackend(tokenizer, removed_depths={50.0}))
    by_depth = stats["summary"]["byDepth"]
    assert by_depth["0"]["score"] == by_depth["100"]["score"] == 100
    assert by_depth["50"]["score"] == 0
    cells = json.loads((tmp_path / "out" / "results.json").read_text())["cells"]
    assert all(len(c["needleTokenOffsets"]) == 4 and c["expected"] for c in cells)


@pytest.mark.slow
def test_killed_run_resumes_from_its_finished_cells(
    tiny_model: Path, tmp_path: Path, s3_bucket: str, s3_storage: StorageSpec
) -> None:
    hay = write_haystack(tmp_path / "hay", files=4, words=600)
    out = f"{s3_bucket}/evals/resume"
    config = job_config(
        str(tiny_model),
        str(hay),
        out,
        storage=s3_storage.wire(),
        lengths={"values": [300, 450, 600, 750, 900]},
        depths={"count": 4},
        batchSize=1,
        maxNewTokens=24,
    )
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(config.model_dump_json(by_alias=True))
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "longreach.jobs.needle", "--config", str(cfg_file)],
        env=job_env(),
    )
    fs, cells_path = storage.filesystem(f"{out}/cells.jsonl", s3_storage)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if fs.exists(cells_path) and len(fs.cat_file(cells_path).splitlines()) >= 3:
                break
            time.sleep(0.05)
            fs.invalidate_cache()
        assert proc.poll() is None, (
            "the job finished before it could be killed; make the grid larger"
        )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = len(fs.cat_file(cells_path).splitlines())
    assert 3 <= done_before < 20
    assert not storage.exists(f"{out}/results.json", s3_storage)
    assert storage.read_json(f"{out}/progress.json", s3_storage)["state"] == "running"

    stats = run(config)
    assert stats["skipped"] == done_before and stats["generated"] == 20 - done_before
    results = storage.read_json(f"{out}/results.json", s3_storage)
    assert len(results["cells"]) == 20
    # a second run finds every cell done and loads no model
    again = run(config)
    assert again["generated"] == 0 and again["summary"]["score"] == results["score"]


def test_rope_settings_come_from_the_checkpoints_config(
    tiny_model: Path, tmp_path: Path, tokenizer: Any
) -> None:
    """A ContextExtension writes its new RoPE base or scaling into config.json; the backend must
    use it as written (transformers 5 keeps it in `rope_parameters`)."""
    import shutil

    from longreach.jobs.needle.backends import TransformersBackend

    folder = tmp_path / "extended"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    rope = {
        "rope_type": "yarn",
        "factor": 4.0,
        "rope_theta": 2_000_000.0,
        "original_max_position_embeddings": 1024,
    }
    config.update(rope_parameters=rope, max_position_embeddings=4096)
    config.pop("rope_theta", None)
    config.pop("rope_scaling", None)
    (folder / "config.json").write_text(json.dumps(config))
    backend = TransformersBackend(str(folder), tokenizer)
    assert backend.model.config.rope_parameters == rope
    assert backend.model.model.rotary_emb.rope_type == "yarn"
    base = TransformersBackend(str(tiny_model), tokenizer).model.model.rotary_emb.inv_freq
    assert not bool((backend.model.model.rotary_emb.inv_freq == base).all())


def test_a_finished_grid_is_reused_and_another_grid_in_its_output_refused(
    tiny_model: Path, haystack_dir: Path, tmp_path: Path, tokenizer: Any
) -> None:
    out = tmp_path / "out"
    small = job_config(str(tiny_model), str(haystack_dir), str(out), lengths={"values": [300, 600]})
    assert run(small, backend=ExtractiveBackend(tokenizer))["generated"] == 6
    again = run(small, backend=ExtractiveBackend(tokenizer))
    assert (again["skipped"], again["generated"]) == (6, 0)
    report = read_report(str(out), NeedleReport)
    assert report is not None and report.progress.cellsDone == report.progress.cells == 6
    grown = job_config(
        str(tiny_model), str(haystack_dir), str(out), lengths={"values": [300, 600, 900]}
    )
    with pytest.raises(
        OwnershipError, match=r"spec\.lengths\.values: \[300, 600\] -> \[300, 600, 900\]"
    ):
        run(grown, backend=ExtractiveBackend(tokenizer))
    assert json.loads((out / "results.json").read_text())["cells"][-1]["length"] == 600
