package benchkit

import (
	"net/netip"
	"strings"
	"testing"

	"ambit.dev/ztunnel/internal/state"
)

// The workloads file a bench writes must be what ztunnel's file source
// accepts (the contract of the design note), services and waypoints
// included.
func TestWorkloadsYAMLParses(t *testing.T) {
	vip := netip.MustParseAddr("10.96.0.10")
	wp := netip.MustParseAddr("10.10.3.2")
	tests := []struct {
		name     string
		ws       []Workload
		svcs     []Service
		contains []string
	}{
		{"IPv4 client and server", []Workload{
			{UID: "uid-c", Name: "client", ServiceAccount: "client", Node: "node1", IP: netip.MustParseAddr("10.10.1.2"), Netns: "/run/netns/x-node1-pod1"},
			{UID: "uid-s", Name: "server", ServiceAccount: "server", Node: "node2", IP: netip.MustParseAddr("10.10.2.2")},
		}, nil, []string{"10.10.1.2", "netns: /run/netns/x-node1-pod1", "services: []"}},
		{"IPv6 pod", []Workload{
			{UID: "uid-6", Name: "v6", ServiceAccount: "v6", Node: "node1", IP: netip.MustParseAddr("fd00:a:1::2"), Netns: "/run/netns/y"},
		}, nil, []string{"fd00:a:1::2"}},
		{"service behind a waypoint", []Workload{
			{UID: "uid-s", Name: "server", ServiceAccount: "server", Node: "node2", IP: netip.MustParseAddr("10.10.2.2"),
				Services: map[string]map[uint16]uint16{"bench/web.bench.svc.cluster.local": {80: 8080}}},
			{UID: "uid-w", Name: "waypoint", ServiceAccount: "waypoint", Node: "node3", IP: wp},
		}, []Service{{Name: "web", Hostname: "web.bench.svc.cluster.local", VIPs: []netip.Addr{vip}, Ports: map[uint16]uint16{80: 8080, 81: 8081}, Waypoint: wp}},
			[]string{`vips: ["10.96.0.10"]`, `ports: {"80": 8080, "81": 8081}`, `waypoint: {address: "10.10.3.2"}`, `services: {"bench/web.bench.svc.cluster.local": {"80": 8080}}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y := WorkloadsYAML(tc.ws, tc.svcs)
			snap, err := state.Parse([]byte(y), "")
			if err != nil {
				t.Fatalf("ztunnel rejects the bench's workloads file: %v\n%s", err, y)
			}
			for _, want := range tc.contains {
				if !strings.Contains(y, want) {
					t.Errorf("%q missing from\n%s", want, y)
				}
			}
			if len(tc.svcs) > 0 {
				w, ok := snap.WorkloadByIP(tc.ws[0].IP)
				if !ok {
					t.Fatalf("server workload %v not found", tc.ws[0].IP)
				}
				if g := snap.Guards(w, 8080); len(g) != 1 {
					t.Errorf("port 8080 of the server has %d waypoint guards, want 1 (the service's)", len(g))
				}
				if g := snap.Guards(w, 9090); len(g) != 0 {
					t.Errorf("port 9090 (no service) has %d guards, want none", len(g))
				}
			}
		})
	}
}
