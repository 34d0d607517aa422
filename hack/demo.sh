#!/usr/bin/env bash
# The README's main command (`make demo`): on a fresh Debian 12 machine, as
# root, installs what is missing, builds Kubernetes once (cached), brings up
# a 2-node local cluster, deploys the sample app and shows its traffic.
# Idempotent: re-running re-uses the cluster. `make demo-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "make demo needs root (it creates namespaces, cgroups and routes)"; exit 1; }
say "set-up: Debian packages, Kubernetes binaries (first run builds them: ~7-15 min), Ambit binaries"
hack/deps.sh
e2e/hack/build-k8s.sh
make -s build images
say "local cluster: 2 nodes"
bin/ambit-localcluster up --name ambit --nodes 2 --image _output/images/ambit-testapp.tar \
  --image _output/images/ambit-controlplane.tar --image _output/images/ambit-ztunnel.tar
export KUBECONFIG=$(bin/ambit-localcluster kubeconfig --name ambit)
kubectl=$(ls "${AMBIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ambit}"/k8s/*/bin/kubectl | tail -n 1)
"$kubectl" get nodes -o wide
say "sample app (deploy/samples/demo.yaml)"
"$kubectl" apply -f deploy/samples/demo.yaml
"$kubectl" -n ambit-demo rollout status deploy/backend --timeout=120s
"$kubectl" -n ambit-demo rollout status deploy/client --timeout=120s
"$kubectl" -n ambit-demo get pods -o wide
vip=$("$kubectl" -n ambit-demo get svc backend -o jsonpath='{.spec.clusterIP}')
client=$("$kubectl" -n ambit-demo get pods -l app=client -o jsonpath='{.items[0].metadata.name}')
say "traffic: client -> backend Service $vip (each line: which backend answered, and the peer it saw)"
for i in 1 2 3 4 5 6; do
  "$kubectl" -n ambit-demo exec "$client" -- ambit-testapp get --timeout 5s "http://$vip/" \
    | sed -E 's/.*"name":"([^"]*)".*"pod_ip":"([^"]*)".*"peer":"([^"]*)".*/  answered by \1 (\2), saw peer \3/'
done
say "Ambit: control plane (CA + workload discovery) and a ztunnel per node (deploy/manifests/ambit.yaml)"
"$kubectl" apply --server-side -f deploy/manifests/ambit.yaml
"$kubectl" -n ambit-system rollout status deploy/ambit-controlplane --timeout=120s
"$kubectl" -n ambit-system rollout status ds/ztunnel --timeout=120s
say "enrol the namespace: one label, no restart"
"$kubectl" label namespace ambit-demo ambit.dev/dataplane-mode=ambient --overwrite
"$kubectl" -n ambit-demo get pods -o custom-columns=POD:.metadata.name,NODE:.spec.nodeName,RESTARTS:.status.containerStatuses[0].restartCount
for zt in $("$kubectl" -n ambit-system get pods -l app=ztunnel -o jsonpath='{.items[*].metadata.name}'); do
  node=$("$kubectl" -n ambit-system get pod "$zt" -o jsonpath='{.spec.nodeName}')
  # Certificates are fetched from the control plane CA shortly after the
  # workload shows up; wait until this node's pods have theirs.
  for _ in $(seq 1 30); do
    "$kubectl" -n ambit-system exec "$zt" -- ztunnel-admin certs 2>/dev/null | grep -q 'ns/ambit-demo' && break
    sleep 1
  done
  say "ztunnel on $node: workloads it knows, and the SPIFFE certificates it holds for its node's pods"
  "$kubectl" -n ambit-system exec "$zt" -- ztunnel-admin workloads | grep -E 'NAMESPACE|ambit-demo' || true
  "$kubectl" -n ambit-system exec "$zt" -- ztunnel-admin certs
done
cat <<MSG

The cluster stays up. Try:
  export KUBECONFIG=$KUBECONFIG
  $kubectl -n ambit-demo get pods -o wide
  $kubectl -n ambit-system exec ds/ztunnel -- ztunnel-admin certs
What is real today: the control plane CA issues SPIFFE certificates to each
node's ztunnel for exactly the enrolled pods running there, and workload
discovery reaches every ztunnel. Not yet: the CNI/node agent that captures
the pods' traffic into ztunnel, so the requests above still travel in
plaintext; the HBONE mTLS data path itself is tested on network namespaces
(make test-privileged). See docs/development.md.
Remove everything with: make demo-down
MSG
