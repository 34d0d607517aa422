package testtopo

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// NamePrefix starts the name of every network namespace this package
// creates: NamePrefix + "<pid>-<seq>-...".
const NamePrefix = "ambit-tt-"

// Limits of the address plan (one octet per node and per pod).
const (
	// MaxNodes is the largest Options.Nodes: node N owns 10.10.N.0/24.
	MaxNodes = 254
	// MaxPodsPerNode is the largest number of pods on one node: pod K
	// (1-based) is 10.10.N.(K+1), .1 being left unused.
	MaxPodsPerNode = 253
)

// Addresses of the node side of every pod veth: the pod's default gateway.
var (
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	GatewayV6 = netip.MustParseAddr("fe80::1")
)

// nodeAddr returns node n's (1-based) fabric address: 10.10.0.n or
// fd00:a::n.
func nodeAddr(n int, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0: 0xfd, 3: 0x0a, 15: byte(n)})
	}
	return netip.AddrFrom4([4]byte{10, 10, 0, byte(n)})
}

// fabricPrefix returns the prefix of the fabric network.
func fabricPrefix(v6 bool) netip.Prefix {
	if v6 {
		return netip.PrefixFrom(nodeAddr(0, true), 64)
	}
	return netip.PrefixFrom(nodeAddr(0, false), 24)
}

// podCIDR returns the pod range of node n: 10.10.n.0/24 or fd00:a:n::/64.
func podCIDR(n int, v6 bool) netip.Prefix {
	if v6 {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 3: 0x0a, 5: byte(n)}), 64)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 10, byte(n), 0}), 24)
}

// podAddr returns the address of pod k (1-based) of node n: 10.10.n.(k+1)
// or fd00:a:n::(k+1).
func podAddr(n, k int, v6 bool) netip.Addr {
	if v6 {
		return netip.AddrFrom16([16]byte{0: 0xfd, 3: 0x0a, 5: byte(n), 15: byte(k + 1)})
	}
	return netip.AddrFrom4([4]byte{10, 10, byte(n), byte(k + 1)})
}

// nsName returns the netns name of a topology part: base is the
// per-topology prefix NamePrefix+"<pid>-<seq>-".
func nsName(base string, node, pod int) string {
	switch {
	case node == 0:
		return base + "fabric"
	case pod == 0:
		return fmt.Sprintf("%snode%d", base, node)
	default:
		return fmt.Sprintf("%snode%d-pod%d", base, node, pod)
	}
}

// ownerPID returns the process id embedded in a netns name this package
// created, and false for any other name.
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok {
		return 0, false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// validate checks the options and fills in defaults.
func (o Options) validate() (Options, error) {
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return o, fmt.Errorf("Options.Nodes = %d: want 1..%d", o.Nodes, MaxNodes)
	}
	if o.PodsPerNode < 0 || o.PodsPerNode > MaxPodsPerNode {
		return o, fmt.Errorf("Options.PodsPerNode = %d: want 0..%d", o.PodsPerNode, MaxPodsPerNode)
	}
	return o, nil
}
