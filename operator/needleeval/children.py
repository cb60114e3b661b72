"""Pure builders of a NeedleEval's children: ConfigMap and a batch/v1 Job."""

from __future__ import annotations

from typing import Any

from longreach.operator import children as c
from longreach.operator.needleeval.spec import KIND, NeedleEvalSpec, NeedleJobConfig


def build_job(name: str, namespace: str, spec: NeedleEvalSpec, image: str) -> dict[str, Any]:
    r = spec.resources
    limits: dict[str, Any] = {"memory": r.memory}
    if r.gpus:
        limits["nvidia.com/gpu"] = str(r.gpus)
    pod = {
        "metadata": {"labels": c.labels(KIND, name)},
        "spec": {
            # A restarted pod skips the cells already in cells.jsonl.
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "eval",
                    "image": spec.image or image,
                    "command": ["python", "-m", "longreach.jobs.needle", "--config", c.CONFIG_PATH],
                    "env": c.env(spec),
                    "resources": {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": limits},
                    "volumeMounts": [c.CONFIG_MOUNT],
                    "securityContext": c.container_security(),
                }
            ],
            "volumes": [c.config_volume(name)],
            **c.pod_placement(spec),
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": c.metadata(name, namespace, KIND, spec),
        "spec": {
            "suspend": spec.suspend,
            "backoffLimit": 3,
            "podFailurePolicy": c.fail_on_bad_input("eval"),
            "template": pod,
        },
    }


def build(
    name: str, namespace: str, spec: NeedleEvalSpec, config: NeedleJobConfig, image: str
) -> list[dict[str, Any]]:
    return [c.config_map(name, namespace, KIND, config), build_job(name, namespace, spec, image)]
