#!/usr/bin/env bash
# Regenerates all Go code of ambit.dev/api from the .proto files under proto/.
#
# Usage: hack/generate.sh [OUT_DIR]
#   OUT_DIR defaults to the module root. The *.pb.go files are written under
#   OUT_DIR at their Go package paths (e.g. OUT_DIR/workload/v1alpha1/). When
#   OUT_DIR is the module root, *.pb.go files that no proto produces any more
#   are removed, so running this twice changes nothing.
#
# Needs: protoc on PATH (Debian package protobuf-compiler) and Go. The protoc
# plugins are built from the versions pinned as tool dependencies in go.mod;
# nothing else is downloaded or taken from PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root}"
module="ambit.dev/api"
# The protoc release the committed files were generated with (Debian 12).
expected_protoc="libprotoc 3.21.12"

if ! command -v protoc >/dev/null 2>&1; then
	echo "protoc not found on PATH: install it with 'apt-get install -y protobuf-compiler'" >&2
	exit 1
fi
protoc_version="$(protoc --version)"
if [[ "$protoc_version" != "$expected_protoc" ]]; then
	echo "warning: protoc is '$protoc_version', the committed code was made with '$expected_protoc';" \
		"the version comment in every *.pb.go will differ" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/out"

# Build the plugins at the versions go.mod pins. GOWORK=off keeps the
# workspace's other modules from changing which versions are used.
(cd "$root" && GOWORK=off go build -o "$work/bin/" \
	google.golang.org/protobuf/cmd/protoc-gen-go \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc)

mapfile -t protos < <(cd "$root/proto" && find . -name '*.proto' -type f | sed 's|^\./||' | LC_ALL=C sort)
if [[ ${#protos[@]} -eq 0 ]]; then
	echo "no .proto files under $root/proto" >&2
	exit 1
fi

(cd "$root/proto" && protoc \
	-I . \
	--plugin=protoc-gen-go="$work/bin/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$work/bin/protoc-gen-go-grpc" \
	--go_out="$work/out" --go_opt=module="$module" \
	--go-grpc_out="$work/out" --go-grpc_opt=module="$module" \
	"${protos[@]}")

mkdir -p "$out"
if [[ "$(cd "$out" && pwd)" == "$root" ]]; then
	# Remove generated files whose proto is gone (never anything under proto/).
	find "$root" -path "$root/proto" -prune -o -name '*.pb.go' -type f -print0 | xargs -0 -r rm -f
fi
(cd "$work/out" && find . -name '*.pb.go' -type f -print0) | while IFS= read -r -d '' f; do
	mkdir -p "$out/$(dirname "$f")"
	cp "$work/out/$f" "$out/$f"
done
