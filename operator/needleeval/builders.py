"""Pure builders of a NeedleEval's children: ConfigMap and a batch/v1 Job."""

from __future__ import annotations

from typing import Any

from longreach.contract.needleeval import CONTRACT, NeedleEvalSpec, NeedleJobConfig
from longreach.operator import parts

KIND = CONTRACT.kind
CONTAINER = "eval"


def build_job(name: str, namespace: str, spec: NeedleEvalSpec, image: str) -> dict[str, Any]:
    r = spec.resources
    limits: dict[str, Any] = {"memory": r.memory}
    if r.gpus:
        limits["nvidia.com/gpu"] = str(r.gpus)
    pod = {
        "metadata": parts.pod_metadata(KIND, name, spec),
        "spec": {
            # A restarted pod skips the cells already in cells.jsonl.
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": CONTAINER,
                    "image": spec.image or image,
                    "command": parts.job_command(CONTRACT.job_module),
                    "env": parts.env(spec),
                    "resources": {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": limits},
                    "volumeMounts": [parts.CONFIG_MOUNT],
                    "securityContext": parts.container_security(),
                }
            ],
            "volumes": [parts.config_volume(name)],
            **parts.pod_placement(spec),
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": parts.metadata(name, namespace, KIND, spec),
        "spec": {
            "suspend": spec.suspend,
            "backoffLimit": 3,
            "podFailurePolicy": parts.fail_on_bad_input(CONTAINER),
            "template": pod,
        },
    }


def build(
    name: str, namespace: str, spec: NeedleEvalSpec, config: NeedleJobConfig, image: str
) -> list[dict[str, Any]]:
    return [
        parts.config_map(name, namespace, KIND, config),
        build_job(name, namespace, spec, image),
    ]
