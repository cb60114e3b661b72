"""Pure builders of a DataMixture's children: the config ConfigMap and a KubeRay RayJob."""

from __future__ import annotations

from typing import Any

from longreach.contract.datamixture import CONTRACT, DataMixtureSpec, MixtureJobConfig
from longreach.operator import parts

KIND = CONTRACT.kind
ENTRYPOINT = " ".join(parts.job_command(CONTRACT.job_module))
RAY_VERSION = "2.60.0"


def _pod(
    name: str, spec: DataMixtureSpec, image: str, container: str, resources: dict[str, Any]
) -> dict[str, Any]:
    return {
        "metadata": parts.pod_metadata(
            KIND, name, spec, **{"app.kubernetes.io/component": container}
        ),
        "spec": {
            "containers": [
                {
                    "name": container,
                    "image": image,
                    "env": parts.env(spec),
                    "resources": resources,
                    "volumeMounts": [parts.CONFIG_MOUNT],
                    "securityContext": parts.container_security(),
                }
            ],
            "volumes": [parts.config_volume(name)],
            **parts.pod_placement(spec),
        },
    }


def build_rayjob(name: str, namespace: str, spec: DataMixtureSpec, image: str) -> dict[str, Any]:
    """A RayJob whose head runs the mixture job as the driver and whose workers do the map work."""
    image = spec.ray.image or spec.image or image
    worker_res = {
        "requests": {"cpu": spec.ray.workerCPU, "memory": spec.ray.workerMemory},
        "limits": {"cpu": spec.ray.workerCPU, "memory": spec.ray.workerMemory},
    }
    head = _pod(
        name,
        spec,
        image,
        "ray-head",
        {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}},
    )
    worker = _pod(name, spec, image, "ray-worker", worker_res)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": parts.metadata(name, namespace, KIND, spec),
        "spec": {
            "entrypoint": ENTRYPOINT,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 300,
            "suspend": spec.suspend,
            "backoffLimit": 2,
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                # The head only schedules and drives; the workers do the reading and tokenizing.
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": head},
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": spec.ray.workers,
                        "minReplicas": spec.ray.workers,
                        "maxReplicas": spec.ray.workers,
                        "rayStartParams": {},
                        "template": worker,
                    }
                ],
            },
        },
    }


def build(
    name: str, namespace: str, spec: DataMixtureSpec, config: MixtureJobConfig, image: str
) -> list[dict[str, Any]]:
    return [
        parts.config_map(name, namespace, KIND, config),
        build_rayjob(name, namespace, spec, image),
    ]
