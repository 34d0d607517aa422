#!/usr/bin/env bash
# Runs Ambit's test tiers and prints one closing line "N passed, N failed,
# N skipped". Does its own set-up (apt packages, the cached Kubernetes
# build, our binaries). TIERS selects tiers (default: all, in order).
#
#   verify      gofmt, go vet, generated code fresh
#   unit        go test, no root, no cluster (TestPrivileged* excluded)
#   privileged  TestPrivileged* tests: real netns, iptables (root)
#   harness     ambit-localcluster up/down/up leaves no trace (root, k8s)
#   e2e         2-node local cluster, e2e suites (root, k8s)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tiers=${TIERS:-"verify unit privileged harness e2e"}
out=$root/_output/test
rm -rf "$out" && mkdir -p "$out"
modules="./api/... ./pkg/... ./ztunnel/... ./controlplane/... ./cni-plugin/... ./waypoint/... ./e2e/... ./ambitctl/... ./deploy/..."
bin=$root/bin
start=$(date +%s)

step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
fail_tier() { # tier reason: record a tier that could not run as one failure
  printf '{"BuildFailed":["%s: %s"]}' "$1" "$2" > "$out/$1.counts"
}
needs_root() { [ "$(id -u)" -eq 0 ] || { echo "tier $1 needs root (real namespaces, iptables, cgroups)"; fail_tier "$1" "not root"; return 1; }; }

setup_done=""
setup() { # set-up shared by the tiers that need it, once
  [ -n "$setup_done" ] && return 0
  step "set-up: packages, Kubernetes build, binaries"
  if [ "$(id -u)" -eq 0 ]; then hack/deps.sh || return 1; fi
  make -s build images || return 1
  setup_done=1
}

run_verify() {
  step "tier verify"
  if hack/verify.sh; then echo '{"Passed":1}' > "$out/verify.counts"; else fail_tier verify "see output above"; fi
}

run_unit() {
  step "tier unit"
  setup || { fail_tier unit "set-up failed"; return; }
  # shellcheck disable=SC2086
  go test -json -count=1 -skip '^TestPrivileged' $modules 2>&1 | "$bin/ambit-testreport" stream --out "$out/unit.counts"
}

run_privileged() {
  step "tier privileged"
  needs_root privileged || return
  setup || { fail_tier privileged "set-up failed"; return; }
  before=$(ip netns list 2>/dev/null | awk '/^ambit-/ {print $1}' | sort)
  # -p 1: these tests share the kernel's namespaces and iptables binaries.
  # shellcheck disable=SC2086
  go test -json -count=1 -p 1 -run '^TestPrivileged' $modules 2>&1 | "$bin/ambit-testreport" stream --out "$out/privileged.counts"
  left=$(comm -13 <(echo "$before") <(ip netns list 2>/dev/null | awk '/^ambit-/ {print $1}' | sort) | grep -c . || true)
  if [ "$left" -gt 0 ]; then echo "privileged tier left $left ambit-* netns behind"; fail_tier privileged-cleanup "netns left behind"; fi
}

run_harness() {
  step "tier harness"
  needs_root harness || return
  setup || { fail_tier harness "set-up failed"; return; }
  e2e/hack/build-k8s.sh || { fail_tier harness "kubernetes build failed"; return; }
  (cd e2e && go test -json -count=1 -tags harness -timeout 20m -run '^TestHarness' ./internal/cluster/ -args -bin-dir "$bin") 2>&1 \
    | "$bin/ambit-testreport" stream --out "$out/harness.counts"
}

run_e2e() {
  step "tier e2e"
  needs_root e2e || return
  setup || { fail_tier e2e "set-up failed"; return; }
  e2e/hack/build-k8s.sh || { fail_tier e2e "kubernetes build failed"; return; }
  "$bin/ambit-localcluster" up --name e2e --nodes 2 --image "$root/_output/images/ambit-testapp.tar" \
    --image "$root/_output/images/ambit-controlplane.tar" --image "$root/_output/images/ambit-ztunnel.tar" \
    --image "$root/_output/images/ambit-node-agent.tar" --image "$root/_output/images/ambit-waypoint.tar" \
    || { fail_tier e2e "cluster did not come up"; "$bin/ambit-localcluster" down --name e2e; return; }
  kc=$("$bin/ambit-localcluster" kubeconfig --name e2e)
  KUBECONFIG=$kc AMBIT_E2E_ARTIFACTS=$root/_output/e2e-artifacts \
    go test -json -count=1 -tags e2e -timeout 40m ./e2e/tests/... 2>&1 | "$bin/ambit-testreport" stream --out "$out/e2e.counts"
  "$bin/ambit-localcluster" down --name e2e || fail_tier e2e-teardown "down failed"
}

for t in $tiers; do
  "run_$t" || true
  [ -f "$out/$t.counts" ] || fail_tier "$t" "did not report"
done
step "summary"
files=()
for t in $tiers; do files+=("$out/$t.counts"); done
for extra in privileged-cleanup e2e-teardown; do [ -f "$out/$extra.counts" ] && files+=("$out/$extra.counts"); done
summary=$("$bin/ambit-testreport" summary "${files[@]}" 2>/dev/null || go run ./e2e/cmd/ambit-testreport summary "${files[@]}")
echo "$summary"
echo "total time: $(( $(date +%s) - start ))s"
# Closing line last, alone.
last=$(echo "$summary" | tail -n 1)
echo "$last"
case "$last" in *" 0 failed"*) exit 0 ;; *) exit 1 ;; esac
