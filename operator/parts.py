"""Pure builders for the pieces every kind's children share: no I/O, plain dicts."""

from __future__ import annotations

import json
from typing import Any

from longreach.contract.common import GROUP, Model, Placement
from longreach.contract.errors import BAD_INPUT_EXIT_CODE

CONFIG_DIR = "/etc/longreach"
CONFIG_PATH = f"{CONFIG_DIR}/config.json"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def labels(kind: str, name: str, spec: Placement | None = None) -> dict[str, str]:
    """Common labels of every child; the Kueue queue label when the spec names a queue."""
    out = {
        "app.kubernetes.io/managed-by": "longreach",
        "app.kubernetes.io/part-of": "longreach",
        f"{GROUP}/kind": kind.lower(),
        f"{GROUP}/name": name,
    }
    if spec is not None and spec.queueName:
        out[QUEUE_LABEL] = spec.queueName
    return out


def metadata(
    name: str, namespace: str, kind: str, spec: Placement | None = None, owner: str = ""
) -> dict[str, Any]:
    """Object metadata; `owner` is the resource's name when the child is named differently."""
    return {"name": name, "namespace": namespace, "labels": labels(kind, owner or name, spec)}


def config_map(name: str, namespace: str, kind: str, config: Model) -> dict[str, Any]:
    """The job's one JSON config, mounted at CONFIG_PATH."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(f"{name}-config", namespace, kind, owner=name),
        "data": {
            "config.json": json.dumps(
                config.model_dump(by_alias=True, mode="json"), indent=2, sort_keys=True
            )
        },
    }


def config_volume(name: str) -> dict[str, Any]:
    return {"name": "config", "configMap": {"name": f"{name}-config"}}


CONFIG_MOUNT = {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}


def env(spec: Placement, extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Environment of a job container: S3 credentials from the Secret, never its contents."""
    out: list[dict[str, Any]] = [
        {"name": "PYTHONSAFEPATH", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.storage.secretName:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            out.append(
                {
                    "name": key,
                    "valueFrom": {"secretKeyRef": {"name": spec.storage.secretName, "key": key}},
                }
            )
    if spec.storage.region:
        out.append({"name": "AWS_DEFAULT_REGION", "value": spec.storage.region})
    out += [{"name": k, "value": v} for k, v in (extra or {}).items()]
    return out


def pod_metadata(kind: str, name: str, spec: Placement, **extra: str) -> dict[str, Any]:
    """A pod template's metadata: the spec's podLabels under the common labels (and `extra`
    labels), and the spec's podAnnotations."""
    out: dict[str, Any] = {"labels": spec.podLabels | labels(kind, name) | extra}
    if spec.podAnnotations:
        out["annotations"] = dict(spec.podAnnotations)
    return out


def pod_placement(spec: Placement) -> dict[str, Any]:
    """Pod-spec fields for scheduling: node selector, tolerations, priority, pull secrets."""
    out: dict[str, Any] = {}
    if spec.nodeSelector:
        out["nodeSelector"] = dict(spec.nodeSelector)
    if spec.tolerations:
        out["tolerations"] = [
            t.model_dump(by_alias=True, exclude_defaults=True) for t in spec.tolerations
        ]
    if spec.priorityClassName:
        out["priorityClassName"] = spec.priorityClassName
    if spec.imagePullSecrets:
        out["imagePullSecrets"] = [{"name": s} for s in spec.imagePullSecrets]
    return out


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def fail_on_bad_input(container: str) -> dict[str, Any]:
    """A Job podFailurePolicy: exit code 2 (bad input) fails the Job without retries."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": [BAD_INPUT_EXIT_CODE],
                },
            }
        ]
    }


def job_command(module: str) -> list[str]:
    """The container command of a job module, reading the mounted config."""
    return ["python", "-m", module, "--config", CONFIG_PATH]
