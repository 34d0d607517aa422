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
- {uid: wp-a, name: gw-a, namespace: gw, serviceAccount: gw, node: n1, protocol: HBONE,
   addresses: [10.10.4.2, "fd00:10:4::2"], services: {gw/gw.gw.svc.cluster.local: {}}}
- {uid: wp-b, name: gw-b, namespace: gw, serviceAccount: gw, node: n2, protocol: HBONE,
   addresses: [10.10.4.3, "fd00:10:4::3"], services: {gw/gw.gw.svc.cluster.local: {}}}
- {uid: wp-c, name: gw-c, namespace: gw, serviceAccount: gw, node: n2, protocol: HBONE, status: UNHEALTHY,
   addresses: [10.10.4.4, "fd00:10:4::4"], services: {gw/gw.gw.svc.cluster.local: {}}}
- {uid: wp-dead, name: dead-gw, namespace: gw, serviceAccount: gw, node: n2, protocol: HBONE, status: UNHEALTHY,
   addresses: [10.10.4.5, "fd00:10:4::5"], services: {gw/dead.gw.svc.cluster.local: {}}}
- {uid: shop-1, name: shop-1, namespace: ns4, serviceAccount: shop, node: n2, protocol: HBONE,
   addresses: [10.10.5.2, "fd00:10:5::2"], services: {ns4/shop.ns4.svc.cluster.local: {}}}
- {uid: db, name: db, namespace: ns4, serviceAccount: db, node: n2, protocol: HBONE,
   addresses: [10.10.5.3, "fd00:10:5::3"], waypoint: {service: gw/gw.gw.svc.cluster.local}}
services:
- {name: gw, namespace: gw, hostname: gw.gw.svc.cluster.local, vips: [10.96.1.1, "fd00:96:1::1"], ports: {15008: 15008}}
- {name: dead, namespace: gw, hostname: dead.gw.svc.cluster.local, vips: [10.96.1.2, "fd00:96:1::2"], ports: {15008: 15008}}
- {name: shop, namespace: ns4, hostname: shop.ns4.svc.cluster.local, vips: [10.96.0.20, "fd00:96::20"], ports: {80: 8080},
   waypoint: {service: gw/gw.gw.svc.cluster.local}}
- {name: ghost, namespace: ns4, hostname: ghost.ns4.svc.cluster.local, vips: [10.96.0.21, "fd00:96::21"], ports: {80: 8080},
   waypoint: {service: gw/missing.gw.svc.cluster.local}}
- {name: stuck, namespace: ns4, hostname: stuck.ns4.svc.cluster.local, vips: [10.96.0.22, "fd00:96::22"], ports: {80: 8080},
   waypoint: {service: gw/dead.gw.svc.cluster.local}}
