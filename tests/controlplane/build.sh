#!/usr/bin/env bash
# Builds the real Kubernetes binaries the integration tests run against, once, into a cache
# outside git: kube-apiserver and kubectl from the k8s.io/kubernetes Go module, helm from its
# module, etcd from Debian. Also fetches the real RayJob and JobSet CRDs from their Go modules,
# and builds actionlint (the release workflow's linter) from its module.
# Idempotent: every step is skipped when its output exists.
set -euo pipefail
K8S_VERSION=v1.34.4
HELM_VERSION=v3.19.5
KUBERAY_VERSION=v1.5.0
JOBSET_VERSION=v0.10.1
ACTIONLINT_VERSION=v1.7.12
CACHE="${LONGREACH_CACHE:-$HOME/.cache/longreach}"
BIN="$CACHE/bin"
CRDS="$CACHE/crds"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$BIN" "$CRDS"
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kubectl" ]]; then
  # k8s.io/kubernetes publishes k8s.io/<staging> v0.0.0 requirements: point each at v0.Y.Z.
  work="$CACHE/tools-src"
  rm -rf "$work" && mkdir -p "$work" && cp "$HERE/tools/tools.go" "$work/"
  staging_minor="v0.${K8S_VERSION#v1.}"
  # The module's go.mod, fetched by the go command into its module cache.
  kube_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module longreach.io/controlplane-tools"
    echo "go 1.24.0"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -E '^\s+k8s.io/[a-z0-9-]+ v0\.0\.0$' "$kube_mod" | awk -v v="$staging_minor" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  (cd "$work" && go mod tidy >/dev/null 2>&1 || go mod download)
  (cd "$work" && go build -trimpath -ldflags=-s -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  (cd "$work" && go build -trimpath -ldflags=-s -o "$BIN/kubectl" k8s.io/kubernetes/cmd/kubectl)
fi

if [[ ! -x "$BIN/helm" ]]; then
  GOBIN="$BIN" go install -trimpath -ldflags=-s "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

if [[ ! -x "$BIN/actionlint" ]]; then
  GOBIN="$BIN" go install -trimpath -ldflags=-s "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

if [[ ! -x "$BIN/etcd" ]]; then
  if ! command -v etcd >/dev/null; then
    # another apt (a second checkout building at once) holds the lock for a while: wait for it
    apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
    (apt_get install -y -qq etcd-server >/dev/null 2>&1) || (apt_get update -qq && apt_get install -y -qq etcd-server >/dev/null)
  fi
  ln -sf "$(command -v etcd)" "$BIN/etcd"
fi

if [[ ! -f "$CRDS/ray.io_rayjobs.yaml" || ! -f "$CRDS/jobset.x-k8s.io_jobsets.yaml" ]]; then
  ray_dir=$(go mod download -json "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  js_dir=$(go mod download -json "sigs.k8s.io/jobset@$JOBSET_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp "$ray_dir/config/crd/bases/ray.io_rayjobs.yaml" "$CRDS/"
  cp "$js_dir/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" "$CRDS/"
fi
echo "control-plane binaries in $BIN"
