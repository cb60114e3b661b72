#!/usr/bin/env bash
# Builds the real Kubernetes binaries the integration tests run against, once, into a cache
# outside git: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the
# k8s.io/kubernetes Go module, etcd and helm from theirs; for the miniature cluster
# (tests/cluster) kwok (simulated nodes), the JobSet controller and Kueue from theirs, with their
# CRDs and webhook configurations. Also fetches the real RayJob CRD, and builds actionlint (the
# release workflow's linter). Every Go module comes through the go command (its proxy settings).
# Idempotent: every step is skipped when its output exists.
set -euo pipefail
K8S_VERSION=v1.34.4
HELM_VERSION=v3.19.5
KUBERAY_VERSION=v1.5.0
JOBSET_VERSION=v0.10.1
ACTIONLINT_VERSION=v1.7.12
KWOK_VERSION=v0.8.0
KUEUE_VERSION=v0.17.0
CACHE="${LONGREACH_CACHE:-$HOME/.cache/longreach}"
BIN="$CACHE/bin"
CRDS="$CACHE/crds"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$BIN" "$CRDS"
export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
# The release's version stamped in, as its own build does (controllers such as Kueue read the
# API server's version and refuse an unparsable one); the stamp file names the build flags.
minor="${K8S_VERSION#v1.}" && minor="${minor%%.*}"
K8S_LDFLAGS="-s"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
K8S_STAMP="$BIN/.k8s-$K8S_VERSION-versioned"
[[ -f "$K8S_STAMP" ]] || for c in "${K8S_COMMANDS[@]}"; do rm -f "$BIN/$c"; done
missing_k8s() { for c in "${K8S_COMMANDS[@]}"; do [[ -x "$BIN/$c" ]] || return 0; done; return 1; }
# A module version's directory (Dir) or go.mod (GoMod) in the go command's module cache,
# downloaded when absent.
module_path() { go mod download -json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['${2:-Dir}'])"; }
module_dir() { module_path "$1" Dir; }

if missing_k8s; then
  # k8s.io/kubernetes publishes k8s.io/<staging> v0.0.0 requirements: point each at v0.Y.Z.
  work="$CACHE/tools-src"
  rm -rf "$work" && mkdir -p "$work" && cp "$HERE/tools/tools.go" "$work/"
  staging_minor="v0.${K8S_VERSION#v1.}"
  kube_mod=$(module_path "k8s.io/kubernetes@$K8S_VERSION" GoMod)
  {
    echo "module longreach.io/controlplane-tools"
    echo "go 1.24.0"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -E '^\s+k8s.io/[a-z0-9-]+ v0\.0\.0$' "$kube_mod" | awk -v v="$staging_minor" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  (cd "$work" && { go mod tidy >/dev/null 2>&1 || go mod download; })
  for c in "${K8S_COMMANDS[@]}"; do
    [[ -x "$BIN/$c" ]] || (cd "$work" && go build -trimpath -ldflags="$K8S_LDFLAGS" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c")
  done
  touch "$K8S_STAMP"
fi

# kwok, the JobSet controller and Kueue, each built as its own main module (its own go.mod and
# go.sum) from a copy of its source in the module cache. (`go install MOD@VERSION` would do the
# same, but first asks the proxy for the module's version list, which some proxies refuse.)
build_module() {  # MODULE@VERSION PACKAGE-IN-IT OUTPUT
  [[ -x "$3" ]] && return 0
  local src="$CACHE/src/${1//\//_}"
  rm -rf "$src" && mkdir -p "$(dirname "$src")" && cp -r "$(module_dir "$1")" "$src" && chmod -R u+w "$src"
  (cd "$src" && go build -trimpath -ldflags=-s -o "$3" "$2")
  rm -rf "$src"
}
build_module "sigs.k8s.io/kwok@$KWOK_VERSION" ./cmd/kwok "$BIN/kwok"
build_module "sigs.k8s.io/jobset@$JOBSET_VERSION" . "$BIN/jobset-controller"
build_module "sigs.k8s.io/kueue@$KUEUE_VERSION" ./cmd/kueue "$BIN/kueue"

if [[ ! -x "$BIN/helm" ]]; then
  GOBIN="$BIN" go install -trimpath -ldflags=-s "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

if [[ ! -x "$BIN/actionlint" ]]; then
  GOBIN="$BIN" go install -trimpath -ldflags=-s "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

# etcd from its Go module, at the version the API server's own go.mod requires
if [[ ! -x "$BIN/etcd" || -L "$BIN/etcd" ]]; then
  etcd_version=$(sed -n 's/^\s*go.etcd.io\/etcd\/client\/v3 \(v[0-9.]*\).*/\1/p' \
    "$(module_path "k8s.io/kubernetes@$K8S_VERSION" GoMod)")
  work="$CACHE/etcd-src"
  rm -rf "$work" && mkdir -p "$work" && cp "$HERE/tools/etcd/main.go" "$work/"
  printf 'module longreach.io/etcd\ngo 1.24.0\nrequire go.etcd.io/etcd/server/v3 %s\n' "$etcd_version" >"$work/go.mod"
  (cd "$work" && go mod tidy >/dev/null && rm -f "$BIN/etcd" && go build -trimpath -ldflags=-s -o "$BIN/etcd" .)
fi

if [[ ! -f "$CRDS/ray.io_rayjobs.yaml" || ! -f "$CRDS/jobset.x-k8s.io_jobsets.yaml" ]]; then
  cp "$(module_dir "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")/config/crd/bases/ray.io_rayjobs.yaml" "$CRDS/"
  cp "$(module_dir "sigs.k8s.io/jobset@$JOBSET_VERSION")/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" "$CRDS/"
fi
# The miniature cluster's extra CRDs and webhook configurations, kept apart from the CRDs every
# control-plane test installs: Kueue's CRDs, both controllers' webhooks and kwok's node stages
# (its pod stages are ours, kwok-stages.yaml).
CLUSTER="$CACHE/cluster"
if [[ ! -f "$CLUSTER/done" ]]; then
  rm -rf "$CLUSTER" && mkdir -p "$CLUSTER/kueue-crds"
  kueue_dir=$(module_dir "sigs.k8s.io/kueue@$KUEUE_VERSION")
  cp "$kueue_dir"/config/components/crd/bases/*.yaml "$CLUSTER/kueue-crds/"
  # each project's own kustomization of its webhooks (selectors patched in), rendered by kubectl
  "$BIN/kubectl" kustomize "$kueue_dir/config/components/webhook" >"$CLUSTER/kueue-webhooks.yaml"
  "$BIN/kubectl" kustomize "$(module_dir "sigs.k8s.io/jobset@$JOBSET_VERSION")/config/components/webhook" >"$CLUSTER/jobset-webhooks.yaml"
  # kwok's own node stages (a node becomes Ready; its lease is its heartbeat)
  kwok_stages="$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")/kustomize/stage/node"
  "$BIN/kubectl" kustomize "$kwok_stages/fast" >"$CLUSTER/kwok-node-stages.yaml"
  { echo "---"; "$BIN/kubectl" kustomize "$kwok_stages/heartbeat-with-lease"; } >>"$CLUSTER/kwok-node-stages.yaml"
  touch "$CLUSTER/done"
fi
echo "control-plane binaries in $BIN"