- {name: byvip, namespace: ns4, hostname: byvip.ns4.svc.cluster.local, vips: [10.96.0.23, "fd00:96::23"], ports: {80: 8080},
   waypoint: {address: 10.96.1.1, port: 15008}}
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
	wpPod := workload(t, snap, "wp-b")
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
		// Waypoints published by hostname (the control plane's form).
		{name: "IPv4 VIP with waypoint hostname picks a waypoint pod", src: client, dst: "10.96.0.20:80", pick: first,
			want: Route{Kind: Waypoint, HBONEAddr: ap("10.10.4.2:15008"), Authority: ap("10.96.0.20:80"),
				DestID: id("gw", "gw"), ForwardedHost: "shop.ns4.svc.cluster.local"}, wantDest: "wp-a", wantSvc: "ns4/shop.ns4.svc.cluster.local"},
		{name: "IPv6 VIP with waypoint hostname picks a waypoint pod", src: client, dst: "[fd00:96::20]:80", pick: func(int) int { return 1 },
			want: Route{Kind: Waypoint, HBONEAddr: ap("[fd00:10:4::3]:15008"), Authority: ap("[fd00:96::20]:80"),
				DestID: id("gw", "gw"), ForwardedHost: "shop.ns4.svc.cluster.local"}, wantDest: "wp-b", wantSvc: "ns4/shop.ns4.svc.cluster.local"},
		{name: "IPv4 VIP with waypoint given by its Service VIP", src: client, dst: "10.96.0.23:80", pick: first,
			want: Route{Kind: Waypoint, HBONEAddr: ap("10.10.4.2:15008"), Authority: ap("10.96.0.23:80"),
				DestID: id("gw", "gw"), ForwardedHost: "byvip.ns4.svc.cluster.local"}, wantDest: "wp-a", wantSvc: "ns4/byvip.ns4.svc.cluster.local"},
		{name: "IPv6 VIP with waypoint given by its Service VIP", src: client, dst: "[fd00:96::23]:80", pick: first,
			want: Route{Kind: Waypoint, HBONEAddr: ap("[fd00:10:4::2]:15008"), Authority: ap("[fd00:96::23]:80"),
				DestID: id("gw", "gw"), ForwardedHost: "byvip.ns4.svc.cluster.local"}, wantDest: "wp-a", wantSvc: "ns4/byvip.ns4.svc.cluster.local"},
		{name: "IPv4 pod with waypoint hostname", src: client, dst: "10.10.5.3:5432", pick: first,
			want: Route{Kind: Waypoint, HBONEAddr: ap("10.10.4.2:15008"), Authority: ap("10.10.5.3:5432"),
				DestID: id("gw", "gw")}, wantDest: "wp-a"},
		{name: "IPv6 pod with waypoint hostname", src: client, dst: "[fd00:10:5::3]:5432", pick: func(int) int { return 1 },
			want: Route{Kind: Waypoint, HBONEAddr: ap("[fd00:10:4::3]:15008"), Authority: ap("[fd00:10:5::3]:5432"),
				DestID: id("gw", "gw")}, wantDest: "wp-b"},
		// Dialling the pod IP of a Service behind a waypoint (on a target
		// port of the Service) still goes through the waypoint, as the
		// Service; other ports of the pod go direct.
		{name: "IPv4 pod IP of a service behind a waypoint goes through it", src: client, dst: "10.10.5.2:8080", pick: first,
			want: Route{Kind: Waypoint, HBONEAddr: ap("10.10.4.2:15008"), Authority: ap("10.96.0.20:80"),
				DestID: id("gw", "gw"), ForwardedHost: "shop.ns4.svc.cluster.local"}, wantDest: "wp-a", wantSvc: "ns4/shop.ns4.svc.cluster.local"},
		{name: "IPv6 pod IP of a service behind a waypoint goes through it", src: client, dst: "[fd00:10:5::2]:8080", pick: first,
			want: Route{Kind: Waypoint, HBONEAddr: ap("[fd00:10:4::2]:15008"), Authority: ap("[fd00:96::20]:80"),
				DestID: id("gw", "gw"), ForwardedHost: "shop.ns4.svc.cluster.local"}, wantDest: "wp-a", wantSvc: "ns4/shop.ns4.svc.cluster.local"},
		{name: "IPv4 another port of that pod goes direct", src: client, dst: "10.10.5.2:9999",
			want: Route{Kind: HBONE, HBONEAddr: ap("10.10.5.2:15008"), Authority: ap("10.10.5.2:9999"),
				DestID: id("ns4", "shop")}, wantDest: "shop-1"},
		{name: "IPv6 another port of that pod goes direct", src: client, dst: "[fd00:10:5::2]:9999",
			want: Route{Kind: HBONE, HBONEAddr: ap("[fd00:10:5::2]:15008"), Authority: ap("[fd00:10:5::2]:9999"),
				DestID: id("ns4", "shop")}, wantDest: "shop-1"},
		{name: "IPv4 waypoint hostname unknown", src: client, dst: "10.96.0.21:80", want: Route{Kind: Deny}},
		{name: "IPv6 waypoint hostname unknown", src: client, dst: "[fd00:96::21]:80", want: Route{Kind: Deny}},
		{name: "IPv4 no healthy waypoint pod", src: client, dst: "10.96.0.22:80", want: Route{Kind: Deny}},
		{name: "IPv6 no healthy waypoint pod", src: client, dst: "[fd00:96::22]:80", want: Route{Kind: Deny}},
		{name: "IPv4 waypoint pod to its service goes to the endpoint", src: wpPod, dst: "10.96.0.20:80",
			want: Route{Kind: HBONE, HBONEAddr: ap("10.10.5.2:15008"), Authority: ap("10.10.5.2:8080"),
				DestID: id("ns4", "shop"), ForwardedHost: "shop.ns4.svc.cluster.local"}, wantDest: "shop-1", wantSvc: "ns4/shop.ns4.svc.cluster.local"},
		{name: "IPv6 waypoint pod to its service goes to the endpoint", src: wpPod, dst: "[fd00:96::20]:80",
			want: Route{Kind: HBONE, HBONEAddr: ap("[fd00:10:5::2]:15008"), Authority: ap("[fd00:10:5::2]:8080"),
				DestID: id("ns4", "shop"), ForwardedHost: "shop.ns4.svc.cluster.local"}, wantDest: "shop-1", wantSvc: "ns4/shop.ns4.svc.cluster.local"},
		{name: "IPv4 waypoint (by Service VIP) pod to its service does not loop", src: wpPod, dst: "10.96.0.23:80", want: Route{Kind: Deny}},
		{name: "IPv4 waypoint pod to its workload goes direct", src: wpPod, dst: "10.10.5.3:5432",
			want: Route{Kind: HBONE, HBONEAddr: ap("10.10.5.3:15008"), Authority: ap("10.10.5.3:5432"),
				DestID: id("ns4", "db")}, wantDest: "db"},
		{name: "IPv6 waypoint pod to its workload goes direct", src: wpPod, dst: "[fd00:10:5::3]:5432",
			want: Route{Kind: HBONE, HBONEAddr: ap("[fd00:10:5::3]:15008"), Authority: ap("[fd00:10:5::3]:5432"),
				DestID: id("ns4", "db")}, wantDest: "db"},
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
		"10.96.0.21:80":    "waypoint service gw/missing.gw.svc.cluster.local of service ns4/ghost.ns4.svc.cluster.local is not in the workload state",
		"[fd00:96::22]:80": "waypoint service gw/dead.gw.svc.cluster.local of service ns4/stuck.ns4.svc.cluster.local has no healthy HBONE workload (1 backing workloads",
	} {
		r, err := Plan(snap, client, netip.MustParseAddrPort(dst))
		if r.Kind != Deny || err == nil || !strings.Contains(r.Reason, want) || !strings.Contains(err.Error(), want) {
			t.Errorf("Plan(%s) = %v %q, %v; want a deny saying %q", dst, r.Kind, r.Reason, err, want)
		}
		if isWaypoint := strings.Contains(want, "waypoint"); errors.Is(err, ErrWaypointUnavailable) != isWaypoint {
			t.Errorf("Plan(%s) error %v: wraps ErrWaypointUnavailable = %v, want %v", dst, err, !isWaypoint, isWaypoint)
		}
	}
}

func TestPlanBalancesOverHealthyWaypointPods(t *testing.T) {
	snap := snapshot(t)
	client := workload(t, snap, "client")
	p := NewPlanner(RoundRobin())
	counts := map[string]int{}
	for _, dst := range []string{"10.96.0.20:80", "[fd00:96::20]:80", "10.10.5.3:5432", "[fd00:10:5::3]:5432"} {
		for range 5 {
			r, err := p.Plan(snap, client, netip.MustParseAddrPort(dst))
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != Waypoint || r.Authority != netip.MustParseAddrPort(dst) {
				t.Fatalf("Plan(%s) = %v with authority %s, want a waypoint route keeping the original destination", dst, r.Kind, r.Authority)
			}
			counts[r.DestWorkload.UID]++
		}
	}
	if counts["wp-a"] != 10 || counts["wp-b"] != 10 || counts["wp-c"] != 0 {
		t.Fatalf("round robin over 20 connections = %v, want wp-a:10 wp-b:10 and never the unhealthy wp-c", counts)
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
