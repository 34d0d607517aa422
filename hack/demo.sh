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
bin/ambit-localcluster up --name ambit --nodes 2 --image _output/images/ambit-testapp.tar
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
cat <<MSG

The cluster stays up. Try:
  export KUBECONFIG=$KUBECONFIG
  $kubectl -n ambit-demo get pods -o wide
Traffic above is plaintext pod-to-pod: the mesh data path (ztunnel, HBONE
mTLS) is not installed by this version yet; see docs/development.md.
Remove everything with: make demo-down
MSG
