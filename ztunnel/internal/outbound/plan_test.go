package outbound

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"ambit.dev/pkg/identity"

	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

const fixture = `
workloads:
- {uid: client, name: client, namespace: ns1, serviceAccount: sa1, node: n1, protocol: HBONE,
   addresses: [10.10.1.2, "fd00:10:1::2"]}
- {uid: server, name: server, namespace: ns2, serviceAccount: srv, node: n2, protocol: HBONE,
   addresses: [10.10.2.2, "fd00:10:2::2"]}
- {uid: plain, name: plain, namespace: ns2, node: n2, protocol: NONE,
   addresses: [10.10.2.9, "fd00:10:2::9"]}
- {uid: wp, name: waypoint, namespace: ns2, serviceAccount: waypoint, node: n2, protocol: HBONE,
   addresses: [10.10.3.9, "fd00:10:3::9"]}
- {uid: behind-wp, name: behind, namespace: ns2, serviceAccount: b, node: n2, protocol: HBONE,
   addresses: [10.10.2.7, "fd00:10:2::7"], waypoint: {address: 10.10.3.9}}
- {uid: e1, name: echo-1, namespace: ns2, serviceAccount: echo, node: n2, protocol: HBONE,
   addresses: [10.10.2.3, "fd00:10:2::3"], services: {ns2/echo.ns2.svc: {80: 9090}}}
- {uid: e2, name: echo-2, namespace: ns2, serviceAccount: echo, node: n1, protocol: HBONE,
   addresses: [10.10.1.3, "fd00:10:1::3"], services: {ns2/echo.ns2.svc: {}}}
- {uid: e3, name: echo-3, namespace: ns2, serviceAccount: echo, node: n1, protocol: HBONE, status: UNHEALTHY,
   addresses: [10.10.1.4, "fd00:10:1::4"], services: {ns2/echo.ns2.svc: {}}}
- {uid: down, name: down, namespace: ns2, node: n1, protocol: HBONE, status: UNHEALTHY,
   addresses: [10.10.1.5], services: {ns2/down.ns2.svc: {}}}
- {uid: legacy-ep, name: legacy, namespace: ns3, node: n1, protocol: NONE,
   addresses: [10.10.1.6, "fd00:10:1::6"], services: {ns3/legacy.ns3.svc: {}}}
- {uid: lost-wp, name: lost, namespace: ns2, node: n2, protocol: HBONE,
   addresses: [10.10.2.8], waypoint: {address: 10.10.9.9}}
services:
- {name: echo, namespace: ns2, hostname: echo.ns2.svc, vips: [10.96.0.10, "fd00:96::10"], ports: {80: 8080, 443: 8443}}
- {name: down, namespace: ns2, hostname: down.ns2.svc, vips: [10.96.0.11, "fd00:96::11"], ports: {80: 8080}}
- {name: legacy, namespace: ns3, hostname: legacy.ns3.svc, vips: [10.96.0.12, "fd00:96::12"], ports: {80: 8000}}
- {name: mid, namespace: ns2, hostname: mid.ns2.svc, vips: [10.96.0.13, "fd00:96::13"], ports: {80: 8080},
   waypoint: {address: "fd00:10:3::9", port: 15008}}
`

