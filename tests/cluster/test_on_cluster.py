"""Longreach on the miniature cluster: the real Job controller, scheduler, JobSet controller and
Kueue move the children; nothing is patched by hand. Only the jobs' processes are simulated
(kwok ends a pod with the exit code a test chooses) and their outputs are written by the test
where the job would write them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from controlplane.minicluster import EXIT_CODE, MiniCluster

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.contextextension import TrainProgress, TrainReport, TrainResult

from .conftest import apply, events, finish_pods, get, paper_extension, phase_is, status

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
JOBSET = "jobset.sigs.k8s.io/jobset-name"
CE = "contextextension"


def running_pods(cluster: MiniCluster, ns: str, selector: str, count: int) -> list[dict[str, Any]]:
    """The `count` running pods of `selector`, once there are exactly that many."""

    def check() -> list[dict[str, Any]] | None:
        pods = [p for p in cluster.pods(ns, selector) if p["status"].get("phase") == "Running"]
        return (
            pods
            if len(pods) == count and not any(p["metadata"].get("deletionTimestamp") for p in pods)
            else None
        )

    return list(cluster.wait(f"{count} running pods of {selector}", check, 180))


def report(
    bucket: str, name: str, store: StorageSpec, step: int, total: int, done: bool = False
) -> None:
    """Play the training job's rank 0: progress.json, and at the end the result and the marker."""
    out = f"{bucket}/{name}"
    result = TrainResult(uri=f"{out}/final", loss=1.9) if done else None
    rep = TrainReport(
        message=f"step {step}/{total}",
        progress=TrainProgress(step=step, totalSteps=total, tokensSeen=step * 4_194_304),
        result=result,
        updatedAt=time.time(),
    )
    if done:
        storage.write_json(f"{out}/final/longreach.json", {"step": step}, store)
    storage.write_json(f"{out}/progress.json", rep.model_dump(mode="json"), store)


def gpus(pod: dict[str, Any]) -> int:
    return sum(
        int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in pod["spec"]["containers"]
    )


