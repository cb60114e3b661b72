"""Pure builders of a ContextExtension's children: ConfigMap, headless Service, JobSet.

One Job per node (a replicated job of `nodes` replicas, one pod each); every pod runs
torchrun with one process per GPU. The JobSet's failure policy restarts the whole gang when
any pod fails, and every attempt resumes from the newest complete checkpoint.
"""

from __future__ import annotations

from typing import Any

from longreach.operator import children as c
from longreach.operator.contextextension.spec import KIND, ContextExtensionSpec, TrainJobConfig

REPLICATED_JOB = "node"
MASTER_PORT = 29500


def service_name(name: str) -> str:
    return f"{name}-rdzv"


def master_address(name: str) -> str:
    """DNS name of node 0's pod: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>."""
    return f"{name}-{REPLICATED_JOB}-0-0.{service_name(name)}"


def torchrun_args(spec: ContextExtensionSpec) -> list[str]:
    procs = max(spec.resources.gpusPerNode, 1)
    return [
        "torchrun",
        f"--nnodes={spec.resources.nodes}",
        f"--nproc-per-node={procs}",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        f"--master-port={MASTER_PORT}",
        "-m",
        "longreach.jobs.train",
        "--config",
        c.CONFIG_PATH,
    ]


def build_service(name: str, namespace: str) -> dict[str, Any]:
    """Headless Service giving every training pod a stable DNS name for the rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": c.metadata(service_name(name), namespace, KIND, owner=name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"jobset.sigs.k8s.io/jobset-name": name},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT}],
        },
    }


def build_jobset(
    name: str, namespace: str, spec: ContextExtensionSpec, image: str
) -> dict[str, Any]:
    r = spec.resources
    limits: dict[str, Any] = {"memory": r.memory}
    if r.gpusPerNode:
        limits["nvidia.com/gpu"] = str(r.gpusPerNode)
    container = {
        "name": "trainer",
        "image": spec.image or image,
        "command": torchrun_args(spec),
        "env": [
            *c.env(spec, {"MASTER_ADDR": master_address(name), "NNODES": str(r.nodes)}),
            {
                "name": "NODE_RANK",
                "valueFrom": {
                    "fieldRef": {
                        "fieldPath": "metadata.annotations['jobset.sigs.k8s.io/job-index']"
                    }
                },
            },
        ],
        "resources": {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": limits},
        "ports": [{"name": "rendezvous", "containerPort": MASTER_PORT}],
        "volumeMounts": [c.CONFIG_MOUNT, {"name": "shm", "mountPath": "/dev/shm"}],
        "securityContext": c.container_security(),
    }
    pod = {
        "metadata": {"labels": c.labels(KIND, name)},
        "spec": {
            "restartPolicy": "Never",
            "containers": [container],
            # NCCL and the data loader need far more shared memory than the 64Mi default.
            "volumes": [c.config_volume(name), {"name": "shm", "emptyDir": {"medium": "Memory"}}],
            **c.pod_placement(spec),
        },
    }
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": c.metadata(name, namespace, KIND, spec),
        "spec": {
            "suspend": spec.suspend,
            "network": {"enableDNSHostnames": True, "subdomain": service_name(name)},
            # Any failed pod restarts the whole gang; preemption is not a failure, the
            # run resumes from its last checkpoint on every attempt. Bad input (the job's
            # exit code 2) fails at once: restarting cannot fix a spec.
            "failurePolicy": {
                "maxRestarts": spec.maxRestarts,
                "rules": [
                    {
                        "name": "bad-input",
                        "action": "FailJobSet",
                        "onJobFailureReasons": ["PodFailurePolicy"],
                    }
                ],
            },
            "successPolicy": {"operator": "All", "targetReplicatedJobs": [REPLICATED_JOB]},
            "replicatedJobs": [
                {
                    "name": REPLICATED_JOB,
                    "replicas": r.nodes,
                    "template": {
                        "metadata": {"labels": c.labels(KIND, name)},
                        "spec": {
                            "parallelism": 1,
                            "completions": 1,
                            "backoffLimit": 0,
                            "podFailurePolicy": c.fail_on_bad_input("trainer"),
                            "template": pod,
                        },
                    },
                }
            ],
        },
    }


def build(
    name: str, namespace: str, spec: ContextExtensionSpec, config: TrainJobConfig, image: str
) -> list[dict[str, Any]]:
    return [
        c.config_map(name, namespace, KIND, config),
        build_service(name, namespace),
        build_jobset(name, namespace, spec, image),
    ]
