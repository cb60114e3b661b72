"""Pure child builders: plain dicts from specs, no I/O."""

from __future__ import annotations

import json

import pytest

from longreach.contract.contextextension import ContextExtensionSpec, TrainJobConfig
from longreach.contract.datamixture import DataMixtureSpec, MixtureJobConfig
from longreach.contract.needleeval import NeedleEvalSpec, NeedleJobConfig
from longreach.operator.contextextension import builders as ctx
from longreach.operator.datamixture import builders as dmix
from longreach.operator.needleeval import builders as needle

pytestmark = pytest.mark.unit

MIX = DataMixtureSpec.model_validate(
    {
        "sources": [{"uri": "s3://c"}],
        "tokenizer": {"uri": "t"},
        "totalTokens": "4M",
        "sequenceLength": 4096,
        "output": {"uri": "s3://o"},
        "queueName": "q",
        "suspend": True,
    }
)
EXT = ContextExtensionSpec.model_validate(
    {
        "model": {"uri": "m"},
        "data": {"uri": "d"},
        "sequenceLength": 8192,
        "rope": {"theta": 5e5},
        "training": {"tokens": "1M"},
        "resources": {"nodes": 3, "gpusPerNode": 0},
        "output": {"uri": "o"},
        "maxRestarts": 4,
    }
)
EVAL = NeedleEvalSpec.model_validate(
    {
        "model": {"uri": "m"},
        "output": {"uri": "o"},
        "image": "my/eval:1",
        "imagePullSecrets": ["regcred"],
    }
)


def test_mixture_children() -> None:
    cm, rayjob = dmix.build("m", "ns", MIX, MixtureJobConfig(name="m", spec=MIX), "img:1")
    assert (
        cm["metadata"]["name"] == "m-config"
        and json.loads(cm["data"]["config.json"])["spec"]["totalTokens"] == 4_000_000
    )
    assert (
        rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
        and rayjob["spec"]["suspend"] is True
    )
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "img:1" and not any(
        "valueFrom" in e for e in head["env"]
    )  # no secret named


def test_cpu_training_runs_one_process_per_node() -> None:
    _, svc, js = ctx.build(
        "e", "ns", EXT, TrainJobConfig(name="e", spec=EXT, dataUri="d"), "trainer:1"
    )
    container = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "--nproc-per-node=1" in container["command"] and "--nnodes=3" in container["command"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert js["spec"]["replicatedJobs"][0]["replicas"] == 3
    assert js["spec"]["failurePolicy"]["maxRestarts"] == 4
    assert svc["spec"]["selector"] == {"jobset.sigs.k8s.io/jobset-name": "e"}
    # Bad input (exit 2) fails the whole run at once instead of burning gang restarts.
    job = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert js["spec"]["failurePolicy"]["rules"] == [
        {"name": "bad_input", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}
    ]


def test_eval_job_uses_the_specs_image_and_pull_secrets() -> None:
    _, job = needle.build(
        "n", "ns", EVAL, NeedleJobConfig(name="n", spec=EVAL, modelUri="m"), "default:1"
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "my/eval:1" and pod["imagePullSecrets"] == [
        {"name": "regcred"}
    ]
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_local_training_runs_one_process_per_rank_and_torchrun_only_for_several() -> None:
    import sys

    spec = ContextExtensionSpec.model_validate(
        {
            "model": {"uri": "m"},
            "data": {"uri": "d"},
            "sequenceLength": 1024,
            "rope": {"theta": 1e6},
            "training": {"tokens": "1M"},
            "resources": {"nodes": 3, "gpusPerNode": 0},
            "output": {"uri": "o"},
        }
    )
    cmd = ctx.local_command("/tmp/c.json", spec)
    assert cmd[:4] == [sys.executable, "-P", "-m", "torch.distributed.run"]
    assert "--nproc-per-node=3" in cmd
    assert cmd[-3:] == ["longreach.jobs.train", "--config", "/tmp/c.json"]
    alone = spec.model_copy(update={"resources": spec.resources.model_copy(update={"nodes": 1})})
    job = ["-m", "longreach.jobs.train", "--config", "/tmp/c.json"]
    assert ctx.local_command("/tmp/c.json", alone) == [sys.executable, "-P", *job]


def test_pod_labels_and_annotations_reach_every_kinds_pods_and_ours_win() -> None:
    extra = {
        "podLabels": {"team": "llm", "app.kubernetes.io/managed-by": "someone-else"},
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
    }
    mix = DataMixtureSpec.model_validate(MIX.model_dump() | extra)
    ext = ContextExtensionSpec.model_validate(EXT.model_dump() | extra)
    ev = NeedleEvalSpec.model_validate(EVAL.model_dump() | extra)
    rayjob = dmix.build_rayjob("m", "ns", mix, "img")["spec"]["rayClusterSpec"]
    templates = [
        rayjob["headGroupSpec"]["template"],
        rayjob["workerGroupSpecs"][0]["template"],
        ctx.build_jobset("e", "ns", ext, "img")["spec"]["replicatedJobs"][0]["template"]["spec"][
            "template"
        ],
        needle.build_job("n", "ns", ev, "img")["spec"]["template"],
    ]
    for t in templates:
        assert t["metadata"]["labels"]["team"] == "llm"
        assert t["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "longreach"
        assert t["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    plain = needle.build_job("n", "ns", EVAL, "img")["spec"]["template"]["metadata"]
    assert "annotations" not in plain
