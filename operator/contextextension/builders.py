"""Pure builders of a ContextExtension's children: ConfigMap, headless Service, JobSet.

One Job per node (a replicated job of `nodes` replicas, one pod each); every pod runs
torchrun with one process per GPU. The JobSet's failure policy restarts the whole gang when
any pod fails, and every attempt resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import sys
from typing import Any

from longreach.contract.contextextension import CONTRACT, ContextExtensionSpec, TrainJobConfig
from longreach.operator import parts

KIND = CONTRACT.kind
REPLICATED_JOB = "node"
MASTER_PORT = 29500
CONTAINER = "trainer"


def service_name(name: str) -> str:
    return f"{name}-rdzv"


def master_address(name: str) -> str:
    """DNS name of node 0's pod: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>."""
    return f"{name}-{REPLICATED_JOB}-0-0.{service_name(name)}"


def processes_per_node(spec: ContextExtensionSpec) -> int:
    """One training process per GPU; one per node when training on CPU."""
    return max(spec.resources.gpusPerNode, 1)


def torchrun_args(spec: ContextExtensionSpec) -> list[str]:
    """The trainer container's command: torchrun across the JobSet's pods."""
    return [
        "torchrun",
        f"--nnodes={spec.resources.nodes}",
        f"--nproc-per-node={processes_per_node(spec)}",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        f"--master-port={MASTER_PORT}",
        *parts.job_command(CONTRACT.job_module)[1:],
    ]


def local_command(config_path: str, spec: ContextExtensionSpec) -> list[str]:
    """Local mode: the job itself for one training process, `torchrun --standalone` with every
    process on this machine for more (torchrun's own start and shutdown take seconds)."""
    job = ["-m", CONTRACT.job_module, "--config", config_path]
    if spec.world_size() == 1:
        return [sys.executable, "-P", *job]
    launcher = ["-m", "torch.distributed.run", "--standalone"]
    return [sys.executable, "-P", *launcher, f"--nproc-per-node={spec.world_size()}", *job]


def build_service(name: str, namespace: str) -> dict[str, Any]:
    """Headless Service giving every training pod a stable DNS name for the rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": parts.metadata(service_name(name), namespace, KIND, owner=name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"jobset.sigs.k8s.io/jobset-name": name},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT}],
        },
    }


def trainer_container(name: str, spec: ContextExtensionSpec, image: str) -> dict[str, Any]:
    """torchrun in a container with the node's GPUs, the config and a large /dev/shm."""
    r = spec.resources
    limits: dict[str, Any] = {"memory": r.memory}
    if r.gpusPerNode:
        limits["nvidia.com/gpu"] = str(r.gpusPerNode)
    node_rank = {"fieldRef": {"fieldPath": "metadata.annotations['jobset.sigs.k8s.io/job-index']"}}
    return {
        "name": CONTAINER,
        "image": spec.image or image,
        "command": torchrun_args(spec),
        "env": [
            *parts.env(spec, {"MASTER_ADDR": master_address(name), "NNODES": str(r.nodes)}),
            {"name": "NODE_RANK", "valueFrom": node_rank},
        ],
        "resources": {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": limits},
        "ports": [{"name": "rendezvous", "containerPort": MASTER_PORT}],
        "volumeMounts": [parts.CONFIG_MOUNT, {"name": "shm", "mountPath": "/dev/shm"}],
        "securityContext": parts.container_security(),
    }


def node_job(name: str, spec: ContextExtensionSpec, image: str) -> dict[str, Any]:
    """The Job template of one node: one pod, no retries of its own (the JobSet restarts the
    gang), and exit code 2 (bad input) fails it through its podFailurePolicy."""
    pod = {
        "metadata": parts.pod_metadata(KIND, name, spec),
        "spec": {
            "restartPolicy": "Never",
            "containers": [trainer_container(name, spec, image)],
            # NCCL and the data loader need far more shared memory than the 64Mi default.
            "volumes": [
                parts.config_volume(name),
                {"name": "shm", "emptyDir": {"medium": "Memory"}},
            ],
            **parts.pod_placement(spec),
        },
    }
    return {
        "metadata": {"labels": parts.labels(KIND, name)},
        "spec": {
            "parallelism": 1,
            "completions": 1,
            "backoffLimit": 0,
            "podFailurePolicy": parts.fail_on_bad_input(CONTAINER),
            "template": pod,
        },
    }


def failure_policy(spec: ContextExtensionSpec) -> dict[str, Any]:
    """Any failed pod restarts the whole gang, up to maxRestarts; preemption is not a failure,
    every attempt resumes from the last checkpoint. Bad input (a Job failed by its
    podFailurePolicy) fails the JobSet at once: restarting cannot fix a spec."""
    return {
        "maxRestarts": spec.maxRestarts,
        "rules": [
            {
                # JobSet rule names: a letter, then letters, digits or `_,:` (its webhook)
                "name": "bad_input",
                "action": "FailJobSet",
                "onJobFailureReasons": ["PodFailurePolicy"],
            }
        ],
    }


def build_jobset(
    name: str, namespace: str, spec: ContextExtensionSpec, image: str
) -> dict[str, Any]:
    """The JobSet: `nodes` replicas of one node's Job, with stable host names for the
    rendezvous, gang restarts, and success when every node's Job succeeded."""
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": parts.metadata(name, namespace, KIND, spec),
        "spec": {
            "suspend": spec.suspend,
            "network": {"enableDNSHostnames": True, "subdomain": service_name(name)},
            "failurePolicy": failure_policy(spec),
            "successPolicy": {"operator": "All", "targetReplicatedJobs": [REPLICATED_JOB]},
            "replicatedJobs": [
                {
                    "name": REPLICATED_JOB,
                    "replicas": spec.resources.nodes,
                    "template": node_job(name, spec, image),
                }
            ],
        },
    }


def build(
    name: str, namespace: str, spec: ContextExtensionSpec, config: TrainJobConfig, image: str
) -> list[dict[str, Any]]:
    return [
        parts.config_map(name, namespace, KIND, config),
        build_service(name, namespace),
        build_jobset(name, namespace, spec, image),
    ]
