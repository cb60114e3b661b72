"""Fixtures shared by every test tier: a real S3 server on loopback, tiny tokenizers.

S3 is moto's server mode (a real HTTP endpoint, as s3fs's own tests use), reached through
s3fs exactly as the jobs reach AWS; nothing is patched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from longreach.contract.common import StorageSpec


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole session; AWS credentials set for s3fs."""
    from moto.server import ThreadedMotoServer

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket; returns `s3://<bucket>`."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def s3_storage(s3_endpoint: str) -> StorageSpec:
    """The StorageSpec a resource would carry to reach the test S3 server."""
    return StorageSpec(endpoint=s3_endpoint)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer trained in a second, saved as a Hugging Face folder."""
    from longreach.jobs.synthetic import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real etcd + kube-apiserver on loopback with our CRDs and the real RayJob and JobSet
    CRDs installed. Yields a `controlplane.cluster.ControlPlane` (kubectl(), kubeconfig, url)."""
    from controlplane.cluster import THIRD_PARTY_CRDS, ControlPlane

    cp = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        cp.kubectl("apply", "--server-side", "-f", str(THIRD_PARTY_CRDS))
        cp.kubectl("apply", "--server-side", "-k", str(REPO / "manifests" / "crds"))
        cp.wait_established()
        yield cp
    finally:
        cp.cleanup()


NEEDS_BINARIES = {"control_plane", "helm", "actionlint", "bare_cluster", "cluster"}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build the Kubernetes binaries before any test runs when a selected test needs them, so
    that nothing skips for a missing binary (the first run builds them: minutes, shown)."""
    if any(NEEDS_BINARIES & set(getattr(item, "fixturenames", ())) for item in items):
        import time

        from controlplane.cluster import ensure_binaries

        started = time.monotonic()
        ensure_binaries()
        took = time.monotonic() - started
        if took > 5:
            print(f"\nbuilt the Kubernetes test binaries in {took:.0f} s (cached from now on)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With LONGREACH_NO_SKIPS=1 (CI), a skipped test that is not a GPU test fails the run:
    everything else can run on this machine, so a skip hides a failure."""
    if os.environ.get("LONGREACH_NO_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r for r in (reporter.stats.get("skipped", []) if reporter else [])
               if "gpu" not in r.keywords]  # fmt: skip
    if skipped:
        for r in skipped:
            print(f"\nnot a GPU test, but skipped: {r.nodeid}: {r.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
