#!/usr/bin/env bash
# Installs the Debian packages Ambit's build, tests and local cluster need.
# Idempotent and quick when everything is present; needs root for apt.
set -euo pipefail
# openssl: deploy/ca/istio-intermediate.sh and its test in
# controlplane/internal/ca (which fails without it).
pkgs=(containerd runc containernetworking-plugins etcd-server protobuf-compiler
      iptables iproute2 conntrack util-linux kmod openssl ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian containerd package may start a host containerd through its
# service; the local cluster runs one per node and needs none on the host.
command -v go >/dev/null || { echo "deps: Go is not on PATH (expected /usr/local/go/bin/go)" >&2; exit 1; }
echo "deps: ok"
