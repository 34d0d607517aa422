#!/usr/bin/env bash
# Static checks: gofmt, go vet on every module, generated code up to date.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
bad=$(git ls-files '*.go' | grep -v '\.pb\.go$' | xargs -r gofmt -l)
if [ -n "$bad" ]; then echo "verify: gofmt would change:"; echo "$bad"; rc=1; fi
if ! go vet ./api/... ./pkg/... ./ztunnel/... ./controlplane/... ./cni-plugin/... ./waypoint/... ./e2e/... ./ambitctl/... ./deploy/...; then
  echo "verify: go vet failed"; rc=1
fi
if ! go vet -tags e2e ./e2e/tests/... ; then echo "verify: go vet (e2e tag) failed"; rc=1; fi
if ! api/hack/verify-generate.sh; then rc=1; fi
if ! hack/helm.sh; then rc=1; fi  # chart: manifest fresh, helm lint, helm template = ambit-render
[ $rc -eq 0 ] && echo "verify: ok"
exit $rc
