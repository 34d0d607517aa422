package inbound

import (
	"net/netip"
	"testing"

	"ambit.dev/pkg/hbone"
)

func TestClientAddr(t *testing.T) {
	ap := netip.MustParseAddrPort
	cases := []struct {
		name      string
		src, peer string // src "" = no Forwarded for=
		dst, want string
	}{
		{"IPv4 Forwarded for wins", "10.10.1.2:4000", "10.10.3.9:5000", "10.10.2.2:8080", "10.10.1.2:4000"},
		{"IPv6 Forwarded for wins", "[fd00:a:1::2]:4000", "[fd00:a:3::9]:5000", "[fd00:a:2::2]:8080", "[fd00:a:1::2]:4000"},
		{"IPv4 no Forwarded: the peer", "", "10.10.1.2:5000", "10.10.2.2:8080", "10.10.1.2:5000"},
		{"IPv6 no Forwarded: the peer", "", "[fd00:a:1::2]:5000", "[fd00:a:2::2]:8080", "[fd00:a:1::2]:5000"},
		{"IPv4-mapped Forwarded is unmapped", "[::ffff:10.10.1.2]:4000", "10.10.3.9:5000", "10.10.2.2:8080", "10.10.1.2:4000"},
		{"IPv6 Forwarded to an IPv4 destination: the peer", "[fd00:a:1::2]:4000", "10.10.1.2:5000", "10.10.2.2:8080", "10.10.1.2:5000"},
		{"IPv4 Forwarded to an IPv6 destination: the peer", "10.10.1.2:4000", "[fd00:a:1::2]:5000", "[fd00:a:2::2]:8080", "[fd00:a:1::2]:5000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := hbone.Request{Peer: ap(tc.peer), Dst: ap(tc.dst)}
			if tc.src != "" {
				r.Src = ap(tc.src)
			}
			if got := clientAddr(r); got != ap(tc.want) {
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
