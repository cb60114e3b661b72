"""Resume after a killed run, refusal on a changed config, and clear errors on bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longreach.contract.common import StorageSpec
from longreach.contract.errors import InputError
from longreach.contract.ownership import OwnershipError
from longreach.jobs.mixture.job import run
from longreach.jobs.mixture.raymap import RunOptions

from .conftest import mixture_config

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def env_for_child(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONSAFEPATH": "1", **extra}


def test_resume_after_a_killed_run(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = mixture_config(str(corpus / "train"), str(tokenizer_dir), str(out))
    (tmp_path / "config.json").write_text(config.model_dump_json(by_alias=True))
    # The job joins the session's Ray as a RayJob's driver joins its cluster, from the repo
    # root (where `operator/` would shadow the standard library without PYTHONSAFEPATH).
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "longreach.jobs.mixture",
            "--config",
            str(tmp_path / "config.json"),
            "--workers",
            "1",
        ],
        cwd=REPO,
        env=env_for_child(RAY_ADDRESS=ray_local),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 180
    try:
        while (
            not list((out / "_work").glob("unit-*.json"))
            and child.poll() is None
            and time.time() < deadline
        ):
            time.sleep(0.01)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode() if child.stderr else ""
    assert not (out / "manifest.json").exists()
    done = sorted((out / "_work").glob("unit-*.json"))
    assert len(done) >= 1
    first = json.loads(done[0].read_text())["unit"]
    shard = out / "train" / f"part-{first:05d}.parquet"
    stamp = shard.stat().st_mtime_ns if shard.exists() else None

    resumed = run(config, RunOptions())
    reference = run(
        mixture_config(str(corpus / "train"), str(tokenizer_dir), str(tmp_path / "ref")),
        RunOptions(),
    )
    assert resumed["shards"] == reference["shards"]
    if stamp is not None:
        assert shard.stat().st_mtime_ns == stamp  # the finished file was skipped, not redone
    assert json.loads((out / "progress.json").read_text())["state"] == "succeeded"


def test_a_changed_config_is_refused_and_the_same_one_is_a_no_op(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    def config(out: Path, **spec: object):
        return mixture_config(
            str(corpus / "train"), str(tokenizer_dir), str(out), totalTokens="30K", **spec
        )

    first = run(config(tmp_path / "a"), RunOptions())
    start = time.time()
    again = run(config(tmp_path / "a", ray={"workers": 9}), RunOptions())  # placement only
    assert again == first and time.time() - start < 5
    with pytest.raises(
        OwnershipError, match=r"finished output of another config .*spec\.seed: 15213 -> 1"
    ):
        run(config(tmp_path / "a", seed=1), RunOptions())
    assert (tmp_path / "a" / "manifest.json").exists()  # the other config's output is untouched
    assert json.loads((tmp_path / "a" / "progress.json").read_text())["state"] == "succeeded"

    (tmp_path / "c" / "train").mkdir(parents=True)
    (tmp_path / "c" / "train" / "part-00000.parquet").write_bytes(b"x")
    with pytest.raises(OwnershipError, match="holds 1 files that no owner record claims"):
        run(config(tmp_path / "c"), RunOptions())
    assert not (tmp_path / "c" / "owner.json").exists()  # nothing written into it


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def good(i: int) -> str:
    return json.dumps(
        {
            "text": f"document number {i} " * (1 + i % 40),
            "meta": {"redpajama_set_name": "RedPajamaC4"},
        }
    )


@pytest.mark.parametrize("corrupt, ok", [(1, True), (5, False)])
def test_corrupt_lines_are_counted_up_to_the_limit(
    ray_local: str, tokenizer_dir: Path, tmp_path: Path, corrupt: int, ok: bool
) -> None:
    lines = [good(i) for i in range(2000)]
    for k in range(corrupt):
        lines[100 + 300 * k] = '{"text": "cut short'
    src = write_lines(tmp_path / "src" / "a.jsonl", lines)
    config = mixture_config(
        str(src.parent),
        str(tokenizer_dir),
        str(tmp_path / "out"),
        totalTokens="5K",
        sequenceLength=64,
        strategy={"type": "original"},
    )
    if ok:
        assert run(config, RunOptions())["documents"]["corrupt"] == 1
        return
    with pytest.raises(
        InputError, match=r"5 of 2000 records are corrupt .*a\.jsonl line 101: not JSON"
    ):
        run(config, RunOptions())
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert progress["state"] == "failed" and "maxCorruptFraction" in progress["error"]


def test_bad_inputs_fail_early_naming_the_file_or_field(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    """All of these fail before Ray starts: listing, first records and the tokenizer."""
    src = write_lines(tmp_path / "src" / "a.jsonl", [good(1)])
    (tmp_path / "empty").mkdir()
    bad_field = write_lines(tmp_path / "bad" / "a.jsonl", [json.dumps({"body": "x"})])
    broken_tok = tmp_path / "tok"
    broken_tok.mkdir()
    (broken_tok / "tokenizer.json").write_text("{")
    cases = [
        (
            str(tmp_path / "missing"),
            str(tokenizer_dir),
            r"sources\[0\]\.uri .*missing.*nothing there",
        ),
        (str(tmp_path / "empty"), str(tokenizer_dir), r"no \.jsonl\.zst .* files found"),
        (str(bad_field), str(tokenizer_dir), r"a\.jsonl line 1: no field 'text' \(textField\)"),
        (str(src), str(broken_tok), r"tokenizer\.uri .*cannot load the tokenizer"),
        (str(src), str(tmp_path / "nope"), r"tokenizer\.uri .*no tokenizer\.json there"),
    ]
    for k, (source, tokenizer, message) in enumerate(cases):
        out = tmp_path / f"out{k}"
        with pytest.raises(InputError, match=message):
            run(mixture_config(source, tokenizer, str(out)), RunOptions())
        progress = json.loads((out / "progress.json").read_text())
        assert progress["state"] == "failed" and progress["error"]


def test_s3_errors_name_the_bucket(
    tokenizer_dir: Path, s3_bucket: str, s3_storage: StorageSpec, tmp_path: Path
) -> None:
    src = write_lines(tmp_path / "src" / "a.jsonl", [good(1)])
    storage = {"endpoint": s3_storage.endpoint}
    with pytest.raises(
        InputError, match=r"s3://no-such-bucket-x/corpus.*nothing there; check the bucket"
    ):
        run(
            mixture_config(
                "s3://no-such-bucket-x/corpus",
                str(tokenizer_dir),
                f"{s3_bucket}/o",
                storage=storage,
            ),
            RunOptions(),
        )
    with pytest.raises(
        InputError, match=r"output\.uri s3://no-such-bucket-y/o: cannot write there"
    ):
        run(
            mixture_config(
                str(src), str(tokenizer_dir), "s3://no-such-bucket-y/o", storage=storage
            ),
            RunOptions(),
        )


def test_cli_prints_one_line_and_exits_2_on_bad_input(tokenizer_dir: Path, tmp_path: Path) -> None:
    config = mixture_config(str(tmp_path / "missing"), str(tokenizer_dir), str(tmp_path / "out"))
    (tmp_path / "c.json").write_text(config.model_dump_json(by_alias=True))
    done = subprocess.run(
        [sys.executable, "-m", "longreach.jobs.mixture", "--config", str(tmp_path / "c.json")],
        cwd=REPO,
        env=env_for_child(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2  # bad input: the RayJob must not retry it
    assert done.stderr.strip().splitlines()[-1].startswith("mixture: sources[0].uri")
    (tmp_path / "bad.json").write_text('{"name": "x", "spec": {"sources": []}}')
    done = subprocess.run(
        [sys.executable, "-m", "longreach.jobs.mixture", "--config", str(tmp_path / "bad.json")],
        cwd=REPO,
        env=env_for_child(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "invalid config" in done.stderr


def test_ray_workers_import_the_standard_library_operator(ray_local: str) -> None:
    """Ray puts the driver's working directory (the repository root in CI, which has an
    `operator/` folder) on its workers' sys.path; the stdlib module must still win."""
    import ray

    @ray.remote
    def where() -> tuple[str, str]:
        import operator

        import longreach.jobs.mixture.units as units

        return operator.__file__ or "", units.__name__

    stdlib, name = ray.get(where.remote())
    assert "site-packages" not in stdlib and not stdlib.startswith(str(REPO / "operator"))
    assert name == "longreach.jobs.mixture.units"


