#!/usr/bin/env bash
# Builds the Kubernetes binaries the local cluster runs, once per version, into
# ${AMBIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ambit}/k8s/<version>/bin.
# Re-running with the binaries present does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk '/k8s.io\/kubernetes v/ {print $2; exit}' "$here/k8sbuild/go.mod")
[ -n "$version" ] || { echo "build-k8s: cannot read the kubernetes version from e2e/k8sbuild/go.mod" >&2; exit 1; }
cache=${AMBIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ambit}
out="$cache/k8s/$version/bin"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
missing=()
for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "build-k8s: $version cached in $out"
  exit 0
fi
mkdir -p "$out"
cd "$here/k8sbuild"
export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
# One binary at a time keeps the peak memory of the 2-core machine low, and a
# crash leaves the finished ones cached.
for b in "${missing[@]}"; do
  echo "build-k8s: building $b $version (first run only; ~1-4 min each)"
  go build -trimpath -o "$out/$b.tmp" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34" \
    "k8s.io/kubernetes/cmd/$b"
  mv "$out/$b.tmp" "$out/$b"
done
echo "build-k8s: $version built into $out"
