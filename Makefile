# Ambit — build, test and demo entry points. `make help` lists them.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
OUT := $(CURDIR)/_output
export CGO_ENABLED ?= 0
# Build tags of every shipped binary. grpcnotrace drops grpc's
# golang.org/x/net/trace and with it text/template, whose reflective method
# calls keep every exported method alive: 6-7 MB less binary and ~3 MB less
# RSS per ztunnel (docs/benchmarks.md). ztunnel/bench/benchkit.BuildTags
# mirrors it for the benches.
GOTAGS ?= grpcnotrace

# Modules in the workspace, as package patterns from the repo root.
MODULES := ./api/... ./pkg/... ./ztunnel/... ./controlplane/... ./cni-plugin/... ./waypoint/... ./e2e/... ./ambitctl/... ./deploy/...
# Static binaries built into bin/.
CMDS := ./e2e/cmd/ambit-localcluster ./e2e/cmd/ambit-testapp ./e2e/cmd/ambit-pause ./e2e/cmd/ambit-testreport \
        ./controlplane/cmd/ambit-controlplane ./ztunnel/cmd/ztunnel ./ztunnel/cmd/ztunnel-admin \
        ./cni-plugin/cmd/ambit-cni ./cni-plugin/cmd/ambit-cni-lookup ./cni-plugin/cmd/ambit-node-agent \
        ./ambitctl/cmd/ambitctl ./waypoint/cmd/ambit-waypoint
# Host tools the node agent image carries (the in-pod rules are written with
# iptables, nf_tables backend), with their symlinks and shared libraries.
IPTABLES_FILES := /usr/sbin/iptables /usr/sbin/iptables-save /usr/sbin/iptables-restore \
        /usr/sbin/ip6tables /usr/sbin/ip6tables-save /usr/sbin/ip6tables-restore \
        /usr/sbin/iptables-nft /usr/sbin/iptables-nft-save /usr/sbin/iptables-nft-restore \
        /usr/sbin/ip6tables-nft /usr/sbin/ip6tables-nft-save /usr/sbin/ip6tables-nft-restore \
        /usr/lib/x86_64-linux-gnu/xtables /etc/protocols

.PHONY: help deps k8s build images generate manifests verify test test-unit test-privileged test-harness test-e2e \
        cluster-up cluster-down demo demo-down clean bench-l4 bench-l7

help: ## list targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## install the Debian packages (root)
	@hack/deps.sh

k8s: ## build the Kubernetes binaries once, cached outside the repo by version
	@e2e/hack/build-k8s.sh

build: ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -tags "$(GOTAGS)" -o $(BIN)/ $(CMDS)

images: build ## pack the binaries that run in pods as image tarballs
	@mkdir -p $(OUT)/images
	$(BIN)/ambit-localcluster image-build --bin $(BIN)/ambit-testapp --ref localhost/ambit-testapp:dev --out $(OUT)/images/ambit-testapp.tar
	$(BIN)/ambit-localcluster image-build --bin $(BIN)/ambit-controlplane --ref localhost/ambit-controlplane:dev --out $(OUT)/images/ambit-controlplane.tar
	$(BIN)/ambit-localcluster image-build --bin $(BIN)/ztunnel --bin $(BIN)/ztunnel-admin --ref localhost/ambit-ztunnel:dev --out $(OUT)/images/ambit-ztunnel.tar
	$(BIN)/ambit-localcluster image-build --bin $(BIN)/ambit-node-agent --bin $(BIN)/ambit-cni --bin $(BIN)/ambit-cni-lookup \
		$(addprefix --host-file ,$(IPTABLES_FILES)) --ref localhost/ambit-node-agent:dev --out $(OUT)/images/ambit-node-agent.tar
	$(BIN)/ambit-localcluster image-build --bin $(BIN)/ambit-waypoint --ref localhost/ambit-waypoint:dev --out $(OUT)/images/ambit-waypoint.tar

generate: ## regenerate the Go code from api/ protos
	@api/hack/generate.sh

manifests: ## regenerate deploy/manifests/ambit.yaml from the Helm chart deploy/charts/ambit
	@$(GO) run ./deploy/cmd/ambit-render > deploy/manifests/ambit.yaml.tmp || { rm -f deploy/manifests/ambit.yaml.tmp; exit 1; }
	@mv deploy/manifests/ambit.yaml.tmp deploy/manifests/ambit.yaml

verify: ## gofmt, go vet and generated-code freshness
	@hack/verify.sh

test: ## everything CI runs: set-up, verify, unit, privileged, harness and e2e tiers
	@hack/test.sh

test-unit: ## unit tier (no root, no cluster)
	@TIERS=unit hack/test.sh

test-privileged: ## privileged tier (root; real netns and iptables)
	@TIERS=privileged hack/test.sh

test-harness: ## local-cluster harness tier: up, down, up leaves no trace
	@TIERS=harness hack/test.sh

test-e2e: ## e2e tier on a fresh 2-node local cluster
	@TIERS=e2e hack/test.sh

bench-l4: ## ztunnel L4 benchmark (root; netns; prints a markdown table)
	cd ztunnel && $(GO) run ./bench/l4 $(BENCH_ARGS)

bench-l7: ## waypoint L7 benchmark (root; netns, HAProxy; prints a markdown table)
	cd waypoint && $(GO) run ./bench/l7 $(BENCH_ARGS)

cluster-up: deps k8s images ## bring up a 2-node local cluster (name "ambit")
	$(BIN)/ambit-localcluster up --name ambit --nodes 2 --image $(OUT)/images/ambit-testapp.tar \
		--image $(OUT)/images/ambit-controlplane.tar --image $(OUT)/images/ambit-ztunnel.tar \
		--image $(OUT)/images/ambit-node-agent.tar --image $(OUT)/images/ambit-waypoint.tar

cluster-down: ## tear the local cluster down
	@if [ -x $(BIN)/ambit-localcluster ]; then $(BIN)/ambit-localcluster down --name ambit; fi

demo: ## the main job: local cluster + sample app, traffic shown
	@hack/demo.sh

demo-down: cluster-down ## remove the demo

clean: ## remove build outputs (not the cached Kubernetes build)
	rm -rf $(BIN) $(OUT)
