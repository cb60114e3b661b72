"""The Helm chart: lint, render, the values schema, and the rendered objects on a real
API server (server-side dry run; the RBAC for real, checked with `kubectl auth can-i`)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml

from chart.charttools import CHART, Render, find, run_helm

pytestmark = pytest.mark.integration

ENV = {
    "LONGREACH_EXECUTOR", "LONGREACH_NAMESPACES", "LONGREACH_DATA_IMAGE",
    "LONGREACH_TRAINER_IMAGE", "LONGREACH_EVAL_IMAGE", "LONGREACH_S3_ENDPOINT",
    "LONGREACH_S3_SECRET", "LONGREACH_S3_REGION", "LONGREACH_RESYNC_SECONDS",
    "LONGREACH_METRICS_PORT", "LONGREACH_HEALTH_PORT",
}  # fmt: skip

# What the operator does, resource by resource (the brief of issue 6): all must be allowed.
ALLOWED: list[tuple[str, list[str], str]] = [
    *[(f"{kind}.longreach.io", ["get", "list", "watch", "patch", "delete"], "")
      for kind in ("datamixtures", "contextextensions", "needleevals")],
    *[(f"{kind}.longreach.io", ["get", "patch"], "status")
      for kind in ("datamixtures", "contextextensions", "needleevals")],
    *[(res, ["get", "list", "watch", "create", "patch", "delete"], "")
      for res in ("configmaps", "services", "jobs.batch", "rayjobs.ray.io", "jobsets.jobset.x-k8s.io")],
    ("events", ["create", "patch"], ""),
    ("events.events.k8s.io", ["create", "patch"], ""),
]  # fmt: skip
# Things it must never be able to do.
DENIED: list[tuple[str, list[str], str]] = [
    ("secrets", ["get", "list", "watch", "create"], ""),
    ("pods", ["get", "list", "create", "delete"], ""),  # the operator never reads pods
    ("pods", ["create"], "exec"),
    ("deployments.apps", ["create", "patch"], ""),
    ("datamixtures.longreach.io", ["create"], ""),  # delete is for ttlSecondsAfterFinished
    ("serviceaccounts", ["create"], ""),
    ("roles.rbac.authorization.k8s.io", ["create"], ""),
    ("rolebindings.rbac.authorization.k8s.io", ["create"], ""),
]  # fmt: skip
CRD_READ = ("customresourcedefinitions.apiextensions.k8s.io", ["get", "list", "watch"], "")
CRD_WRITE = ("customresourcedefinitions.apiextensions.k8s.io", ["create", "patch", "delete"], "")
NAMESPACES = ("namespaces", ["get", "list", "watch"], "")


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(objects, "Deployment")
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}


# --- lint and render (no API server) --------------------------------------------------------


def test_lint_strict(helm: str) -> None:
    for args in (
        [],
        ["--set-json", 'watchNamespaces=["team-a","team-b"]'],
        ["--set", "metrics.serviceMonitor.enabled=true"],
    ):
        r = run_helm(helm, "lint", "--strict", str(CHART), *args)
        assert r.returncode == 0, r.stdout + r.stderr


def test_defaults_render_a_hardened_operator(render: Render) -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["CustomResourceDefinition"] * 3
        + ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]
    )
    (deployment,) = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # standalone kopf: never two pods
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = container(objects)
    assert c["args"] == ["operator"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    env = env_of(objects)
    assert set(env) == ENV  # no S3 Secret by default: no AWS_* variables
    assert env["LONGREACH_NAMESPACES"] == "" and env["LONGREACH_EXECUTOR"] == "kubernetes"
    assert (env["LONGREACH_METRICS_PORT"], env["LONGREACH_HEALTH_PORT"]) == ("8080", "8081")
    (service,) = find(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_crds_are_the_generated_files_kept_on_uninstall(render: Render) -> None:
    rendered = {o["metadata"]["name"]: o for o in find(render(), "CustomResourceDefinition")}
    files = sorted((CHART / "files" / "crds").glob("*.yaml"))
    assert len(files) == 3 and len(rendered) == 3
    for path in files:
        generated = yaml.safe_load(path.read_text())
        crd = rendered[generated["metadata"]["name"]]
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert crd == generated, f"{path.name}: the chart changed the CRD"


def test_crds_can_be_left_out(render: Render) -> None:
    assert not find(
        render("longreach", "longreach-system", "--set", "crds.install=false"),
        "CustomResourceDefinition",
    )


def test_watch_namespaces_renders_roles_per_namespace(render: Render) -> None:
    objects = render("lr", "ops", "--set-json", 'watchNamespaces=["team-a","team-b"]')
    roles = find(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in find(objects, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    for binding in find(objects, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "lr-longreach", "namespace": "ops"}
        ]
    # Cluster-wide: only reading CRDs, nothing namespaced and no namespace scanning.
    (cluster_role,) = find(objects, "ClusterRole")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    # The Roles carry exactly the namespaced rules of the cluster-wide ClusterRole.
    (full,) = find(render("lr", "ops"), "ClusterRole")
    cluster_only = {"namespaces", "customresourcedefinitions"}
    assert roles[0]["rules"] == [r for r in full["rules"] if not cluster_only & set(r["resources"])]
    assert env_of(objects)["LONGREACH_NAMESPACES"] == "team-a,team-b"


def test_s3_secret_reaches_the_operator_as_env_only(render: Render) -> None:
    objects = render("longreach", "longreach-system", "--set", "s3.secretName=s3-credentials",
                     "--set", "s3.endpoint=http://minio.storage:9000")  # fmt: skip
    env = env_of(objects)
    assert env["LONGREACH_S3_SECRET"] == "s3-credentials"
    assert env["LONGREACH_S3_ENDPOINT"] == "http://minio.storage:9000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"secretKeyRef": {"name": "s3-credentials", "key": key}}
    # The kubelet injects them; the operator itself may not read Secrets.
    assert all(
        "secrets" not in r["resources"] for o in find(objects, "ClusterRole") for r in o["rules"]
    )


def test_service_monitor_is_optional(render: Render) -> None:
    assert not find(render(), "ServiceMonitor")
    objects = render("longreach", "longreach-system", "--set", "metrics.serviceMonitor.enabled=true",
                     "--set", "metrics.serviceMonitor.labels.release=prom")  # fmt: skip
    (monitor,) = find(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (service,) = find(objects, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "metrics.port=abc"], "metrics/port"),
        (["--set", "crds.install=maybe"], "crds/install"),
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set", "operator.logLevel=debug"], "logLevel"),
        (["--set", "metrics.serviceMonitor.scrapeTimeout=10s"], "scrapeTimeout"),
        (["--set", "operator.executor=docker"], "executor"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set-json", 'watchNamespaces=["Not_A_Namespace"]'], "watchNamespaces"),
        (["--set", "resources.requests.gpu=1"], "gpu"),
    ],
)
def test_schema_rejects(helm: str, args: list[str], message: str) -> None:
    r = run_helm(helm, "template", "x", str(CHART), *args)
    assert r.returncode != 0, f"{args} rendered"
    assert message in r.stderr, r.stderr


def test_schema_is_strict_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], where: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, child in node["properties"].items():
                walk(child, f"{where}.{key}")

    # Except `global`: a parent chart passes its own globals to this one as a subchart.
    assert schema["properties"]["global"]["additionalProperties"] is True
    walk({**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "global"}},
         "values")  # fmt: skip
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]), (
        "values.yaml and the schema list different keys"
    )


# --- on the API server -----------------------------------------------------------------------


def _apply(control_plane: Any, objects: list[dict[str, Any]], *flags: str) -> None:
    r = control_plane.kubectl(
        "apply", *flags, "-f", "-", input=yaml.safe_dump_all(objects), check=False
    )
    assert r.returncode == 0, r.stderr


def _namespace(control_plane: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    return name


# Every key of values.yaml set to something other than its default: the schema must
# accept what a real user writes, and the result must still be valid Kubernetes.
FULL_VALUES = {
    "global": {"registry": "registry.example/ml", "tag": "0.1.0-abc1234"},
    "crds": {"install": False},
    "image": {"repository": "registry.example/longreach/operator", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "imagePullSecrets": ["registry-credentials"],
    "nameOverride": "lr",
    "fullnameOverride": "",
    "operator": {"executor": "local", "resyncSeconds": 2.5},
    "jobImages": {"data": "registry.example/data:1", "trainer": "registry.example/trainer:1", "eval": "registry.example/eval@sha256:" + "0" * 64},
    "s3": {"endpoint": "http://minio.storage:9000", "region": "us-east-1", "secretName": "s3-credentials"},
    "serviceAccount": {"create": True, "name": "longreach-operator", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
    "rbac": {"create": True},
    "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"example.com/team": "ml"},
    "podLabels": {"team": "ml"},
    "health": {"port": 9081},
    "metrics": {"port": 9080, "service": {"type": "ClusterIP", "annotations": {"prometheus.io/scrape": "true"}},
                "serviceMonitor": {"enabled": False, "interval": "1m", "labels": {"release": "prom"}}},
}  # fmt: skip


def test_full_values_cover_every_key() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: Any, prefix: str = "") -> set[str]:
        if not isinstance(node, dict) or not node:
            return {prefix}
        return set().union(*(keys(v, f"{prefix}.{k}") for k, v in node.items()))

    full = keys(FULL_VALUES) | {".watchNamespaces"}  # set by the namespaced cases
    missing = {k for k in keys(values) if not any(f == k or f.startswith(k + ".") for f in full)}
    assert not missing, f"FULL_VALUES does not set {sorted(missing)}"


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced", "full-values"])
def test_rendered_objects_pass_server_side_dry_run(
    control_plane: Any, render: Render, mode: str, tmp_path: Any
) -> None:
    ns = _namespace(control_plane, "lr-dry")
    args = ["--set", "s3.secretName=s3-credentials"]
    if mode == "namespaced":
        team = _namespace(control_plane, "lr-team")
        args += ["--set-json", f"watchNamespaces={json.dumps([team])}"]
    if mode == "full-values":
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(FULL_VALUES))
        args = ["--values", str(tmp_path / "values.yaml")]
    objects = render(f"rel-{ns}", ns, *args)
    if mode == "full-values":
        env = env_of(objects)
        assert env["LONGREACH_EXECUTOR"] == "local" and env["LONGREACH_METRICS_PORT"] == "9080"
        assert container(objects)["image"] == "registry.example/longreach/operator:0.1.0-rc1"
    _apply(control_plane, objects, "--dry-run=server")


def _can_i(
    control_plane: Any, sa: str, verb: str, resource: str, subresource: str, namespace: str | None
) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={sa}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += [f"--namespace={namespace}"] if namespace else []
    r = control_plane.kubectl(*args, check=False)
    answer = r.stdout.strip()
    assert answer in ("yes", "no"), r.stderr
    return answer == "yes"


def _check(
    control_plane: Any,
    sa: str,
    rules: list[tuple[str, list[str], str]],
    namespace: str | None,
    expect: bool,
) -> list[str]:
    """The (verb, resource) pairs whose answer is not `expect`; kubectl calls run in parallel."""
    asks = [(verb, resource, sub) for resource, verbs, sub in rules for verb in verbs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda a: _can_i(control_plane, sa, *a, namespace), asks))
    return [
        f"{verb} {resource}{'/' + sub if sub else ''} in {namespace or 'cluster'}: expected {'yes' if expect else 'no'}"
        for (verb, resource, sub), answer in zip(asks, answers, strict=True)
        if answer != expect
    ]


def _rbac_only(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    return [o for o in objects if o["kind"] in kinds]


def test_rbac_cluster_wide_is_exactly_what_the_operator_uses(
    control_plane: Any, render: Render
) -> None:
    ns = _namespace(control_plane, "lr-rbac")
    release = f"rel-{ns}"
    _apply(control_plane, _rbac_only(render(release, ns)))
    sa = f"system:serviceaccount:{ns}:{release}-longreach"
    wrong = _check(control_plane, sa, ALLOWED, "anywhere", True)
    wrong += _check(control_plane, sa, [NAMESPACES, CRD_READ], None, True)
    wrong += _check(control_plane, sa, DENIED, "anywhere", False)
    wrong += _check(control_plane, sa, DENIED, ns, False)
    wrong += _check(
        control_plane,
        sa,
        [CRD_WRITE, ("namespaces", ["create", "delete"], ""), ("nodes", ["list"], "")],
        None,
        False,
    )
    assert not wrong, "\n".join(wrong)


def test_rbac_namespaced_stays_in_its_namespaces(control_plane: Any, render: Render) -> None:
    ns = _namespace(control_plane, "lr-rbac-ns")
    team = _namespace(control_plane, "lr-team")
    release = f"rel-{ns}"
    _apply(
        control_plane, _rbac_only(render(release, ns, "--set-json", f'watchNamespaces=["{team}"]'))
    )
    sa = f"system:serviceaccount:{ns}:{release}-longreach"
    wrong = _check(control_plane, sa, ALLOWED, team, True)
    wrong += _check(control_plane, sa, [CRD_READ], None, True)
    wrong += _check(control_plane, sa, DENIED, team, False)
    # Nothing outside the watched namespace, not even in its own, and no namespace scanning.
    one_verb_each = [(resource, verbs[:1], sub) for resource, verbs, sub in ALLOWED]
    wrong += _check(control_plane, sa, one_verb_each, "elsewhere", False)
    wrong += _check(control_plane, sa, one_verb_each, ns, False)
    wrong += _check(control_plane, sa, [NAMESPACES, CRD_WRITE], None, False)
    assert not wrong, "\n".join(wrong)


def test_helm_install_upgrade_uninstall_keeps_the_crds(control_plane: Any, helm: str) -> None:
    """A real release on the test API server (no controllers run there, so nothing starts):
    install adopts the CRDs already installed, upgrade changes the Deployment, uninstall
    removes everything but the CRDs."""
    ns = _namespace(control_plane, "lr-helm")
    release = f"rel-{ns}"
    kube = ["--kubeconfig", str(control_plane.kubeconfig), "--namespace", ns]
    crds = [
        f"{plural}.longreach.io" for plural in ("datamixtures", "contextextensions", "needleevals")
    ]
    # The session's fixture created the CRDs; let this release adopt them, as Helm documents.
    control_plane.kubectl("label", "crd", *crds, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    control_plane.kubectl("annotate", "crd", *crds, f"meta.helm.sh/release-name={release}",
                          f"meta.helm.sh/release-namespace={ns}", "--overwrite")  # fmt: skip

    r = run_helm(helm, "install", release, str(CHART), *kube)
    assert r.returncode == 0, r.stderr
    assert "kubectl get longreach" in r.stdout  # NOTES.txt rendered
    deployment = f"deployment/{release}-longreach"
    control_plane.kubectl(
        "get",
        "-n",
        ns,
        deployment,
        f"serviceaccount/{release}-longreach",
        f"service/{release}-longreach-metrics",
    )

    r = run_helm(helm, "upgrade", release, str(CHART), *kube, "--set", "operator.resyncSeconds=30")
    assert r.returncode == 0, r.stderr
    env = control_plane.kubectl(
        "get", "-n", ns, deployment, "-o", "jsonpath={.spec.template.spec.containers[0].env}"
    ).stdout
    assert {"name": "LONGREACH_RESYNC_SECONDS", "value": "30"} in json.loads(env)

    r = run_helm(helm, "uninstall", release, *kube)
    assert r.returncode == 0, r.stderr
    assert control_plane.kubectl("get", "-n", ns, deployment, check=False).returncode != 0
    assert (
        control_plane.kubectl("get", "clusterrole", f"{release}-longreach", check=False).returncode
        != 0
    )
    control_plane.kubectl("get", "crd", *crds)  # kept: deleting them would delete every resource

    # NOTES.txt in the other mode, without S3 defaults and without CRDs.
    r = run_helm(helm, "install", release, str(CHART), *kube, "--dry-run=server", "--set", "crds.install=false",
                 "--set-json", f'watchNamespaces=["{ns}"]')  # fmt: skip
    assert r.returncode == 0, r.stderr
    notes = r.stdout.split("NOTES:")[-1]
    assert (
        f"It watches the namespaces: {ns}." in notes
        and "s3.secretName" in notes
        and "crds.install is false" in notes
    )
