"""The miniature cluster (tests/controlplane/minicluster.py) and the operator against it.

One cluster for the whole tier: three simulated nodes of 8 GPUs, a ClusterQueue with 16 GPUs of
quota; each test gets a namespace with a LocalQueue. Outputs live on the session's S3 server.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane.cluster import OperatorProcess
from controlplane.minicluster import EXIT_CODE, MiniCluster

from longreach.contract import storage
from longreach.contract.common import StorageSpec

REPO = Path(__file__).resolve().parents[2]
LLAMA_2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "num_hidden_layers": 32,
    "max_position_embeddings": 4096,
    "vocab_size": 32000,
    "rope_theta": 10000.0,
    "torch_dtype": "float16",
}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniCluster]:
    mc = MiniCluster(tmp_path_factory.mktemp("minicluster"), nodes=3, gpu_quota=16).start()
    try:
        yield mc
    finally:
        mc.stop()


@pytest.fixture(scope="session")
def operator(
    cluster: MiniCluster, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    op = OperatorProcess(cluster.cp.kubeconfig, tmp_path_factory.mktemp("operator"), env=creds)
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(cluster: MiniCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with a LocalQueue named like the ClusterQueue (`gpu`)."""
    name = "c-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    cluster.cp.kubectl("create", "namespace", name)
    cluster.local_queue(name)
    yield name
    cluster.cp.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def inputs(s3_bucket: str, s3_storage: StorageSpec) -> str:
    """A model folder (Llama-2-7B's config) and a finished mixture (its manifest) on S3, as
    the operator's input checks and planner read them; returns the bucket."""
    storage.write_json(f"{s3_bucket}/llama-2-7b/config.json", LLAMA_2_7B, s3_storage)
    storage.write_json(f"{s3_bucket}/mixture/manifest.json", {"chunks": 1}, s3_storage)
    return s3_bucket


def paper_extension(
    name: str, bucket: str, endpoint: str, nodes: int = 2, **spec: Any
) -> dict[str, Any]:
    """The paper recipe's ContextExtension (manifests/examples/paper-recipe.yaml) on `nodes`
    nodes of 8 GPUs, reading and writing the test bucket; `spec` overrides fields."""
    docs = yaml.safe_load_all((REPO / "manifests/examples/paper-recipe.yaml").read_text())
    ext = copy.deepcopy(next(d for d in docs if d and d["kind"] == "ContextExtension"))
    ext["metadata"] = {"name": name}
    s = ext["spec"]
    s["resources"]["nodes"] = nodes
    s["model"] = {"uri": f"{bucket}/llama-2-7b"}
    s["data"] = {"uri": f"{bucket}/mixture"}
    s["output"] = {"uri": f"{bucket}/{name}"}
    s["storage"] = {"endpoint": endpoint}
    s.update(spec)
    return ext


def apply(cluster: MiniCluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get(cluster: MiniCluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return dict(
        json.loads(cluster.cp.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
    )


def status(cluster: MiniCluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return dict(get(cluster, kind, name, namespace).get("status") or {})


def phase_is(
    cluster: MiniCluster, kind: str, name: str, namespace: str, *phases: str
) -> Callable[[], dict[str, Any] | None]:
    """A check for `wait`: the status once its phase is one of `phases`."""

    def check() -> dict[str, Any] | None:
        st = status(cluster, kind, name, namespace)
        return st if st.get("phase") in phases else None

    return check


def events(cluster: MiniCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.cp.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
        "-o", "json",
    )  # fmt: skip
    return list(json.loads(out.stdout)["items"])


def finish_pods(cluster: MiniCluster, namespace: str, selector: str, exit_code: int) -> None:
    """End the running pods matching `selector` with `exit_code` (kwok-stages.yaml)."""
    cluster.cp.kubectl(
        "annotate", "pods", "-n", namespace, "-l", selector, "--overwrite",
        "--field-selector=status.phase=Running",
        f"{EXIT_CODE}={exit_code}",
    )  # fmt: skip
