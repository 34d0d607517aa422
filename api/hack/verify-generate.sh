#!/usr/bin/env bash
# Fails when the committed *.pb.go files differ from what hack/generate.sh
# produces from the current protos (missing, extra or changed files).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT

bash "$root/hack/generate.sh" "$fresh"

list() {
	(cd "$1" && find . -path ./proto -prune -o -name '*.pb.go' -type f -print | LC_ALL=C sort)
}

stale=0
while IFS= read -r f; do
	if [[ ! -f "$root/$f" ]]; then
		echo "missing: $f" >&2
		stale=1
	elif [[ ! -f "$fresh/$f" ]]; then
		echo "no proto generates: $f" >&2
		stale=1
	elif ! diff -u "$root/$f" "$fresh/$f" >&2; then
		stale=1
	fi
done < <({ list "$root"; list "$fresh"; } | LC_ALL=C sort -u)

if [[ $stale -ne 0 ]]; then
	echo "generated code is stale: run make generate" >&2
	exit 1
fi
echo "generated code is up to date"
