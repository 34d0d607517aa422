#!/usr/bin/env bash
# Checks the Helm chart deploy/charts/ambit against the real helm CLI, and
# that deploy/manifests/ambit.yaml is fresh:
#
#   1. deploy/manifests/ambit.yaml equals a fresh `ambit-render` (else: run
#      `make manifests`).
#   2. `helm lint --strict` passes.
#   3. `helm template` prints the same objects as ambit-render (the chart
#      rendered by Helm's Go packages, deploy/charts), for the defaults and
#      for a values file that takes the other branches of the templates; and
#      both reject redirection.mode=nftables.
#
# helm is built from the Go module proxy at the version deploy/go.mod
# requires (so the CLI and the library are the same Helm), once, and cached
# outside the repo in ~/.cache/ambit/helm/<version>/helm.
#
# Comparing: helm prints the objects in Helm's install order
# (releaseutil.InstallOrder: ServiceAccounts before CRDs, DaemonSets before
# Deployments); ambit-render prints them in Ambit's apply order (CRDs first,
# Deployments before DaemonSets), and starts with a header comment. So both
# outputs are cut into their "---" documents (each still with its
# "# Source:" line), the header is dropped and the documents are sorted
# before the byte comparison. Nothing inside a document is normalized.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

helm_version=$(awk '$1 == "helm.sh/helm/v3" { print $2; exit }' deploy/go.mod)
if [ -z "$helm_version" ]; then
  echo "helm.sh: no helm.sh/helm/v3 requirement in deploy/go.mod" >&2
  exit 1
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/ambit/helm/$helm_version
helm=$cache/helm

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "helm.sh: $*" >&2; exit 1; }

# 1. Freshness of the generated manifest.
go build -o "$tmp/ambit-render" ./deploy/cmd/ambit-render
"$tmp/ambit-render" > "$tmp/ambit.yaml"
if ! diff -u deploy/manifests/ambit.yaml "$tmp/ambit.yaml" > "$tmp/fresh.diff"; then
  head -n 60 "$tmp/fresh.diff" >&2
  fail "deploy/manifests/ambit.yaml is stale (differs from the chart deploy/charts/ambit rendered now): run make manifests"
fi
echo "helm.sh: deploy/manifests/ambit.yaml is fresh"

# The helm CLI, built once per version.
if [ ! -x "$helm" ]; then
  echo "helm.sh: building helm $helm_version into $cache (once)"
  mkdir -p "$cache"
  (cd "$tmp" && GOWORK=off CGO_ENABLED=0 GOBIN="$tmp/bin" go install "helm.sh/helm/v3/cmd/helm@$helm_version") \
    || fail "could not build helm $helm_version from the Go module proxy (is proxy.golang.org reachable?)"
  mv "$tmp/bin/helm" "$helm"
fi
# helm keeps no state of ours, and must not reach any cluster.
export HELM_CONFIG_HOME=$tmp/helm/config HELM_CACHE_HOME=$tmp/helm/cache HELM_DATA_HOME=$tmp/helm/data
export KUBECONFIG=$tmp/no-kubeconfig

# 2. Lint.
"$helm" lint --strict deploy/charts/ambit --namespace ambit-system > "$tmp/lint.out" 2>&1 \
  || { cat "$tmp/lint.out" >&2; fail "helm lint --strict deploy/charts/ambit failed"; }
echo "helm.sh: helm lint --strict: ok"

# normalize FILE: the "---" documents of FILE, without what precedes the
# first one (ambit-render's header), sorted, each printed after a "---" line.
normalize() {
  awk 'BEGIN { started = 0; doc = "" }
       /^---$/ { if (started) print doc; started = 1; doc = ""; next }
       started { doc = doc $0 "\001" }
       END     { if (started) print doc }' "$1" \
    | LC_ALL=C sort | awk '{ printf "---\n%s", $0 }' | tr '\001' '\n'
}

# compare NAME HELM_ARGS... -- RENDER_ARGS...
compare() {
  local name=$1; shift
  local helm_args=() render_args=()
  while [ "$1" != "--" ]; do helm_args+=("$1"); shift; done
  shift
  render_args=("$@")
  "$helm" template ambit deploy/charts/ambit "${helm_args[@]}" > "$tmp/helm.yaml" 2> "$tmp/helm.err" \
    || { cat "$tmp/helm.err" >&2; fail "$name: helm template failed"; }
  "$tmp/ambit-render" "${render_args[@]}" > "$tmp/render.yaml" \
    || fail "$name: ambit-render failed"
  normalize "$tmp/helm.yaml" > "$tmp/helm.norm"
  normalize "$tmp/render.yaml" > "$tmp/render.norm"
  [ -s "$tmp/helm.norm" ] || fail "$name: helm template printed no objects"
  if ! diff -u --label "helm template ${helm_args[*]}" --label "ambit-render ${render_args[*]}" \
      "$tmp/helm.norm" "$tmp/render.norm" > "$tmp/cmp.diff"; then
    head -n 80 "$tmp/cmp.diff" >&2
    fail "$name: helm template and ambit-render (deploy/charts.Render) render different objects"
  fi
  echo "helm.sh: $name: helm template = ambit-render ($(grep -c '^kind:' "$tmp/helm.yaml") objects)"
}

# 3. helm template = ambit-render. Render creates the namespace unless told
# otherwise (its output is for kubectl apply); helm's default is
# namespace.create=false (for helm install --create-namespace).
compare "defaults" --namespace ambit-system --set namespace.create=true -- --namespace ambit-system
cat > "$tmp/values.yaml" <<'EOF'
namespace: {create: false}
trustDomain: prod.example.org
logLevel: debug
meshRootNamespace: mesh-config
pluginCA: {enabled: true}
redirection: {mode: iptables, iptablesBackend: nft}
imagePullSecrets: [{name: regcred}]
controlplane:
  replicas: 2
  image: {registry: registry.example.com/ambit, tag: v0.1.0, pullPolicy: IfNotPresent}
  resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 512Mi}}
ztunnel:
  image: {registry: "", repository: ambit-ztunnel, tag: v0.1.0, pullPolicy: Always}
  resources: {requests: {cpu: 200m}}
nodeAgent:
  image: {registry: "localhost:5000", tag: v0.1.0}
crds: {install: false}
gatewayAPI: {channel: experimental}
waypoint: {autoProvision: false}
EOF
compare "all values set" --namespace mesh-infra -f "$tmp/values.yaml" -- --namespace mesh-infra -f "$tmp/values.yaml"

# Both refuse what is not implemented, with the chart's message.
for tool in helm ambit-render; do
  if [ "$tool" = helm ]; then
    cmd=("$helm" template ambit deploy/charts/ambit --namespace ambit-system --set redirection.mode=nftables)
  else
    cmd=("$tmp/ambit-render" --set redirection.mode=nftables)
  fi
  if "${cmd[@]}" > /dev/null 2> "$tmp/nft.err"; then
    fail "$tool rendered redirection.mode=nftables; it must fail (not implemented)"
  fi
  grep -q "redirection.mode=nftables is not implemented yet" "$tmp/nft.err" \
    || { cat "$tmp/nft.err" >&2; fail "$tool rejected redirection.mode=nftables without the chart's message"; }
done
echo "helm.sh: redirection.mode=nftables rejected by helm and ambit-render"
echo "helm.sh: ok (helm $helm_version, $root/deploy/charts/ambit)"
