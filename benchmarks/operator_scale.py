"""Operator scale: create N NeedleEvals on a real kube-apiserver with the operator running.

Reports, per N: time from create (API call returned) to the child Job existing (p50, p99),
time to a full status (phase written), the operator's peak RSS, and the API calls the
operator made per resource, by verb (from the API server's own request counters, minus the
load generator's creates). Targets: p99 create->children under 1 s at 1,000 resources on two
cores; RSS under 300 MB.

    .venv/bin/python -P benchmarks/operator_scale.py --counts 100 1000 3000
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import kubernetes
import psutil
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from controlplane.cluster import ControlPlane, OperatorProcess

REPO = Path(__file__).resolve().parent.parent


def watch_times(
    api: kubernetes.client.ApiClient,
    path: str,
    ns: str,
    seen: dict[str, float],
    stop: threading.Event,
    phase: bool,
) -> None:
    """Record when each object first appears (or first has a phase) through a watch."""
    custom, batch = kubernetes.client.CustomObjectsApi(api), kubernetes.client.BatchV1Api(api)
    fn = custom.list_namespaced_custom_object if phase else batch.list_namespaced_job
    kwargs = (
        {"group": "longreach.io", "version": "v1alpha1", "plural": "needleevals"} if phase else {}
    )
    # A watch that ends resumes where it was (a new one would replay every object as ADDED,
    # which at thousands of objects can take longer than the watch lasts); raw events, not
    # the client's models, which cost milliseconds an object.
    since: dict[str, str] = {}
    while not stop.is_set():
        try:
            w = kubernetes.watch.Watch()
            for event in w.stream(
                fn, namespace=ns, timeout_seconds=5, deserialize=False, **since, **kwargs
            ):
                obj = event["object"]
                name = obj["metadata"]["name"]
                since = {"resource_version": obj["metadata"]["resourceVersion"]}
                if name not in seen and (not phase or (obj.get("status") or {}).get("phase")):
                    seen[name] = time.perf_counter()  # stamped on arrival
                if stop.is_set():
                    break
        except kubernetes.client.exceptions.ApiException:
            since = {}  # the resource version expired: start over


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def api_calls(cp: ControlPlane) -> dict[str, float]:
    """The API server's request counters by verb and resource (all clients), e.g.
    `PATCH needleevals/status`."""
    text = cp.kubectl("get", "--raw", "/metrics").stdout
    calls: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            sub = labels.get("subresource")
            key = f"{labels['verb']} {labels.get('resource', '')}" + (f"/{sub}" if sub else "")
            calls[key] = calls.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return calls


def run(
    count: int, cp: ControlPlane, api: kubernetes.client.ApiClient, ns: str, op: OperatorProcess
) -> dict[str, float]:
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    before = api_calls(cp)
    created, children, phased = {}, {}, {}
    stop = threading.Event()
    threads = [
        threading.Thread(target=watch_times, args=(api, "", ns, d, stop, p), daemon=True)
        for d, p in ((children, False), (phased, True))
    ]
    for t in threads:
        t.start()
    time.sleep(1)
    proc = psutil.Process(op.proc.pid)  # type: ignore[union-attr]
    peak = proc.memory_info().rss
    cpu_before = sum(proc.cpu_times()[:2])
    custom = kubernetes.client.CustomObjectsApi(api)
    start = time.perf_counter()
    for i in range(count):
        name = f"n{i:05d}"
        body = {
            "apiVersion": "longreach.io/v1alpha1",
            "kind": "NeedleEval",
            "metadata": {"name": name},
            "spec": {
                "model": {"uri": "s3://bench/model"},
                "output": {"uri": f"s3://bench/evals/{ns}/{name}"},
            },
        }
        custom.create_namespaced_custom_object("longreach.io", "v1alpha1", ns, "needleevals", body)
        created[name] = time.perf_counter()
        if i % 50 == 0:
            peak = max(peak, proc.memory_info().rss)
    deadline = time.perf_counter() + 600
    while (len(children) < count or len(phased) < count) and time.perf_counter() < deadline:
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.2)
    stop.set()
    time.sleep(2)  # events still being posted
    cpu = sum(proc.cpu_times()[:2]) - cpu_before
    after = api_calls(cp)
    handler = reconcile_seconds(op.metrics_port)
    # The load generator's own creates and the two benchmark watches' LISTs are not the
    # operator's; its watches are long-lived and not counted per resource either.
    calls = {
        key: (after[key] - before.get(key, 0)) / count
        for key in sorted(after)
        if key.split()[0] in ("POST", "PATCH", "GET", "PUT", "DELETE")
    }
    calls["POST needleevals"] -= 1
    to_child = [children[n] - created[n] for n in created if n in children]
    to_status = [phased[n] - created[n] for n in created if n in phased]
    return {
        "n": count,
        "create_s": max(created.values()) - start,
        "child_p50": statistics.median(to_child),
        "child_p99": percentile(to_child, 0.99),
        "status_p50": statistics.median(to_status),
        "status_p99": percentile(to_status, 0.99),
        "missing": count - min(len(to_child), len(to_status)),
        "rss_mb": peak / 2**20,
        "handler_ms": handler * 1000,
        "calls": calls,
        "cpu_ms": 1000 * cpu / count,
    }


def reconcile_seconds(port: int) -> float:
    """Mean time inside the reconcile handler so far, from the operator's own metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        for key in ("longreach_handler_seconds_sum", "longreach_handler_seconds_count"):
            if line.startswith(key + '{kind="NeedleEval"}'):
                values[key] = float(line.split()[-1])
    return values["longreach_handler_seconds_sum"] / max(
        values["longreach_handler_seconds_count"], 1
    )


