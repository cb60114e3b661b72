"""A GPU cluster in miniature: the real control plane and controllers, simulated nodes.

On top of `ControlPlane` (etcd + kube-apiserver) it starts, as processes built by build.sh
from their Go modules:

- kube-controller-manager (the Job, garbage-collector, pod-GC, namespace and node-lifecycle
  controllers, and the rest of the default set) and kube-scheduler, from the API server's
  k8s.io/kubernetes release;
- kwok, which plays the kubelet of N simulated nodes that advertise `nvidia.com/gpu`: it runs
  the pods the scheduler binds to them, and ends them as kwok-stages.yaml says (a pod's
  `kwok.longreach.io/exit-code` annotation; a test sets it through spec.podAnnotations or on a
  running pod);
- the JobSet controller and Kueue, both WITH their admission webhooks: each serves its webhooks
  on a loopback port with a certificate made here, and the webhook configurations of each
  project's own kustomization are registered with `url` client configs in place of their
  in-cluster Services. Kueue manages `batch/job` and `jobset.x-k8s.io/jobset`; a ResourceFlavor
  and a ClusterQueue with a GPU quota are created, and a LocalQueue per test namespace by
  `local_queue`.

Nothing runs a container: the pods' processes are kwok's statuses, so the jobs' outputs are
written by the tests where the jobs would write them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.cluster import BIN, CACHE, THIRD_PARTY_CRDS, ControlPlane, free_port

REPO = Path(__file__).resolve().parents[2]
CLUSTER_FILES = CACHE / "cluster"
STAGES = Path(__file__).with_name("kwok-stages.yaml")
EXIT_CODE = "kwok.longreach.io/exit-code"
KUEUE_METRICS_CERTS = Path("/etc/kueue/metrics/certs")
QUEUE = "gpu"
"""The ClusterQueue's name, and every LocalQueue's."""
KUEUE_FRAMEWORKS = ["batch/job", "jobset.x-k8s.io/jobset"]
# Kueue's webhooks for the API groups of this cluster (its other integrations are off).
KUEUE_WEBHOOK_GROUPS = {"kueue.x-k8s.io", "batch", "jobset.x-k8s.io"}


@dataclass
class MiniCluster:
    """The miniature cluster in `workdir`; `cp` is its control plane (kubectl, kubeconfig)."""

    workdir: Path
    nodes: int = 2
    gpus_per_node: int = 8
    gpu_quota: int = 16
    cp: ControlPlane = field(init=False)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> MiniCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> MiniCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp = ControlPlane(self.workdir / "control-plane")
        self.cp.start()
        kc = str(self.cp.kubeconfig)
        self.cp.kubectl("apply", "--server-side", "-f", str(THIRD_PARTY_CRDS))
        self.cp.kubectl("apply", "--server-side", "-k", str(REPO / "manifests" / "crds"))
        self.cp.kubectl("apply", "--server-side", "-f", str(CLUSTER_FILES / "kueue-crds"))
        self.cp.wait_established()
        ca = self._certificates()
        common = [f"--kubeconfig={kc}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        auth = [f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}"]
        self._run(
            "kube-controller-manager",
            *common,
            *auth,
            f"--secure-port={free_port()}",
            "--use-service-account-credentials=false",
            "--concurrent-job-syncs=20",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        )
        self._run(
            "kube-scheduler",
            *common,
            *auth,
            f"--secure-port={free_port()}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        )
        self._run(
            "kwok",
            f"--kubeconfig={kc}",
            "--manage-all-nodes=true",
            f"--config={STAGES},{CLUSTER_FILES / 'kwok-node-stages.yaml'}",
            f"--server-address=127.0.0.1:{free_port()}",
            "--cidr=10.244.0.1/16",
        )
        jobset_port, kueue_port = free_port(), free_port()
        self._run(
            "jobset-controller",
            f"--config={self._jobset_config(jobset_port)}",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
            "--metrics-bind-address=0",
            env={"KUBECONFIG": kc},
        )
        self.cp.kubectl("create", "namespace", "kueue-system")
        self._kueue_metrics_certificate()
        self._run(
            "kueue",
            f"--config={self._kueue_config(kueue_port)}",
            "--feature-gates=VisibilityOnDemand=false",
            env={"KUBECONFIG": kc},
        )
        for name, port in (("jobset-controller", jobset_port), ("kueue", kueue_port)):
            self._wait_serving(name, port)
        self._register_webhooks("jobset", CLUSTER_FILES / "jobset-webhooks.yaml", jobset_port, ca)
        self._register_webhooks("kueue", CLUSTER_FILES / "kueue-webhooks.yaml", kueue_port, ca)
        self.add_nodes([f"gpu-node-{i}" for i in range(self.nodes)])
        self._queues()
        return self

    # -- processes -------------------------------------------------------------------------

    def _run(self, binary: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{binary}.log", "wb")  # noqa: SIM115 - lives with the process
        self.procs[binary] = subprocess.Popen(
            [str(BIN / binary), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = self.log(name)[-3000:]
                raise RuntimeError(f"{name} exited ({p.returncode}); its log ends:\n{tail}")

    def log(self, binary: str) -> str:
        return (self.workdir / f"{binary}.log").read_text(errors="replace")

    def _wait_serving(self, name: str, port: int, timeout: float = 120.0) -> None:
        """Until the controller's webhook server answers TLS on `port`."""
        context = ssl.create_default_context(cafile=str(self.workdir / "certs" / "ca.crt"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                    context.wrap_socket(raw, server_hostname="127.0.0.1"),
                ):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(
            f"{name}'s webhooks did not serve in {timeout:.0f} s: {self.log(name)[-2000:]}"
        )

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        if hasattr(self, "cp"):  # started
            self.cp.cleanup()

    # -- webhooks --------------------------------------------------------------------------

    def _certificates(self) -> str:
        """A CA and a serving certificate for 127.0.0.1 (both controllers' webhook servers
        read tls.crt and tls.key from their certDir); returns the CA bundle, base64."""
        d = self.workdir / "certs"
        d.mkdir()

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                "/CN=longreach-test-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                "-keyout", "tls.key", "-out", "tls.csr")  # fmt: skip
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "tls.crt")  # fmt: skip
        return base64.b64encode((d / "ca.crt").read_bytes()).decode()

    def _kueue_metrics_certificate(self) -> None:
        """Kueue with its certificates provided (internalCertManagement off) loads its metrics
        server's certificate from /etc/kueue/metrics/certs, a volume its Deployment mounts
        (even with metrics off; the path is fixed in its main.go): put one there."""
        target = KUEUE_METRICS_CERTS
        if (target / "tls.crt").exists() and (target / "tls.key").exists():
            return
        try:
            target.mkdir(parents=True, exist_ok=True)
            for name in ("tls.crt", "tls.key"):
                shutil.copyfile(self.workdir / "certs" / name, target / name)
        except OSError as e:
            raise RuntimeError(
                f"Kueue reads its metrics certificate from {target} and that is not writable "
                f"here ({e}): create tls.crt and tls.key there (any certificate), or run as root"
            ) from e

    def _register_webhooks(self, project: str, rendered: Path, port: int, ca: str) -> None:
        """The project's webhook configurations, each webhook pointed at 127.0.0.1:`port`
        (its Service's path kept); Kueue's only for the API groups this cluster serves."""
        docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
        for doc in docs:
            if not doc["kind"].endswith("WebhookConfiguration"):
                continue  # the Service, which a URL client config replaces
            doc["metadata"] = {"name": f"{project}-{doc['metadata']['name']}"}
            hooks = []
            for hook in doc["webhooks"]:
                groups = {g for rule in hook.get("rules", []) for g in rule["apiGroups"]}
                if project == "kueue" and not groups <= KUEUE_WEBHOOK_GROUPS:
                    continue
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
                hooks.append(hook)
            doc["webhooks"] = hooks
            self.cp.kubectl("apply", "-f", "-", input=json.dumps(doc))

    # -- configuration files ---------------------------------------------------------------

    def _webhook(self, port: int) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": port, "certDir": str(self.workdir / "certs")}

    def _jobset_config(self, port: int) -> Path:
        cfg = {
            "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
            "kind": "Configuration",
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "webhook": self._webhook(port),
            "clientConnection": {"qps": 200, "burst": 400},
        }
        out = self.workdir / "jobset-config.yaml"
        out.write_text(yaml.safe_dump(cfg))
        return out

    def _kueue_config(self, port: int) -> Path:
        cfg = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": "kueue-system",
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "webhook": self._webhook(port),
            "health": {"healthProbeBindAddress": f"127.0.0.1:{free_port()}"},
            "metrics": {"bindAddress": "0"},
            "clientConnection": {"qps": 200, "burst": 400},
            "integrations": {"frameworks": KUEUE_FRAMEWORKS},
        }
        out = self.workdir / "kueue-config.yaml"
        out.write_text(yaml.safe_dump(cfg))
        return out

    # -- nodes and queues ------------------------------------------------------------------

    def add_nodes(self, names: list[str]) -> None:
        """Simulated GPU nodes (kwok runs them), Ready before this returns."""
        capacity = {
            "cpu": "128",
            "memory": "2Ti",
            "pods": "110",
            "nvidia.com/gpu": str(self.gpus_per_node),
        }
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": n,
                    "labels": {"kubernetes.io/hostname": n, "type": "kwok"},
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                },
                "status": {"capacity": capacity, "allocatable": capacity},
            }
            for n in names
        ]
        self.cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        self.wait("nodes Ready", lambda: self.ready_nodes() >= len(names), 120)

    def ready_nodes(self) -> int:
        nodes = json.loads(self.cp.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        return sum(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
            for n in nodes
        )

    def _queues(self) -> None:
        api = "kueue.x-k8s.io/v1beta2"
        flavor = {"apiVersion": api, "kind": "ResourceFlavor", "metadata": {"name": "default"}}
        quota = [
            {"name": "cpu", "nominalQuota": "100000"},
            {"name": "memory", "nominalQuota": "1000Ti"},
            {"name": "nvidia.com/gpu", "nominalQuota": str(self.gpu_quota)},
        ]
        queue = {
            "apiVersion": api,
            "kind": "ClusterQueue",
            "metadata": {"name": QUEUE},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": [q["name"] for q in quota],
                        "flavors": [{"name": "default", "resources": quota}],
                    }
                ],
            },
        }
        for obj in (flavor, queue):
            self.cp.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def local_queue(self, namespace: str) -> str:
        """A LocalQueue in `namespace` feeding the GPU ClusterQueue; returns its name."""
        lq = {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": QUEUE, "namespace": namespace},
            "spec": {"clusterQueue": QUEUE},
        }
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(lq))
        return QUEUE

    # -- reading ---------------------------------------------------------------------------

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", "pods", "-n", namespace, "-o", "json"] + (
            ["-l", selector] if selector else []
        )
        return list(json.loads(self.cp.kubectl(*args).stdout)["items"])

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll `check` until truthy; on timeout, fail naming what was awaited."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = check()
            except Exception as e:  # not there yet
                last = e
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
