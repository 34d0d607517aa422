package inbound

import (
	"net/netip"
	"testing"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/model"
)

func TestClientAddr(t *testing.T) {
	ap := netip.MustParseAddrPort
	alice := identity.ID{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "alice"}
	bob := identity.ID{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "bob"}
	// The state: 10.10.1.2 / fd00:a:1::2 run as alice, 10.10.1.7 as bob.
	workloads := map[netip.Addr]model.Workload{}
	for ip, sa := range map[string]string{"10.10.1.2": "alice", "fd00:a:1::2": "alice", "10.10.1.7": "bob"} {
		workloads[netip.MustParseAddr(ip)] = model.Workload{Namespace: "ns1", ServiceAccount: sa, TrustDomain: "cluster.local"}
	}
	byIP := func(ip netip.Addr) (model.Workload, bool) { w, ok := workloads[ip]; return w, ok }
	cases := []struct {
		name      string
		source    identity.ID // proved by the peer's certificate
		src, peer string      // src "" = no Forwarded for=
		dst, want string
	}{
		{"IPv4 Forwarded for of the proved identity wins", alice, "10.10.1.2:4000", "10.10.3.9:5000", "10.10.2.2:8080", "10.10.1.2:4000"},
		{"IPv6 Forwarded for of the proved identity wins", alice, "[fd00:a:1::2]:4000", "[fd00:a:3::9]:5000", "[fd00:a:2::2]:8080", "[fd00:a:1::2]:4000"},
		{"IPv4 no Forwarded: the peer", alice, "", "10.10.1.2:5000", "10.10.2.2:8080", "10.10.1.2:5000"},
		{"IPv6 no Forwarded: the peer", alice, "", "[fd00:a:1::2]:5000", "[fd00:a:2::2]:8080", "[fd00:a:1::2]:5000"},
		{"IPv4-mapped Forwarded is unmapped", alice, "[::ffff:10.10.1.2]:4000", "10.10.3.9:5000", "10.10.2.2:8080", "10.10.1.2:4000"},
		{"IPv6 Forwarded to an IPv4 destination: the peer", alice, "[fd00:a:1::2]:4000", "10.10.1.2:5000", "10.10.2.2:8080", "10.10.1.2:5000"},
		{"IPv4 Forwarded to an IPv6 destination: the peer", alice, "10.10.1.2:4000", "[fd00:a:1::2]:5000", "[fd00:a:2::2]:8080", "[fd00:a:1::2]:5000"},
		{"spoofed: another identity's IP is ignored", bob, "10.10.1.2:4000", "10.10.1.7:5000", "10.10.2.2:8080", "10.10.1.7:5000"},
		{"spoofed: an IP unknown to the state is ignored", alice, "10.99.0.1:4000", "10.10.1.2:5000", "10.10.2.2:8080", "10.10.1.2:5000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := hbone.Request{SourceID: tc.source, Peer: ap(tc.peer), Dst: ap(tc.dst)}
			if tc.src != "" {
				r.Src = ap(tc.src)
			}
			if got := clientAddr(r, byIP); got != ap(tc.want) {
				t.Fatalf("clientAddr = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestForwardedHost(t *testing.T) {
	els, err := hbone.ParseForwarded(`for="[fd00::1]:80", for=10.0.0.1;host=echo.ns.svc.cluster.local`)
	if err != nil {
		t.Fatal(err)
	}
	if got := forwardedHost(els); got != "echo.ns.svc.cluster.local" {
		t.Fatalf("forwardedHost = %q", got)
	}
	if got := forwardedHost(nil); got != "" {
		t.Fatalf("forwardedHost(nil) = %q", got)
	}
}
