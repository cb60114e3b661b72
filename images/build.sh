#!/usr/bin/env bash
# Builds the four Longreach images with one tag, pushes them, and prints the helm lines that
# use them. See usage below (images/build.sh --help).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: images/build.sh [--no-push] [--build-arg NAME=VALUE]... REGISTRY [TAG]

Builds the four images from the repository and pushes them as
  REGISTRY/operator:TAG   the operator (kopf)                images/operator/Dockerfile
  REGISTRY/data:TAG       DataMixture jobs (Ray)             images/data/Dockerfile
  REGISTRY/trainer:TAG    ContextExtension jobs (DeepSpeed)  images/trainer/Dockerfile
  REGISTRY/eval:TAG       NeedleEval jobs                    images/eval/Dockerfile
then prints the `helm install` line that makes the chart use exactly these images.

  REGISTRY      where to push, with a path: registry.example.com/ml, ghcr.io/you,
                localhost:5000/longreach (log in first: docker login / podman login)
  TAG           default: the package version and the git commit, e.g. 0.1.0-3f3e935,
                with -dirty when the working tree has uncommitted changes
  --no-push     build only (e.g. for `kind load docker-image`), print the same lines
  --build-arg   passed to every build, e.g. TORCH_CUDA_ARCH_LIST="9.0" (trainer: the GPUs
                DeepSpeed's ops are compiled for), INSTALL_VLLM=true (eval)

The engine is docker, else podman, else buildah, whichever is installed first
(CONTAINER_ENGINE=podman chooses). All four images are built before any is pushed, so a
failed build pushes nothing. The trainer image takes the longest (DeepSpeed's ops; flash-attn
when it has no prebuilt wheel) and needs no GPU.
EOF
}

die() {
  echo "images/build.sh: $*" >&2
  exit 2
}

push=1
build_args=()
positional=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-push) push=0 ;;
    --build-arg)
      (($# >= 2)) || die "--build-arg needs NAME=VALUE"
      [[ "$2" == ?*=* ]] || die "--build-arg $2: expected NAME=VALUE"
      build_args+=(--build-arg "$2")
      shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
((${#positional[@]} >= 1 && ${#positional[@]} <= 2)) || { usage >&2; exit 2; }
registry=${positional[0]}
# Docker's reference grammar, lower case: host[:port]/path; the chart's schema checks the same.
component='[a-z0-9]+([._-][a-z0-9]+)*'
[[ "$registry" =~ ^${component}(:[0-9]+)?(/${component})*$ ]] \
  || die "REGISTRY $registry: expected lower-case host[:port][/path], e.g. registry.example.com/ml (no tag)"

cd "$(dirname "$0")/.."
commit=""
if git rev-parse --git-dir >/dev/null 2>&1; then
  commit=$(git rev-parse --short=7 HEAD)
fi
if ((${#positional[@]} == 2)); then
  tag=${positional[1]}
else
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
  [[ -n "$version" ]] || die "no version in pyproject.toml"
  [[ -n "$commit" ]] || die "not a git checkout: name a TAG"
  tag="$version-$commit"
  if [[ -n "$(git status --porcelain)" ]]; then
    tag="$tag-dirty"
  fi
fi
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "TAG $tag: expected letters, digits, _ . - (at most 128)"

engine=${CONTAINER_ENGINE:-}
if [[ -z "$engine" ]]; then
  for candidate in docker podman buildah; do
    if command -v "$candidate" >/dev/null; then
      engine=$candidate
      break
    fi
  done
fi
if [[ -z "$engine" ]] || ! command -v "$engine" >/dev/null; then
  echo "images/build.sh: no container engine${engine:+ $engine}: install docker, podman or buildah" >&2
  exit 1
fi

labels=(--label "org.opencontainers.image.version=$tag")
if [[ -n "$commit" ]]; then
  labels+=(--label "org.opencontainers.image.revision=$(git rev-parse HEAD)")
fi
images=(operator data trainer eval)
for image in "${images[@]}"; do
  echo "== $engine: $registry/$image:$tag"
  "$engine" build -f "images/$image/Dockerfile" -t "$registry/$image:$tag" \
    "${labels[@]}" "${build_args[@]}" .
done
if ((push)); then
  for image in "${images[@]}"; do
    "$engine" push "$registry/$image:$tag"
  done
fi

cat <<EOF

Images $( ((push)) && echo pushed || echo built, not pushed):
$(for image in "${images[@]}"; do echo "  $registry/$image:$tag"; done)

Install the chart with them (from the repository root; add your S3 settings, see README.md):

  helm install longreach charts/longreach -n longreach-system --create-namespace --set-string global.registry=$registry --set-string global.tag=$tag

or switch an installed release to them:

  helm upgrade longreach charts/longreach -n longreach-system --reuse-values --set-string global.registry=$registry --set-string global.tag=$tag
EOF