def s3_store(tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """A moto S3 server in its own process (as S3 is elsewhere: not this process's GIL, which
    the watches that stamp the times hold), with the bucket `bench` and a model folder's
    config.json in it."""
    import boto3

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "moto.log", "wb")  # noqa: SIM115 (the server's lifetime)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    for _ in range(100):
        try:
            client.create_bucket(Bucket="bench")
            break
        except Exception:
            time.sleep(0.1)
    client.put_object(Bucket="bench", Key="model/config.json", Body=b'{"model_type": "llama"}')
    return endpoint, server


def main() -> None:
    urllib3.disable_warnings()  # the test API server has a self-signed certificate
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--no-s3",
        action="store_true",
        help="no S3 server and no credentials: the operator probes nothing (the baseline)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cp = ControlPlane(Path(tmp) / "cp").start()
        server = None
        try:
            env = {"LONGREACH_RESYNC_SECONDS": "30"}
            if not args.no_s3:
                # As in a cluster: the operator reads the models and outputs on S3 with its
                # own credentials (its admission checks and progress reads are in the cost).
                env["LONGREACH_S3_ENDPOINT"], server = s3_store(Path(tmp))
                env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
            cp.kubectl("apply", "--server-side", "-k", str(REPO / "manifests" / "crds"))
            cp.wait_established()
            op = OperatorProcess(cp.kubeconfig, Path(tmp), env=env).start()
            api = kubernetes.config.new_client_from_config(str(cp.kubeconfig))
            rows = [run(n, cp, api, f"scale-{n}", op) for n in args.counts]
            op.stop()
        finally:
            cp.cleanup()
            if server is not None:
                server.terminate()
                server.wait()
    print(f"S3: {'none (no probes)' if args.no_s3 else 'moto server, own process'}")
    print(
        "| resources | create all (s) | create->child p50 (s) | p99 (s) | create->status p50 (s) | p99 (s) | missing | mean reconcile (ms) | operator peak RSS (MB) | operator CPU per resource (ms) | operator API calls per resource |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        calls = ", ".join(f"{v} {n:.1f}" for v, n in r["calls"].items() if n >= 0.05)
        print(
            f"| {r['n']} | {r['create_s']:.1f} | {r['child_p50']:.3f} | {r['child_p99']:.3f} | {r['status_p50']:.3f} | {r['status_p99']:.3f} | {r['missing']} | {r['handler_ms']:.0f} | {r['rss_mb']:.0f} | {r['cpu_ms']:.0f} | {calls} |"
        )


if __name__ == "__main__":
    main()