func snapshot(t *testing.T) *state.Snapshot {
	t.Helper()
	s, err := state.Parse([]byte(fixture), "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func workload(t *testing.T, s *state.Snapshot, uid string) model.Workload {
	t.Helper()
	w, ok := s.WorkloadByUID(uid)
	if !ok {
		t.Fatalf("no workload %s", uid)
	}
	return w
}

func TestPlan(t *testing.T) {
	snap := snapshot(t)
	client := workload(t, snap, "client")
	waypoint := workload(t, snap, "wp")
	first := func(int) int { return 0 }
	ap := netip.MustParseAddrPort
	cases := []struct {
		name string
		src  model.Workload
		dst  string
		pick Picker
		want Route // Reason, DestWorkload and Service compared separately
		// wantDest is the UID of Route.DestWorkload ("" for none);
		// wantSvc the key of Route.Service.
		wantDest, wantSvc string
	}{
		{name: "IPv4 unknown destination", src: client, dst: "192.0.2.1:443",
			want: Route{Kind: Passthrough, Dst: ap("192.0.2.1:443")}},
		{name: "IPv6 unknown destination", src: client, dst: "[2001:db8::1]:443",
			want: Route{Kind: Passthrough, Dst: ap("[2001:db8::1]:443")}},
		{name: "IPv4-mapped unknown destination is unmapped", src: client, dst: "[::ffff:192.0.2.1]:443",
			want: Route{Kind: Passthrough, Dst: ap("192.0.2.1:443")}},
		{name: "IPv4 destination not in mesh", src: client, dst: "10.10.2.9:5432",
			want: Route{Kind: Passthrough, Dst: ap("10.10.2.9:5432")}, wantDest: "plain"},
		{name: "IPv6 destination not in mesh", src: client, dst: "[fd00:10:2::9]:5432",
			want: Route{Kind: Passthrough, Dst: ap("[fd00:10:2::9]:5432")}, wantDest: "plain"},
		{name: "IPv4 mesh pod direct", src: client, dst: "10.10.2.2:8080",
			want: Route{Kind: HBONE, HBONEAddr: ap("10.10.2.2:15008"), Authority: ap("10.10.2.2:8080"),
				DestID: id("ns2", "srv")}, wantDest: "server"},
		{name: "IPv6 mesh pod direct", src: client, dst: "[fd00:10:2::2]:8080",
			want: Route{Kind: HBONE, HBONEAddr: ap("[fd00:10:2::2]:15008"), Authority: ap("[fd00:10:2::2]:8080"),
				DestID: id("ns2", "srv")}, wantDest: "server"},
		{name: "IPv4 VIP, endpoint with its own target port", src: client, dst: "10.96.0.10:80", pick: first,
			want: Route{Kind: HBONE, HBONEAddr: ap("10.10.2.3:15008"), Authority: ap("10.10.2.3:9090"),
				DestID: id("ns2", "echo"), ForwardedHost: "echo.ns2.svc"}, wantDest: "e1", wantSvc: "ns2/echo.ns2.svc"},
		{name: "IPv6 VIP, endpoint with its own target port", src: client, dst: "[fd00:96::10]:80", pick: first,
			want: Route{Kind: HBONE, HBONEAddr: ap("[fd00:10:2::3]:15008"), Authority: ap("[fd00:10:2::3]:9090"),
				DestID: id("ns2", "echo"), ForwardedHost: "echo.ns2.svc"}, wantDest: "e1", wantSvc: "ns2/echo.ns2.svc"},
		{name: "IPv4 VIP, service target port", src: client, dst: "10.96.0.10:443", pick: func(int) int { return 1 },
			want: Route{Kind: HBONE, HBONEAddr: ap("10.10.1.3:15008"), Authority: ap("10.10.1.3:8443"),
				DestID: id("ns2", "echo"), ForwardedHost: "echo.ns2.svc"}, wantDest: "e2", wantSvc: "ns2/echo.ns2.svc"},
		{name: "IPv6 VIP, service target port", src: client, dst: "[fd00:96::10]:443", pick: func(int) int { return 1 },
			want: Route{Kind: HBONE, HBONEAddr: ap("[fd00:10:1::3]:15008"), Authority: ap("[fd00:10:1::3]:8443"),
				DestID: id("ns2", "echo"), ForwardedHost: "echo.ns2.svc"}, wantDest: "e2", wantSvc: "ns2/echo.ns2.svc"},
		{name: "IPv4 VIP unknown port", src: client, dst: "10.96.0.10:81", want: Route{Kind: Deny}},
		{name: "IPv6 VIP unknown port", src: client, dst: "[fd00:96::10]:81", want: Route{Kind: Deny}},
		{name: "IPv4 VIP without healthy endpoint", src: client, dst: "10.96.0.11:80", want: Route{Kind: Deny}},
		{name: "IPv6 VIP without healthy endpoint", src: client, dst: "[fd00:96::11]:80", want: Route{Kind: Deny}},
		{name: "IPv4 VIP with non-mesh endpoint", src: client, dst: "10.96.0.12:80",
			want: Route{Kind: Passthrough, Dst: ap("10.10.1.6:8000")}, wantDest: "legacy-ep", wantSvc: "ns3/legacy.ns3.svc"},
		{name: "IPv6 VIP with non-mesh endpoint", src: client, dst: "[fd00:96::12]:80",
			want: Route{Kind: Passthrough, Dst: ap("[fd00:10:1::6]:8000")}, wantDest: "legacy-ep", wantSvc: "ns3/legacy.ns3.svc"},
		{name: "IPv4 VIP with service waypoint", src: client, dst: "10.96.0.13:80",
			want: Route{Kind: Waypoint, HBONEAddr: ap("[fd00:10:3::9]:15008"), Authority: ap("10.96.0.13:80"),
				DestID: id("ns2", "waypoint"), ForwardedHost: "mid.ns2.svc"}, wantDest: "wp", wantSvc: "ns2/mid.ns2.svc"},
		{name: "IPv6 VIP with service waypoint", src: client, dst: "[fd00:96::13]:80",
			want: Route{Kind: Waypoint, HBONEAddr: ap("[fd00:10:3::9]:15008"), Authority: ap("[fd00:96::13]:80"),
				DestID: id("ns2", "waypoint"), ForwardedHost: "mid.ns2.svc"}, wantDest: "wp", wantSvc: "ns2/mid.ns2.svc"},
		{name: "IPv4 pod with workload waypoint", src: client, dst: "10.10.2.7:8080",
			want: Route{Kind: Waypoint, HBONEAddr: ap("10.10.3.9:15008"), Authority: ap("10.10.2.7:8080"),
				DestID: id("ns2", "waypoint")}, wantDest: "wp"},
		{name: "IPv6 pod with workload waypoint", src: client, dst: "[fd00:10:2::7]:8080",
			want: Route{Kind: Waypoint, HBONEAddr: ap("10.10.3.9:15008"), Authority: ap("[fd00:10:2::7]:8080"),
				DestID: id("ns2", "waypoint")}, wantDest: "wp"},
		{name: "IPv4 the waypoint itself goes direct", src: waypoint, dst: "10.10.2.7:8080",
			want: Route{Kind: HBONE, HBONEAddr: ap("10.10.2.7:15008"), Authority: ap("10.10.2.7:8080"),
				DestID: id("ns2", "b")}, wantDest: "behind-wp"},
		{name: "IPv6 the service waypoint itself does not loop back to itself", src: waypoint, dst: "[fd00:96::13]:80",
			want: Route{Kind: Deny}},
		{name: "IPv4 waypoint not in the state", src: client, dst: "10.10.2.8:80", want: Route{Kind: Deny}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewPlanner(tc.pick).Plan(snap, tc.src, ap(tc.dst))
			if (err != nil) != (tc.want.Kind == Deny) || (err != nil && !errors.Is(err, ErrDenied)) {
				t.Fatalf("error = %v for kind %v", err, got.Kind)
			}
			if got.Reason == "" && got.Kind != HBONE && got.Kind != Waypoint {
				t.Errorf("kind %v without a reason", got.Kind)
			}
			var dest, svc string
			if got.DestWorkload != nil {
				dest = got.DestWorkload.UID
			}
			if got.Service != nil {
				svc = got.Service.Key()
			}
			if dest != tc.wantDest || svc != tc.wantSvc {
				t.Errorf("DestWorkload %q Service %q, want %q %q", dest, svc, tc.wantDest, tc.wantSvc)
			}
			got.Reason, got.DestWorkload, got.Service = "", nil, nil
			if got != tc.want {
				t.Errorf("Plan(%s) =\n  %+v\nwant\n  %+v", tc.dst, got, tc.want)
			}
		})
	}
}

