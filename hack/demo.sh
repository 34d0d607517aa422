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
  --image _output/images/ambit-controlplane.tar --image _output/images/ambit-ztunnel.tar \
  --image _output/images/ambit-node-agent.tar
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
say "Ambit: control plane (CA + workload discovery), a ztunnel and a node agent per node (deploy/manifests/ambit.yaml)"
"$kubectl" apply --server-side -f deploy/manifests/ambit.yaml
"$kubectl" -n ambit-system rollout status deploy/ambit-controlplane --timeout=120s
"$kubectl" -n ambit-system rollout status ds/ambit-node-agent --timeout=120s
"$kubectl" -n ambit-system rollout status ds/ztunnel --timeout=120s

say "enrol the namespace: one label, no restart"
"$kubectl" label namespace ambit-demo ambit.dev/dataplane-mode=ambient --overwrite
for _ in $(seq 1 60); do
  pending=$("$kubectl" -n ambit-demo get pods -o jsonpath='{range .items[*]}{.metadata.annotations.ambit\.dev/redirection}{"\n"}{end}' | grep -cv '^enabled$' || true)
  [ "$pending" = 0 ] && break
  sleep 1
done
"$kubectl" -n ambit-demo get pods -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,RESTARTS:.status.containerStatuses[0].restartCount,REDIRECTION:.metadata.annotations.ambit\.dev/redirection'

say "the same requests, now carried by ztunnel over HBONE (mutual TLS, SPIFFE identities)"
for i in 1 2 3 4 5 6; do
  for _ in 1 2 3 4 5; do
    out=$("$kubectl" -n ambit-demo exec "$client" -- ambit-testapp get --timeout 5s "http://$vip/" 2>/dev/null) && break
    sleep 1
  done
  echo "$out" | sed -E 's/.*"name":"([^"]*)".*"pod_ip":"([^"]*)".*"peer":"([^"]*)".*/  answered by \1 (\2), saw peer \3/'
done

# A slow request, to catch its tunnel in ztunnel's connection table.
"$kubectl" -n ambit-demo exec "$client" -- ambit-testapp get --timeout 10s "http://$vip/delay/4000" >/dev/null 2>&1 &
slow=$!
sleep 2
for zt in $("$kubectl" -n ambit-system get pods -l app=ztunnel -o jsonpath='{.items[*].metadata.name}'); do
  node=$("$kubectl" -n ambit-system get pod "$zt" -o jsonpath='{.spec.nodeName}')
  say "ztunnel on $node: connections it carries right now (ztunnel-admin connections)"
  "$kubectl" -n ambit-system exec "$zt" -- ztunnel-admin connections
  say "ztunnel on $node: connections opened so far, by identity and security policy (its /metrics)"
  "$kubectl" get --raw "/api/v1/namespaces/ambit-system/pods/$zt:15020/proxy/metrics" \
    | grep '^istio_tcp_connections_opened_total{' | grep 'ambit-demo' \
    | perl -ne 'my %l = /(\w+)="([^"]*)"/g; my ($v) = /\} (\S+)$/;
        $n{"  $l{reporter}: $l{source_principal} -> $l{destination_principal} via $l{destination_service}  [$l{connection_security_policy}]"} += $v;
        END { print "$_  x$n{$_}\n" for sort keys %n }'
  say "ztunnel on $node: the SPIFFE certificates it holds for its node's pods"
  "$kubectl" -n ambit-system exec "$zt" -- ztunnel-admin certs
done
wait "$slow" || true
cat <<MSG

The cluster stays up. Try:
  export KUBECONFIG=$KUBECONFIG
  $kubectl -n ambit-demo get pods -o wide
  $kubectl -n ambit-system exec ds/ztunnel -- ztunnel-admin connections
  $kubectl label namespace ambit-demo ambit.dev/dataplane-mode-   # leave the mesh, still no restart
Remove everything with: make demo-down
MSG
