"""Scale on the miniature cluster (tests/controlplane/minicluster.py): the real scheduler, Job
and JobSet controllers and Kueue's webhooks, with kwok's simulated GPU nodes.

Creates, at once, E ContextExtensions (each a JobSet gang of 2 pods with 1 GPU each) and N
NeedleEvals (a Job of one 1-GPU pod) on `--nodes` nodes of 8 GPUs, and reports:
- the time from the first create until every pod is placed (bound to a node) and running;
- the operator's create -> child (JobSet or Job) p50 and p99, per kind;
- the operator's peak RSS.
The operator has no S3 credentials, so it probes no s3:// input (as `operator_scale.py
--no-s3`): this measures placement, not an object store.

    .venv/bin/python -P benchmarks/cluster_scale.py --nodes 100 --extensions 200 --evals 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import psutil
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from controlplane.cluster import OperatorProcess
from controlplane.minicluster import MiniCluster
from operator_scale import percentile

NS = "scale"


def watch_first(
    lister: Callable[..., Any],
    kwargs: dict[str, Any],
    seen: dict[str, float],
    stop: threading.Event,
    when: Callable[[dict[str, Any]], bool] = lambda obj: True,
) -> None:
    """Stamp each object's name the first time `when(obj)` holds, through a resuming watch."""
    since: dict[str, str] = {}
    while not stop.is_set():
        try:
            w = kubernetes.watch.Watch()
            for event in w.stream(lister, timeout_seconds=5, deserialize=False, **since, **kwargs):
                obj = event["object"]
                since = {"resource_version": obj["metadata"]["resourceVersion"]}
                name = obj["metadata"]["name"]
                if name not in seen and when(obj):
                    seen[name] = time.perf_counter()
                if stop.is_set():
                    break
        except kubernetes.client.exceptions.ApiException:
            since = {}


def extension(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "longreach.io/v1alpha1",
        "kind": "ContextExtension",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://bench/model"},
            "data": {"uri": "s3://bench/mixture"},
            "sequenceLength": 16384,
            "rope": {"theta": 1000000},
            "training": {"tokens": "100M", "batchTokens": "1M"},
            "resources": {"nodes": 2, "gpusPerNode": 1, "cpu": "4", "memory": "32Gi"},
            "output": {"uri": f"s3://bench/ext/{name}"},
        },
    }


def evaluation(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "longreach.io/v1alpha1",
        "kind": "NeedleEval",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://bench/model"},
            "lengths": {"values": [1000]},
            "resources": {"gpus": 1, "cpu": "4", "memory": "32Gi"},
            "output": {"uri": f"s3://bench/evals/{name}"},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--extensions", type=int, default=200)
    ap.add_argument("--evals", type=int, default=200)
    args = ap.parse_args()
    urllib3.disable_warnings()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        mc = MiniCluster(Path(tmp) / "cluster", nodes=args.nodes).start()
        print(f"cluster with {args.nodes} simulated nodes up in {time.perf_counter() - t0:.0f} s")
        op = OperatorProcess(mc.cp.kubeconfig, Path(tmp)).start()
        try:
            measure(mc, op, args.extensions, args.evals)
        finally:
            op.stop()
            mc.stop()


def measure(mc: MiniCluster, op: OperatorProcess, extensions: int, evals: int) -> None:
    api = kubernetes.config.new_client_from_config(str(mc.cp.kubeconfig))
    core, batch = kubernetes.client.CoreV1Api(api), kubernetes.client.BatchV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": NS}})
    jobsets: dict[str, float] = {}
    jobs: dict[str, float] = {}
    placed: dict[str, float] = {}
    running: dict[str, float] = {}
    stop = threading.Event()
    js_list = {"group": "jobset.x-k8s.io", "version": "v1alpha2", "plural": "jobsets"}
    watches = [
        (custom.list_namespaced_custom_object, {**js_list, "namespace": NS}, jobsets, None),
        (batch.list_namespaced_job, {"namespace": NS}, jobs, None),
        (core.list_namespaced_pod, {"namespace": NS}, placed, lambda o: bool(o["spec"].get("nodeName"))),
        (core.list_namespaced_pod, {"namespace": NS}, running, lambda o: o["status"].get("phase") == "Running"),
    ]  # fmt: skip
    for lister, kwargs, seen, when in watches:
        extra = (when,) if when else ()
        threading.Thread(
            target=watch_first, args=(lister, kwargs, seen, stop, *extra), daemon=True
        ).start()
    time.sleep(1)
    proc = psutil.Process(op.proc.pid)  # type: ignore[union-attr]
    peak = proc.memory_info().rss
    created: dict[str, float] = {}
    objs = [("contextextensions", extension(f"e{i:04d}")) for i in range(extensions)]
    objs += [("needleevals", evaluation(f"n{i:04d}")) for i in range(evals)]
    start = time.perf_counter()
    for i, (plural, body) in enumerate(objs):
        custom.create_namespaced_custom_object("longreach.io", "v1alpha1", NS, plural, body)
        created[body["metadata"]["name"]] = time.perf_counter()
        if i % 50 == 0:
            peak = max(peak, proc.memory_info().rss)
    create_s = time.perf_counter() - start
    pods = 2 * extensions + evals
    deadline = time.perf_counter() + 900
    while len(running) < pods and time.perf_counter() < deadline:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.5)
    stop.set()
    js_lat = [jobsets[n] - created[n] for n in created if n in jobsets]
    job_lat = [jobs[n] - created[n] for n in created if n.startswith("n") and n in jobs]
    print(f"created {len(objs)} resources in {create_s:.1f} s ({len(objs) / create_s:.0f}/s)")
    for what, lat, want in (("JobSet", js_lat, extensions), ("Job", job_lat, evals)):
        print(
            f"create -> {what}: {len(lat)}/{want}, p50 {statistics.median(lat):.2f} s, "
            f"p99 {percentile(lat, 0.99):.2f} s"
        )
    for what, seen in (("placed", placed), ("running", running)):
        last = max(seen.values(), default=start) - start
        print(f"pods {what}: {len(seen)}/{pods}, all {what} {last:.1f} s after the first create")
    print(f"operator peak RSS {peak / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