func TestPlanDenyReasons(t *testing.T) {
	snap := snapshot(t)
	client := workload(t, snap, "client")
	for dst, want := range map[string]string{
		"10.96.0.10:81":    "service ns2/echo.ns2.svc has no port 81 (ports: [80 443])",
		"[fd00:96::11]:80": "service ns2/down.ns2.svc (VIP [fd00:96::11]:80) has no healthy endpoint",
		"10.10.2.8:80":     "waypoint 10.10.9.9:15008 of workload ns2/lost (lost-wp) is not a known mesh workload",
	} {
		r, err := Plan(snap, client, netip.MustParseAddrPort(dst))
		if r.Kind != Deny || err == nil || !strings.Contains(r.Reason, want) || !strings.Contains(err.Error(), want) {
			t.Errorf("Plan(%s) = %v %q, %v; want a deny saying %q", dst, r.Kind, r.Reason, err, want)
		}
	}
}

func TestPlanSkipsUnhealthyAndBalances(t *testing.T) {
	snap := snapshot(t)
	client := workload(t, snap, "client")
	p := NewPlanner(RoundRobin())
	counts := map[string]int{}
	for range 10 {
		r, err := p.Plan(snap, client, netip.MustParseAddrPort("10.96.0.10:80"))
		if err != nil {
			t.Fatal(err)
		}
		counts[r.DestWorkload.UID]++
	}
	if counts["e1"] != 5 || counts["e2"] != 5 || counts["e3"] != 0 {
		t.Fatalf("round robin over 10 connections = %v, want e1:5 e2:5 and never the unhealthy e3", counts)
	}
}

func id(ns, sa string) identity.ID {
	return identity.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
}