def test_the_paper_recipe_runs_as_a_gang_of_16_gpus_on_two_nodes(
    cluster: MiniCluster, operator: Any, namespace: str, inputs: str, s3_endpoint: str,
    s3_storage: StorageSpec,
) -> None:  # fmt: skip
    apply(cluster, namespace, paper_extension("paper", inputs, s3_endpoint))
    pods = running_pods(cluster, namespace, f"{JOBSET}=paper", 2)
    assert len({p["spec"]["nodeName"] for p in pods}) == 2, "one pod per node"
    assert sum(gpus(p) for p in pods) == 16
    jobs = json.loads(cluster.cp.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    assert sorted(j["metadata"]["name"] for j in jobs) == ["paper-node-0", "paper-node-1"]
    st = cluster.wait("Running", phase_is(cluster, CE, "paper", namespace, "Running"), 60)
    assert st["attempts"] == 1

    report(inputs, "paper", s3_storage, step=600, total=1192)
    cluster.wait(
        "the job's progress in the status",
        lambda: status(cluster, CE, "paper", namespace).get("progress", {}).get("step") == 600,
        60,
    )
    report(inputs, "paper", s3_storage, step=1192, total=1192, done=True)
    finish_pods(cluster, namespace, f"{JOBSET}=paper", 0)
    st = cluster.wait(
        "Succeeded", phase_is(cluster, CE, "paper", namespace, "Succeeded", "Failed"), 120
    )
    assert st["phase"] == "Succeeded", st
    assert st["result"]["loss"] == 1.9 and st["attempts"] == 1
    js = get(cluster, "jobset", "paper", namespace)
    assert any(
        c["type"] == "Completed" and c["status"] == "True" for c in js["status"]["conditions"]
    )


@pytest.mark.slow
def test_a_lost_node_restarts_the_gang_which_then_succeeds(
    cluster: MiniCluster, operator: Any, namespace: str, inputs: str, s3_endpoint: str,
    s3_storage: StorageSpec,
) -> None:  # fmt: skip
    apply(cluster, namespace, paper_extension("lost", inputs, s3_endpoint, maxRestarts=2))
    pods = running_pods(cluster, namespace, f"{JOBSET}=lost", 2)
    cluster.wait("Running", phase_is(cluster, CE, "lost", namespace, "Running"), 60)
    report(inputs, "lost", s3_storage, step=50, total=1192)
    victim = pods[0]["spec"]["nodeName"]
    cluster.cp.kubectl("delete", "node", victim)
    try:
        # Pod GC fails the lost node's pod after its 40 s quarantine; its Job fails and the
        # JobSet controller restarts the whole gang.
        st = cluster.wait(
            "a second attempt",
            lambda: (s := status(cluster, CE, "lost", namespace)).get("attempts") == 2 and s,
            240,
        )
        assert st["phase"] in ("Running", "Pending"), st
        pods = running_pods(
            cluster, namespace, f"{JOBSET}=lost,jobset.sigs.k8s.io/restart-attempt=1", 2
        )
        assert victim not in {p["spec"]["nodeName"] for p in pods}
        said = [e for e in events(cluster, namespace, "lost") if e["reason"] == "Restarted"]
        assert said and "attempt 2" in said[0]["message"] and "failed" in said[0]["message"]
        report(inputs, "lost", s3_storage, step=1192, total=1192, done=True)
        finish_pods(cluster, namespace, f"{JOBSET}=lost", 0)
        st = cluster.wait(
            "Succeeded", phase_is(cluster, CE, "lost", namespace, "Succeeded", "Failed"), 120
        )
        assert st["phase"] == "Succeeded" and st["attempts"] == 2, st
    finally:
        cluster.add_nodes([victim])


def test_past_max_restarts_the_run_fails_with_the_reason(
    cluster: MiniCluster, operator: Any, namespace: str, inputs: str, s3_endpoint: str,
) -> None:  # fmt: skip
    apply(cluster, namespace, paper_extension("fragile", inputs, s3_endpoint, maxRestarts=1))
    running_pods(cluster, namespace, f"{JOBSET}=fragile", 2)
    finish_pods(cluster, namespace, f"{JOBSET}=fragile,jobset.sigs.k8s.io/job-index=0", 1)
    running_pods(cluster, namespace, f"{JOBSET}=fragile,jobset.sigs.k8s.io/restart-attempt=1", 2)
    finish_pods(cluster, namespace, f"{JOBSET}=fragile,jobset.sigs.k8s.io/job-index=1", 1)
    st = cluster.wait(
        "Failed", phase_is(cluster, CE, "fragile", namespace, "Failed", "Succeeded"), 120
    )
    assert st["phase"] == "Failed" and st["attempts"] == 2, st
    assert "max" in st["message"] and "restarts" in st["message"], st["message"]
    failed = [e for e in events(cluster, namespace, "fragile") if e["type"] == "Warning"]
    assert any(st["message"][:200] in e["message"] for e in failed)


def test_bad_input_fails_a_needle_eval_once_and_other_exit_codes_are_retried(
    cluster: MiniCluster, operator: Any, namespace: str, inputs: str, s3_endpoint: str,
) -> None:  # fmt: skip
    def needle(name: str, exit_code: int) -> dict[str, Any]:
        return {
            "apiVersion": "longreach.io/v1alpha1",
            "kind": "NeedleEval",
            "metadata": {"name": name},
            "spec": {
                "model": {"uri": f"{inputs}/llama-2-7b"},
                "lengths": {"values": [1000]},
                "output": {"uri": f"{inputs}/{name}"},
                "storage": {"endpoint": s3_endpoint},
                "podAnnotations": {EXIT_CODE: str(exit_code)},
            },
        }

    apply(cluster, namespace, needle("bad", 2))
    apply(cluster, namespace, needle("flaky", 1))
    st = cluster.wait("Failed", phase_is(cluster, "needleeval", "bad", namespace, "Failed"), 120)
    assert "PodFailurePolicy" in st["message"] and "exit code 2" in st["message"], st["message"]
    job = get(cluster, "job", "bad", namespace)
    assert job["status"]["failed"] == 1 and len(cluster.pods(namespace, "job-name=bad")) == 1
    # exit code 1 is not bad input: the Job controller retries the pod (backoffLimit 3)
    cluster.wait("a retried pod", lambda: len(cluster.pods(namespace, "job-name=flaky")) >= 2, 120)
    assert status(cluster, "needleeval", "flaky", namespace)["phase"] != "Failed"


def test_kueue_admits_what_fits_the_quota_and_the_other_waits_then_starts(
    cluster: MiniCluster, operator: Any, namespace: str, inputs: str, s3_endpoint: str,
    s3_storage: StorageSpec,
) -> None:  # fmt: skip
    queue = {"queueName": "gpu"}
    apply(cluster, namespace, paper_extension("first", inputs, s3_endpoint, **queue))
    running_pods(cluster, namespace, f"{JOBSET}=first", 2)
    apply(cluster, namespace, paper_extension("second", inputs, s3_endpoint, **queue))

    def waiting_for_admission() -> dict[str, Any] | None:
        st = status(cluster, CE, "second", namespace)
        waiting = [
            c for c in st.get("conditions", []) if c["type"] == "Waiting" and c["status"] == "True"
        ]
        said = waiting[0]["message"] if waiting else ""
        return st if "insufficient" in said else None  # Kueue's own words, once it has tried

    st = cluster.wait("second waits for Kueue", waiting_for_admission, 60)
    assert st["phase"] == "Waiting", st
    assert f"LocalQueue {namespace}/gpu" in st["message"] and "nvidia.com/gpu" in st["message"], st
    assert not cluster.pods(namespace, f"{JOBSET}=second")

    # The first finishes: Kueue admits the second, which starts by itself.
    report(inputs, "first", s3_storage, step=1192, total=1192, done=True)
    finish_pods(cluster, namespace, f"{JOBSET}=first", 0)
    cluster.wait("first Succeeded", phase_is(cluster, CE, "first", namespace, "Succeeded"), 120)
    running_pods(cluster, namespace, f"{JOBSET}=second", 2)
    cluster.wait("second Running", phase_is(cluster, CE, "second", namespace, "Running"), 60)

    # spec.suspend under Kueue: the Workload is deactivated, the pods go; resume re-queues it.
    cluster.cp.kubectl(
        "patch", CE, "second", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    cluster.wait("Suspended", phase_is(cluster, CE, "second", namespace, "Suspended"), 60)
    cluster.wait("no pods", lambda: not cluster.pods(namespace, f"{JOBSET}=second"), 120)
    cluster.cp.kubectl(
        "patch", CE, "second", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    running_pods(cluster, namespace, f"{JOBSET}=second", 2)
    cluster.wait("Running again", phase_is(cluster, CE, "second", namespace, "Running"), 60)
    report(inputs, "second", s3_storage, step=1192, total=1192, done=True)
    finish_pods(cluster, namespace, f"{JOBSET}=second", 0)
    cluster.wait("second Succeeded", phase_is(cluster, CE, "second", namespace, "Succeeded"), 120)
