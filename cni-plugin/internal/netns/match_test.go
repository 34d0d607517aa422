package netns

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	a := netip.MustParseAddr
	podA := Key{Dev: 4, Ino: 100}
	podB := Key{Dev: 4, Ino: 200}
	node := Key{Dev: 4, Ino: 1}
	cands := map[Key]Candidate{
		node: {PID: 1, Addrs: []netip.Addr{a("127.0.0.1"), a("192.168.1.10"), a("10.244.1.1"), a("fd00:244:1::1")}},
		podA: {PID: 10, Addrs: []netip.Addr{a("127.0.0.1"), a("::1"), a("10.244.1.5"), a("fd00:244:1::5"), a("fe80::1")}},
		podB: {PID: 20, Addrs: []netip.Addr{a("127.0.0.1"), a("10.244.1.6")}},
	}
	dup := map[Key]Candidate{
		podA: {PID: 10, Addrs: []netip.Addr{a("10.244.1.5"), a("fd00:244:1::5")}},
		podB: {PID: 20, Addrs: []netip.Addr{a("10.244.1.5")}},
	}
	split := map[Key]Candidate{
		podA: {PID: 10, Addrs: []netip.Addr{a("10.244.1.5")}},
		podB: {PID: 20, Addrs: []netip.Addr{a("fd00:244:1::5")}},
	}
	cases := []struct {
		name    string
		cands   map[Key]Candidate
		ips     []netip.Addr
		want    Key
		wantErr error
	}{
		{name: "IPv4 pod", cands: cands, ips: []netip.Addr{a("10.244.1.6")}, want: podB},
		{name: "IPv6 pod", cands: cands, ips: []netip.Addr{a("fd00:244:1::5")}, want: podA},
		{name: "dual-stack pod", cands: cands, ips: []netip.Addr{a("10.244.1.5"), a("fd00:244:1::5")}, want: podA},
		{name: "IPv4-mapped IPv6 form matches", cands: cands, ips: []netip.Addr{a("::ffff:10.244.1.6")}, want: podB},
		{name: "unknown IPv4", cands: cands, ips: []netip.Addr{a("10.244.2.9")}, wantErr: ErrNotFound},
		{name: "unknown IPv6", cands: cands, ips: []netip.Addr{a("fd00:244:2::9")}, wantErr: ErrNotFound},
		{name: "no IPs", cands: cands, wantErr: ErrNotFound},
		{name: "no namespaces", cands: nil, ips: []netip.Addr{a("10.244.1.5")}, wantErr: ErrNotFound},
		{name: "IPv4 in two namespaces", cands: dup, ips: []netip.Addr{a("10.244.1.5")}, wantErr: ErrAmbiguous},
		{name: "families in two namespaces", cands: split, ips: []netip.Addr{a("10.244.1.5"), a("fd00:244:1::5")}, wantErr: ErrAmbiguous},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Match(tc.cands, tc.ips)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Match = %v, %v; want %v", got, err, tc.wantErr)
				}
				if tc.wantErr == ErrAmbiguous && (!strings.Contains(err.Error(), "pid 10") || !strings.Contains(err.Error(), "pid 20")) {
					t.Fatalf("ambiguity error %q does not name both namespaces", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Match = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
