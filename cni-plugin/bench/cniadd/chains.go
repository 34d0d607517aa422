package main

import (
	"encoding/json"
	"fmt"
)

// networkName is the network of every chain: they share one host-local
// store, so a pod of one chain gets the address the previous pod (of any
// chain) released.
const networkName = "ambitbench"

// bridgeName is the bridge the bridge plugin creates in the test's host
// netns.
const bridgeName = "ambitbench0"

// Pod subnets (one pod exists at a time; DEL releases its address).
const (
	subnet4 = "10.254.88.0/24"
	subnet6 = "fd00:254:88::/64"
)

// chainKind is one of the measured chains.
type chainKind int

const (
	chainBaseline    chainKind = iota // bridge + host-local + portmap
	chainNotEnrolled                  // + ambit-cni, namespace not enrolled
	chainEnrolled                     // + ambit-cni, namespace enrolled
)

var chainKinds = []chainKind{chainBaseline, chainNotEnrolled, chainEnrolled}

// String is the chain's row label.
func (k chainKind) String() string {
	return [...]string{
		"bridge+host-local+portmap (baseline)",
		"+ ambit-cni, pod not enrolled",
		"+ ambit-cni, pod enrolled (rules + ztunnel ack)",
	}[k]
}

// key is a short name for pod names and container IDs.
func (k chainKind) key() string { return [...]string{"base", "off", "on"}[k] }

// namespace is the Kubernetes namespace of the chain's pods.
func (k chainKind) namespace() string {
	return [...]string{"bench-base", "bench-plain", "bench-mesh"}[k]
}

// chainSpec is what a network configuration list is built from.
type chainSpec struct {
	// IPAMDir is host-local's dataDir.
	IPAMDir string
	// DualStack adds an IPv6 range (the local cluster is IPv4 only).
	DualStack bool
	// AgentSocket, if set, appends ambit-cni calling the agent there.
	AgentSocket string
}

// conflist returns the network configuration list of spec: the local
// cluster's primary network (bridge + host-local + portmap, as in
// e2e/internal/cluster/templates.go, on the bench's bridge and subnet)
// followed, when spec names an agent socket, by ambit-cni as the node
// agent's installer appends it.
func conflist(spec chainSpec) ([]byte, error) {
	ranges := []any{[]any{map[string]any{"subnet": subnet4}}}
	routes := []any{map[string]any{"dst": "0.0.0.0/0"}}
	if spec.DualStack {
		ranges = append(ranges, []any{map[string]any{"subnet": subnet6}})
		routes = append(routes, map[string]any{"dst": "::/0"})
	}
	plugins := []any{
		map[string]any{
			"type": "bridge", "bridge": bridgeName, "isGateway": true, "ipMasq": false, "hairpinMode": true,
			"ipam": map[string]any{"type": "host-local", "dataDir": spec.IPAMDir, "ranges": ranges, "routes": routes},
		},
		map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
	}
	if spec.AgentSocket != "" {
		plugins = append(plugins, map[string]any{
			"type": "ambit-cni", "agentSocket": spec.AgentSocket, "agentTimeout": "30s",
			"excludeNamespaces": []string{"kube-system"}, "logLevel": "info",
		})
	}
	b, err := json.MarshalIndent(map[string]any{"cniVersion": "1.0.0", "name": networkName, "plugins": plugins}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	return b, nil
}
