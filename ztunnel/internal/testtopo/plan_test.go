package testtopo

import (
	"net/netip"
	"testing"
)

func TestAddressPlan(t *testing.T) {
	tests := []struct {
		name                 string
		v6                   bool
		node, pod            int
		wantNode, wantPod    string
		wantCIDR, wantFabric string
	}{
		{"IPv4 first pod of node 1", false, 1, 1, "10.10.0.1", "10.10.1.2", "10.10.1.0/24", "10.10.0.0/24"},
		{"IPv4 last pod of node 254", false, 254, 253, "10.10.0.254", "10.10.254.254", "10.10.254.0/24", "10.10.0.0/24"},
		{"IPv6 first pod of node 1", true, 1, 1, "fd00:a::1", "fd00:a:1::2", "fd00:a:1::/64", "fd00:a::/64"},
		{"IPv6 pod 9 of node 2", true, 2, 9, "fd00:a::2", "fd00:a:2::a", "fd00:a:2::/64", "fd00:a::/64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nodeAddr(tc.node, tc.v6); got != netip.MustParseAddr(tc.wantNode) {
				t.Errorf("nodeAddr(%d) = %v, want %v", tc.node, got, tc.wantNode)
			}
			p := podAddr(tc.node, tc.pod, tc.v6)
			if p != netip.MustParseAddr(tc.wantPod) {
				t.Errorf("podAddr(%d, %d) = %v, want %v", tc.node, tc.pod, p, tc.wantPod)
			}
			cidr := podCIDR(tc.node, tc.v6)
			if cidr != netip.MustParsePrefix(tc.wantCIDR) {
				t.Errorf("podCIDR(%d) = %v, want %v", tc.node, cidr, tc.wantCIDR)
			}
			if !cidr.Contains(p) {
				t.Errorf("pod address %v is outside its node's range %v", p, cidr)
			}
			fabric := fabricPrefix(tc.v6)
			if fabric != netip.MustParsePrefix(tc.wantFabric) {
				t.Errorf("fabricPrefix = %v, want %v", fabric, tc.wantFabric)
			}
			if !fabric.Contains(nodeAddr(tc.node, tc.v6)) || fabric.Contains(p) {
				t.Errorf("fabric %v must hold node %v and not pod %v", fabric, nodeAddr(tc.node, tc.v6), p)
			}
		})
	}
}

func TestNamesAndOwnerPID(t *testing.T) {
	base := NamePrefix + "4242-3-"
	tests := []struct {
		name    string
		ns      string
		wantPID int
		wantOK  bool
	}{
		{"fabric", nsName(base, 0, 0), 4242, true},
		{"node", nsName(base, 2, 0), 4242, true},
		{"pod", nsName(base, 2, 7), 4242, true},
		{"other package's netns", "ambit-sock-4242-1", 0, false},
		{"no pid", NamePrefix + "fabric", 0, false},
		{"prefix only", NamePrefix, 0, false},
		{"cni netns", "cni-1234-5678", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pid, ok := ownerPID(tc.ns)
			if pid != tc.wantPID || ok != tc.wantOK {
				t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", tc.ns, pid, ok, tc.wantPID, tc.wantOK)
			}
		})
	}
	if got, want := nsName(base, 2, 7), base+"node2-pod7"; got != want {
		t.Errorf("pod netns name = %q, want %q", got, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name      string
		in        Options
		wantNodes int
		wantErr   bool
	}{
		{"zero means two nodes", Options{}, 2, false},
		{"three nodes", Options{Nodes: 3, PodsPerNode: 4}, 3, false},
		{"too many nodes", Options{Nodes: MaxNodes + 1}, 0, true},
		{"negative nodes", Options{Nodes: -1}, 0, true},
		{"too many pods", Options{Nodes: 1, PodsPerNode: MaxPodsPerNode + 1}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.validate()
			if (err != nil) != tc.wantErr {
				t.Fatalf("validate(%+v) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if err == nil && got.Nodes != tc.wantNodes {
				t.Errorf("Nodes = %d, want %d", got.Nodes, tc.wantNodes)
			}
		})
	}
}
