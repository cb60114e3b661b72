"""The operator creates each kind's children, with owner references, labels, resources and
environment, against a real kube-apiserver."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from .conftest import Operator, get, wait_for

pytestmark = pytest.mark.integration


def apply(cp: Any, ns: str, manifest: str) -> None:
    cp.kubectl("apply", "-n", ns, "-f", "-", input=textwrap.dedent(manifest))


def test_datamixture_gets_configmap_and_rayjob(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Any
) -> None:
    apply(
        control_plane,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: DataMixture
        metadata: {{name: mix}}
        spec:
          sources: [{{uri: s3://corpora/SlimPajama-627B/train}}]
          tokenizer: {{uri: s3://models/llama-2-7b}}
          totalTokens: 5B
          sequenceLength: 131072
          output: {{uri: {tmp_path}/mix}}
          storage: {{secretName: s3-credentials, endpoint: http://minio:9000}}
          ray: {{workers: 3, workerCPU: 6, workerMemory: 20Gi}}
          queueName: research
        """,
    )
    rayjob = wait_for("RayJob", lambda: get(control_plane, "rayjob", "mix", namespace), op=operator)
    owner = get(control_plane, "dmix", "mix", namespace)
    assert rayjob["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    assert rayjob["metadata"]["ownerReferences"][0]["controller"] is True
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    assert rayjob["metadata"]["labels"]["longreach.io/name"] == "mix"
    workers = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 3
    worker = workers["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"] == {"cpu": "6", "memory": "20Gi"}
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in worker["env"] if "valueFrom" in e
    }
    assert secret_env == {
        "AWS_ACCESS_KEY_ID": "s3-credentials",
        "AWS_SECRET_ACCESS_KEY": "s3-credentials",
    }
    assert "longreach.jobs.mixture" in rayjob["spec"]["entrypoint"]
    cm = get(control_plane, "configmap", "mix-config", namespace)
    assert '"totalTokens": 5000000000' in cm["data"]["config.json"]
    assert '"endpoint": "http://minio:9000"' in cm["data"]["config.json"]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]


def test_contextextension_gets_gang_jobset(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Any
) -> None:
    apply(
        control_plane,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: ContextExtension
        metadata: {{name: ext}}
        spec:
          model: {{uri: s3://models/llama-2-7b}}
          data: {{uri: s3://artifacts/mixtures/m}}
          sequenceLength: 81920
          rope: {{theta: 2000000}}
          training: {{tokens: 5B, batchTokens: 4M}}
          resources: {{nodes: 2, gpusPerNode: 8, cpu: "64", memory: 900Gi}}
          output: {{uri: {tmp_path}/ext}}
          priorityClassName: high
          nodeSelector: {{gpu: a100}}
          tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
        """,
    )
    js = wait_for("JobSet", lambda: get(control_plane, "jobset", "ext", namespace), op=operator)
    svc = get(control_plane, "service", "ext-rdzv", namespace)
    assert svc["spec"]["clusterIP"] == "None"
    assert js["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": "ext-rdzv"}
    assert js["spec"]["failurePolicy"]["maxRestarts"] == 10
    rj = js["spec"]["replicatedJobs"][0]
    assert rj["replicas"] == 2
    pod = rj["template"]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "high" and pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert c["command"][:3] == ["torchrun", "--nnodes=2", "--nproc-per-node=8"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["MASTER_ADDR"] == "ext-node-0-0.ext-rdzv"
    assert (
        env["NODE_RANK"]["fieldRef"]["fieldPath"]
        == "metadata.annotations['jobset.sigs.k8s.io/job-index']"
    )


def test_needleeval_gets_job(
    control_plane: Any, operator: Operator, namespace: str, tmp_path: Any
) -> None:
    apply(
        control_plane,
        namespace,
        f"""
        apiVersion: longreach.io/v1alpha1
        kind: NeedleEval
        metadata: {{name: niah}}
        spec:
          model: {{uri: s3://models/m}}
          resources: {{gpus: 1}}
          output: {{uri: {tmp_path}/niah}}
        """,
    )
    job = wait_for("Job", lambda: get(control_plane, "job", "niah", namespace), op=operator)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-3:] == ["longreach.jobs.needle", "--config", "/etc/longreach/config.json"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cm = get(control_plane, "configmap", "niah-config", namespace)
    assert '"modelUri": "s3://models/m"' in cm["data"]["config.json"]
