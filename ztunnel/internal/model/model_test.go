package model

import (
	"net/netip"
	"testing"
)

func TestAddressIn(t *testing.T) {
	dual := Workload{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}}
	v6only := Workload{Addresses: []netip.Addr{netip.MustParseAddr("fd00::2")}}
	cases := []struct {
		name string
		w    Workload
		like string
		want string
		ok   bool
	}{
		{"IPv4 from dual stack", dual, "10.96.0.1", "10.0.0.1", true},
		{"IPv6 from dual stack", dual, "fd00:96::1", "fd00::1", true},
		{"IPv4-mapped counts as IPv4", dual, "::ffff:10.96.0.1", "10.0.0.1", true},
		{"IPv4 wanted, only IPv6: first address", v6only, "10.96.0.1", "fd00::2", true},
		{"no address", Workload{}, "fd00:96::1", "invalid IP", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.w.AddressIn(netip.MustParseAddr(tc.like))
			if ok != tc.ok || got.String() != tc.want {
				t.Fatalf("AddressIn(%s) = %v, %v; want %s, %v", tc.like, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParsePort(t *testing.T) {
	for in, want := range map[string]uint16{"80": 80, "65535": 65535} {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"0", "65536", "http", "-1", ""} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) accepted", bad)
		}
	}
}

func TestIdentityAndWaypoint(t *testing.T) {
	w := Workload{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "sa1"}
	if got := w.Identity().String(); got != "spiffe://cluster.local/ns/ns1/sa/sa1" {
		t.Errorf("Identity = %s", got)
	}
	for addr, want := range map[string]string{"10.10.3.9": "10.10.3.9:15008", "fd00::9": "[fd00::9]:15008"} {
		if got := (Waypoint{Address: netip.MustParseAddr(addr), Port: 15008}).String(); got != want {
			t.Errorf("Waypoint(%s) = %s, want %s", addr, got, want)
		}
	}
}
