#!/usr/bin/env bash
# The README's main command (`make demo`): on a fresh Debian 12 machine, as
# root, installs what is missing, builds Kubernetes once (cached), brings up
# a 2-node local cluster, installs Ambit with `ambitctl install`, deploys a
# sample app (client -> frontend -> backend, spread over both nodes),
# enrols its namespace and shows the proof: requests flowing, the SPIFFE
# identities on each connection, the certificates, the metrics, and an L4
# policy at work. Idempotent: re-running re-uses the cluster and replays the
# story from an un-enrolled namespace. `make demo-down` removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "make demo needs root (it creates namespaces, cgroups and routes)"; exit 1; }
say "set-up: Debian packages, Kubernetes binaries (first run builds them: ~7-15 min), Ambit binaries"
hack/deps.sh
e2e/hack/build-k8s.sh
make -s build images
ambitctl=bin/ambitctl

say "local cluster: 2 nodes"
bin/ambit-localcluster up --name ambit --nodes 2 --image _output/images/ambit-testapp.tar \
  --image _output/images/ambit-controlplane.tar --image _output/images/ambit-ztunnel.tar \
  --image _output/images/ambit-node-agent.tar --image _output/images/ambit-waypoint.tar
export KUBECONFIG=$(bin/ambit-localcluster kubeconfig --name ambit)
kubectl=$(ls "${AMBIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ambit}"/k8s/*/bin/kubectl | tail -n 1)
"$kubectl" get nodes -o wide
$ambitctl check --pre

# A re-run starts the story again: namespace out of the mesh, no policies.
if "$kubectl" get namespace ambit-demo >/dev/null 2>&1; then
  "$kubectl" label namespace ambit-demo ambit.dev/dataplane-mode- >/dev/null
  "$kubectl" -n ambit-demo delete authorizationpolicies,peerauthentications --all --ignore-not-found >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do # the node agents release the pods
    "$kubectl" -n ambit-demo get pods -o jsonpath='{range .items[*]}{.metadata.annotations.ambit\.dev/redirection}{"\n"}{end}' | grep -q . || break
    sleep 1
  done
fi

say "sample app (deploy/samples/demo.yaml): client -> frontend Service -> backend Service"
"$kubectl" apply -f deploy/samples/demo.yaml
for d in backend frontend client; do "$kubectl" -n ambit-demo rollout status "deploy/$d" --timeout=120s; done
"$kubectl" -n ambit-demo get pods -o wide
vip=$("$kubectl" -n ambit-demo get svc frontend -o jsonpath='{.spec.clusterIP}')
backend_vip=$("$kubectl" -n ambit-demo get svc backend -o jsonpath='{.spec.clusterIP}')
client=$("$kubectl" -n ambit-demo get pods -l app=client -o jsonpath='{.items[0].metadata.name}')

# requests N: N requests client -> frontend -> backend, one line each (which
# pod answered at each hop and the peer it saw). Retries a request for a few
# seconds, as the mesh converges right after enrolment.
requests() {
  for _ in $(seq 1 "$1"); do
    out=
    for _ in 1 2 3 4 5; do
      out=$("$kubectl" -n ambit-demo exec "$client" -- ambit-testapp get --timeout 5s "http://$vip/" 2>/dev/null) && break
      sleep 1
    done
    echo "$out" | perl -ne 'if (/"name":"([^"]*)".*?"peer":"([^"]*)".*"upstream":\{"name":"([^"]*)".*?"peer":"([^"]*)"/) {
        print "  client -> $1 (saw peer $2) -> $3 (saw peer $4)\n" } else { print "  request failed: $_" }'
  done
}

say "traffic before the mesh: plaintext, each hop sees the caller's pod IP"
requests 4

say "install Ambit: control plane (CA + workload discovery), a ztunnel and a node agent per node"
$ambitctl install
$ambitctl check

say "enrol the namespace: one label, no restart"
$ambitctl enroll ambit-demo
for _ in $(seq 1 60); do
  pending=$("$kubectl" -n ambit-demo get pods -o jsonpath='{range .items[*]}{.metadata.annotations.ambit\.dev/redirection}{"\n"}{end}' | grep -cv '^enabled$' || true)
  [ "$pending" = 0 ] && break
  sleep 1
done
$ambitctl status

say "the same requests, now carried by ztunnel over HBONE (mutual TLS, SPIFFE identities); peers are unchanged"
requests 6

# A slow request, to catch its tunnels in ztunnel's connection tables.
"$kubectl" -n ambit-demo exec "$client" -- ambit-testapp get --timeout 10s "http://$vip/delay/4000" >/dev/null 2>&1 &
slow=$!
sleep 2
say "connections ztunnel carries right now, per node (ambitctl ztunnel connections)"
$ambitctl ztunnel connections
wait "$slow" || true

say "connections opened so far, by identity and security policy (each ztunnel's istio_tcp_connections_opened_total)"
for zt in $("$kubectl" -n ambit-system get pods -l app=ztunnel -o jsonpath='{.items[*].metadata.name}'); do
  node=$("$kubectl" -n ambit-system get pod "$zt" -o jsonpath='{.spec.nodeName}')
  echo "  ztunnel on $node:"
  "$kubectl" get --raw "/api/v1/namespaces/ambit-system/pods/$zt:15020/proxy/metrics" \
    | grep '^istio_tcp_connections_opened_total{' | grep 'ambit-demo' \
    | perl -ne 'my %l = /(\w+)="([^"]*)"/g; my ($v) = /\} (\S+)$/;
        $n{"    $l{reporter}: $l{source_principal} -> $l{destination_principal} via $l{destination_service}  [$l{connection_security_policy}]"} += $v;
        END { print "$_  x$n{$_}\n" for sort keys %n }'
done

say "the SPIFFE certificates each ztunnel holds for its node's pods (ambitctl ztunnel certs)"
$ambitctl ztunnel certs

say "L4 policy (deploy/samples/policies.yaml): backend accepts only the frontend's identity, STRICT mTLS"
"$kubectl" apply -f deploy/samples/policies.yaml
for _ in $(seq 1 30); do
  n=$("$kubectl" -n ambit-demo get authorizationpolicies,peerauthentications -o jsonpath='{range .items[*]}{.status.conditions[0].type}{"\n"}{end}' | grep -c Accepted || true)
  [ "$n" = 3 ] && break
  sleep 1
done
"$kubectl" -n ambit-demo get authorizationpolicies,peerauthentications \
  -o custom-columns='KIND:.kind,NAME:.metadata.name,ACCEPTED:.status.conditions[0].status,REASON:.status.conditions[0].reason'
echo "  client -> frontend -> backend (the frontend's identity is allowed):"
requests 2
echo "  client -> backend directly (the client's identity is not):"
for _ in 1 2; do
  if "$kubectl" -n ambit-demo exec "$client" -- ambit-testapp get --timeout 3s "http://$backend_vip/" >/dev/null 2>&1; then
    echo "  UNEXPECTED: the backend answered the client"
  else
    echo "  refused: the backend's ztunnel reset it (policy=\"none\": no ALLOW policy matched), the backend never saw it"
  fi
done
echo "  decisions counted by the ztunnels (ambit_ztunnel_authorization_decisions_total):"
for zt in $("$kubectl" -n ambit-system get pods -l app=ztunnel -o jsonpath='{.items[*].metadata.name}'); do
  node=$("$kubectl" -n ambit-system get pod "$zt" -o jsonpath='{.spec.nodeName}')
  "$kubectl" get --raw "/api/v1/namespaces/ambit-system/pods/$zt:15020/proxy/metrics" \
    | grep '^ambit_ztunnel_authorization_decisions_total{' | sed "s/^/    $node: /" || true
done

cat <<MSG

The cluster stays up. Try:
  export KUBECONFIG=$KUBECONFIG
  $ambitctl status
  $ambitctl ztunnel workloads
  $kubectl -n ambit-demo delete -f deploy/samples/policies.yaml   # drop the policies
  $ambitctl unenroll ambit-demo                                     # leave the mesh, still no restart
Remove everything with: make demo-down
MSG