def test_an_unreadable_file_fails_the_scan_naming_it(
    ray_local: str, tokenizer_dir: Path, tmp_path: Path
) -> None:
    import zstandard

    write_lines(tmp_path / "src" / "a.jsonl", [good(i) for i in range(50)])
    body = zstandard.ZstdCompressor().compress("\n".join(good(i) for i in range(5000)).encode())
    (tmp_path / "src" / "b.jsonl.zst").write_bytes(body[: len(body) // 2])  # truncated upload
    config = mixture_config(
        str(tmp_path / "src"),
        str(tokenizer_dir),
        str(tmp_path / "out"),
        totalTokens="5K",
        sequenceLength=64,
    )
    with pytest.raises(InputError, match=r"b\.jsonl\.zst: cannot read it after \d+ records"):
        run(config, RunOptions())
    assert json.loads((tmp_path / "out" / "progress.json").read_text())["state"] == "failed"


def test_parquet_and_jsonl_sources_with_fixed_domains(
    ray_local: str, tokenizer_dir: Path, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    texts = [json.loads(good(i))["text"] for i in range(400)]
    pq.write_table(pa.table({"content": texts}), tmp_path / "pq" / "part-0.parquet")
    write_lines(tmp_path / "js" / "a.jsonl", [good(i) for i in range(400)])
    config = mixture_config(
        str(tmp_path / "pq"),
        str(tokenizer_dir),
        str(tmp_path / "out"),
        totalTokens="20K",
        sequenceLength=64,
        validationFraction=0,
        sources=[
            {"uri": str(tmp_path / "pq"), "textField": "content", "domain": "book"},
            {"uri": f"{tmp_path}/js/*.jsonl", "domain": "web"},
        ],
        strategy={
            "type": "per-source",
            "domainShares": {"book": 0.75, "web": 0.25},
            "shortDocumentKeepProbability": 1.0,
        },
    )
    m = run(config, RunOptions())
    assert m["sharesFrom"] == "domainShares" and m["shards"]["validation"] == []
    assert m["domainShares"]["after"] == pytest.approx({"book": 0.75, "web": 0.25}, abs=0.01)


def test_a_local_ray_that_fails_to_start_is_started_again(tmp_path: Path) -> None:
    """A local start that misses Ray's start-up deadlines (as on a loaded machine) is retried,
    and the job goes on on the Ray of the next attempt. Run in a child process, outside the
    session's Ray; the first ray.init raises as Ray does when its raylet never registers."""
    script = tmp_path / "start.py"
    script.write_text(
        "import ray\n"
        "from longreach.jobs.mixture.raymap import RunOptions, connect_ray\n"
        "real, calls = ray.init, []\n"
        "def init(**kw):\n"
        "    calls.append(kw)\n"
        "    if len(calls) == 1:\n"
        "        raise Exception('The current node timed out during startup.')\n"
        "    return real(**kw)\n"
        "ray.init = init\n"
        "connect_ray(RunOptions(num_cpus=1))\n"
        "print('attempts', len(calls), 'answer', ray.get(ray.remote(lambda: 42).remote()))\n"
        "ray.shutdown()\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=env_for_child(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "attempts 2 answer 42" in done.stdout
    assert "local Ray did not start (attempt 1): The current node timed out" in done.stderr
