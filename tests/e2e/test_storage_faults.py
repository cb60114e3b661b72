"""Storage faults are survived or reported: the S3 server stops while a mixture writes its shards
and while training saves checkpoints, then comes back. With enough retries (spec.storage) the
job waits it out and completes; with too few it fails with the endpoint named, nothing
half-written is taken as complete, and a rerun completes. Bad credentials name the Secret and
the endpoint. The S3 server is moto's, restarted on the same port (its state lives in this
process, so the objects survive the outage, as a real store's would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from longreach.contract import storage
from longreach.contract.common import StorageSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Store:
    """A moto S3 server that can be taken down and brought back on the same port."""

    def __init__(self) -> None:
        from controlplane.cluster import free_port

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: Any = None
        self.up()

    def up(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def down(self) -> None:
        self.server.stop()

    def outage(self, seconds: float) -> threading.Thread:
        """Down now, up again after `seconds`, in the background."""
        self.down()
        thread = threading.Timer(seconds, self.up)
        thread.start()
        return thread


@pytest.fixture
def store(s3_endpoint: str) -> Iterator[Store]:  # s3_endpoint: the AWS_* variables are set
    s = Store()
    try:
        yield s
    finally:
        s.down()


def bucket(store: Store, name: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=store.endpoint, region_name="us-east-1").create_bucket(
        Bucket=name
    )
    return f"s3://{name}"


def start_job(module: str, config: dict[str, Any], tmp: Path, **env: str) -> subprocess.Popen[str]:
    path = tmp / f"config-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-P", "-m", module, "--config", str(path)],
        env={**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/",
    )  # fmt: skip


def report(out: str, spec: StorageSpec) -> dict[str, Any]:
    try:
        return storage.read_json_if_exists(storage.join(out, "progress.json"), spec) or {}
    except Exception:
        return {}


def wait_until(what: str, check: Any, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the job ended before {what}:\n{proc.stdout.read()}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def scanned(out: str, spec: StorageSpec) -> bool:
    """Pass 1 is saved: what is left (plan, tokenizing, shards, plots, manifest) takes the job
    seconds and writes to the store throughout. (Its progress messages are throttled to one
    every 2 s: a small pass can finish between two of them, too soon to wait for.)"""
    try:
        return storage.exists(storage.join(out, "_work", "scan.json"), spec)
    except Exception:
        return False


def shards_whole(out: str, spec: StorageSpec) -> None:
    """Every shard the manifest lists is there with the rows it says."""
    import pyarrow.parquet as pq

    manifest = storage.read_json(storage.join(out, "manifest.json"), spec)
    for entry in manifest["shards"]["train"] + manifest["shards"]["validation"]:
        fs, path = storage.filesystem(storage.join(out, entry["path"]), spec)
        with fs.open(path, "rb") as f:
            assert pq.ParquetFile(f).metadata.num_rows == entry["rows"]


def mixture(
    source: str, tokenizer: Path, out: str, endpoint: str, **storage_over: Any
) -> dict[str, Any]:
    from mixture.conftest import mixture_config

    config = mixture_config(source, str(tokenizer), out).model_dump(by_alias=True, mode="json")
    config["spec"]["storage"] = {"endpoint": endpoint, **storage_over}
    return config


@pytest.fixture(scope="module")
def s3_corpus_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mixture.conftest import SCALE

    from longreach.jobs.mixture.corpus import write_slimpajama_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_slimpajama_corpus(str(root), documents=40_000, chunks=2, files_per_chunk=4, seed=1,
                            scale=SCALE)  # fmt: skip
    return root


def upload(folder: Path, uri: str, spec: StorageSpec) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            storage.write_bytes(storage.join(uri, str(f.relative_to(folder))), f.read_bytes(), spec)


def test_a_mixture_waits_out_an_outage_and_completes(
    store: Store, s3_corpus_files: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    root = bucket(store, "outage-mix")
    spec = StorageSpec(endpoint=store.endpoint)
    upload(s3_corpus_files, f"{root}/corpus", spec)
    out = f"{root}/mix"
    job = start_job(
        "longreach.jobs.mixture",
        mixture(
            f"{root}/corpus/train",
            tokenizer_dir,
            out,
            store.endpoint,
            maxAttempts=30,
            connectTimeout=2,
        ),
        tmp_path,
    )
    wait_until("the scan's record", lambda: scanned(out, spec), job)
    store.outage(8).join()
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output
    shards_whole(out, spec)
    assert report(out, spec)["state"] == "succeeded"


def test_a_longer_outage_fails_clearly_commits_nothing_and_a_rerun_completes(
    store: Store, s3_corpus_files: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    root = bucket(store, "outage-fail")
    spec = StorageSpec(endpoint=store.endpoint)
    upload(s3_corpus_files, f"{root}/corpus", spec)
    out = f"{root}/mix"
    impatient = mixture(f"{root}/corpus/train", tokenizer_dir, out, store.endpoint,
                        maxAttempts=2, connectTimeout=1)  # fmt: skip
    job = start_job("longreach.jobs.mixture", impatient, tmp_path)
    wait_until("the scan's record", lambda: scanned(out, spec), job)
    store.down()
    try:
        output, _ = job.communicate(timeout=600)
    finally:
        store.up()
    assert job.returncode == 1, output  # not bad input: the children retry it
    assert store.endpoint in output.strip().splitlines()[-1]
    assert not storage.exists(storage.join(out, "manifest.json"), spec)
    rerun = start_job("longreach.jobs.mixture", impatient, tmp_path)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    shards_whole(out, spec)


def test_training_waits_out_an_outage_during_its_checkpoints(
    store: Store, tmp_path: Path, tokenizer_dir: Path
) -> None:
    from train.helpers import base_spec
    from transformers import AutoTokenizer

    from longreach.jobs.synthetic import build_tiny_llama
    from longreach.jobs.train.testdata import write_mixture

    root = bucket(store, "outage-train")
    spec = StorageSpec(endpoint=store.endpoint)
    model = build_tiny_llama(tmp_path / "model", tokenizer_dir, max_position_embeddings=256)
    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    write_mixture(f"{root}/mix", sequence_length=256, vocab_size=vocab, train_rows=64,
                  validation_rows=4, store=spec)  # fmt: skip
    out = f"{root}/out"
    train = base_spec(str(model), f"{root}/mix", out, checkpoint={"everySteps": 1, "keep": 2},
                      training={"tokens": 256 * 4 * 12})  # fmt: skip
    train["storage"] = {"endpoint": store.endpoint, "maxAttempts": 30, "connectTimeout": 2}
    job = start_job(
        "longreach.jobs.train",
        {"name": "outage", "spec": train, "dataUri": f"{root}/mix"},
        tmp_path,
    )
    first = storage.join(out, "checkpoints/step-000001/complete.json")
    wait_until("the first checkpoint", lambda: storage.exists(first, spec), job)
    store.outage(8).join()  # steps and checkpoints go on meanwhile, into the outage
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output
    fs, path = storage.filesystem(storage.join(out, "checkpoints"), spec)
    for marker in fs.glob(f"{path}/step-*/complete.json"):
        folder = marker.rsplit("/", 1)[0]
        assert any(f.endswith("model_states.pt") for f in fs.find(folder)), folder
    assert storage.exists(storage.join(out, "final/longreach.json"), spec)


def test_bad_credentials_name_the_secret_and_the_endpoint(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    from controlplane.cluster import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},  # every request authenticated
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        endpoint = f"http://127.0.0.1:{port}"
        config = mixture("s3://corpora/train", tokenizer_dir, "s3://out/mix", endpoint,
                         secretName="s3-credentials")  # fmt: skip
        time.sleep(3)
        job = start_job("longreach.jobs.mixture", config, tmp_path,
                        AWS_ACCESS_KEY_ID="not-a-key", AWS_SECRET_ACCESS_KEY="wrong")  # fmt: skip
        output, _ = job.communicate(timeout=300)
    finally:
        server.terminate()
        server.wait()
    last = output.strip().splitlines()[-1]
    assert job.returncode == 2, output  # bad input: fails once
    assert "output.uri s3://out/mix: cannot write there (PermissionError" in last
    assert f"the endpoint ({endpoint})" in last and "Secret 's3-credentials'" in last
