"""Starts etcd and kube-apiserver on loopback ports, like envtest does for Go operators.

The binaries come from build.sh (kube-apiserver and kubectl built from the k8s.io/kubernetes
Go module, helm from its module, etcd from Debian), cached under ~/.cache/longreach/bin.
Authentication is a static token file: an admin in system:masters, and tokens for service
accounts we want to test RBAC for are not needed (kubectl --as impersonates).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("LONGREACH_CACHE", Path.home() / ".cache" / "longreach"))
BIN = CACHE / "bin"
THIRD_PARTY_CRDS = CACHE / "crds"
BUILD_SCRIPT = Path(__file__).with_name("build.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_binaries() -> None:
    """Build the binaries when missing (first run only; minutes)."""
    commands = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd"]
    commands += ["helm", "actionlint", "kwok", "jobset-controller", "kueue"]
    needed = [BIN / c for c in commands] + [
        THIRD_PARTY_CRDS / "ray.io_rayjobs.yaml",
        THIRD_PARTY_CRDS / "jobset.x-k8s.io_jobsets.yaml",
        CACHE / "cluster" / "done",
    ]
    if not all(p.exists() for p in needed):
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in `workdir`; `kubeconfig` is an admin config for them."""

    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kubeconfig: Path = Path()
    url: str = ""

    def start(self, timeout: float = 90.0) -> ControlPlane:
        ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_log = open(self.workdir / "etcd.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs.append(
            subprocess.Popen(
                [
                    str(BIN / "etcd"),
                    "--data-dir",
                    str(self.workdir / "etcd"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-cluster",
                    f"default=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",
                ],
                stdout=etcd_log,
                stderr=subprocess.STDOUT,
            )
        )
        token = secrets.token_hex(16)
        (self.workdir / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        key = self.workdir / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
        )
        api_log = open(self.workdir / "apiserver.log", "wb")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(
                [
                    str(BIN / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    f"--secure-port={api_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--cert-dir={self.workdir / 'certs'}",
                    f"--token-auth-file={self.workdir / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={key}",
                    f"--service-account-signing-key-file={key}",
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--disable-admission-plugins=ServiceAccount",
                    "--allow-privileged=true",
                    "--enable-priority-and-fairness=false",
                ],
                stdout=api_log,
                stderr=subprocess.STDOUT,
            )
        )
        self.url = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: test, cluster: {{server: '{self.url}', insecure-skip-tls-verify: true}}}}]\n"
            f"users: [{{name: admin, user: {{token: {token}}}}}]\n"
            "contexts: [{name: test, context: {cluster: test, user: admin, namespace: default}}]\n"
            "current-context: test\n"
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"control plane exited early; see logs in {self.workdir}")
            ready = self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0
            # The default namespace appears shortly after readiness.
            if ready and self.kubectl("get", "namespace", "default", check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"kube-apiserver not ready after {timeout}s; see {self.workdir}/apiserver.log"
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane; raises with its stderr when `check`."""
        r = subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and r.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}"
            )
        return r

    def wait_established(self, timeout: float = 60.0) -> None:
        """Until every CRD is Established (kubectl wait errors while conditions are still empty)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.kubectl(
                "wait", "--for=condition=Established", "crd", "--all", "--timeout=10s", check=False
            )
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise KubectlError(f"CRDs not established: {r.stderr.strip()}")
            time.sleep(0.5)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class OperatorProcess:
    """`longreach operator` as a subprocess; restartable, like a pod."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        executor: str = "kubernetes",
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig, self.workdir, self.executor, self.extra_env = (
            kubeconfig,
            workdir,
            executor,
            env or {},
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self.health_port = free_port()

    def start(self) -> OperatorProcess:
        # S3 credentials only where asked for (`env`): a test session's S3 server sets them in
        # this process, and an operator that has them probes every s3:// input it is given.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env = {
            **inherited,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONSAFEPATH": "1",
            "LONGREACH_EXECUTOR": self.executor,
            "LONGREACH_RESYNC_SECONDS": "1",
            "LONGREACH_METRICS_PORT": str(self.metrics_port),
            "LONGREACH_HEALTH_PORT": str(self.health_port),
            "LONGREACH_LOCAL_WORKDIR": str(self.workdir / "runs"),
            **self.extra_env,
        }
        log = open(self.workdir / "operator.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "longreach.operator.cli", "operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until kopf's liveness endpoint answers (imports done, watches started): on a busy
        machine a start takes seconds that a test's own waits should not pay for."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited at start:\n{self.log()[-3000:]}")
            try:
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the operator was not ready in {timeout:.0f} s:\n{self.log()[-3000:]}")

    def stop(self, crash: bool = False) -> None:
        """Stop like a pod would: SIGTERM with a grace period, or a crash (SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if crash else self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.workdir / "operator.log").read_text(errors="replace")
