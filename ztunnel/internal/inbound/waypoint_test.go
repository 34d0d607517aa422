package inbound

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

func TestCheckWaypoint(t *testing.T) {
	const wpKey = "gw/gw.gw.svc.cluster.local"
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	wp := model.Workload{UID: "wp", Name: "gw-1", Namespace: "gw", ServiceAccount: "gw", TrustDomain: "cluster.local",
		Protocol: model.ProtocolHBONE, Addresses: addrs("10.10.4.2", "fd00:10:4::2"), Services: map[string]model.PortMap{wpKey: {}}}
	// shop backs Service shop (80 -> 8080) behind the waypoint, and has a
	// second port (9090) no waypoint guards.
	shop := model.Workload{UID: "shop", Name: "shop-1", Namespace: "ns", ServiceAccount: "shop", TrustDomain: "cluster.local",
		Protocol: model.ProtocolHBONE, Addresses: addrs("10.10.5.2", "fd00:10:5::2"),
		Services: map[string]model.PortMap{"ns/shop.ns.svc.cluster.local": {}, "ns/metrics.ns.svc.cluster.local": {}}}
	// own has a waypoint of its own (waypoint-for workload): every port.
	own := model.Workload{UID: "own", Name: "own", Namespace: "ns", ServiceAccount: "own", TrustDomain: "cluster.local",
		Protocol: model.ProtocolHBONE, Addresses: addrs("10.10.5.3"), Waypoint: &model.Waypoint{Service: wpKey, Port: 15008}}
	plain := model.Workload{UID: "plain", Name: "plain", Namespace: "ns", ServiceAccount: "plain", TrustDomain: "cluster.local",
		Protocol: model.ProtocolHBONE, Addresses: addrs("10.10.5.4")}
	services := []model.Service{
		{Name: "gw", Namespace: "gw", Hostname: "gw.gw.svc.cluster.local", VIPs: addrs("10.96.1.1"), Ports: model.PortMap{15008: 15008}},
		{Name: "shop", Namespace: "ns", Hostname: "shop.ns.svc.cluster.local", VIPs: addrs("10.96.0.20", "fd00:96::20"),
			Ports: model.PortMap{80: 8080}, Waypoint: &model.Waypoint{Service: wpKey, Port: 15008}},
		{Name: "metrics", Namespace: "ns", Hostname: "metrics.ns.svc.cluster.local", VIPs: addrs("10.96.0.21"), Ports: model.PortMap{9090: 9090}},
	}
	snap, err := state.NewSnapshotWithPolicies([]model.Workload{wp, shop, own, plain}, services, nil)
	if err != nil {
		t.Fatal(err)
	}
	gwID := wp.Identity()
	client := identity.ID{TrustDomain: "cluster.local", Namespace: "ns", ServiceAccount: "client"}
	for _, tc := range []struct {
		name      string
		w         model.Workload
		port      uint16
		src       identity.ID
		plaintext bool
		wantErr   string
	}{
		{name: "HBONE from the waypoint to a service's target port", w: shop, port: 8080, src: gwID},
		{name: "HBONE from a client to a service's target port bypasses", w: shop, port: 8080, src: client,
			wantErr: "port 8080 of ns/shop-1 (shop) is behind waypoint gw/gw.gw.svc.cluster.local:15008 for service ns/shop.ns.svc.cluster.local (port 80), and this connection is from cluster.local/ns/ns/sa/client"},
		{name: "plaintext to a service's target port bypasses", w: shop, port: 8080, plaintext: true, wantErr: "this connection is plaintext"},
		{name: "plaintext claiming the waypoint's identity still bypasses", w: shop, port: 8080, src: gwID, plaintext: true, wantErr: "plaintext"},
		{name: "a port no waypoint guards is open to HBONE", w: shop, port: 9090, src: client},
		{name: "a port no waypoint guards is open to plaintext", w: shop, port: 9090, plaintext: true},
		{name: "workload waypoint guards every port", w: own, port: 5432, src: client, wantErr: "for workload ns/own (own)"},
		{name: "workload waypoint: from the waypoint", w: own, port: 5432, src: gwID},
		{name: "no waypoint at all", w: plain, port: 80, src: client},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckWaypoint(snap, tc.w, tc.port, tc.src, tc.plaintext)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckWaypoint: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrWaypointBypass) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckWaypoint error %v, want ErrWaypointBypass containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckWaypointPortAlsoExposedWithoutWaypoint(t *testing.T) {
	// reviews-1 backs reviews (behind a waypoint) and reviews-v1 (not) on
	// the same port: a client of reviews-v1 reaches it directly.
	wpKey := "gw/gw.gw.svc.cluster.local"
	w := model.Workload{UID: "r1", Name: "reviews-1", Namespace: "ns", ServiceAccount: "reviews", TrustDomain: "cluster.local",
		Protocol: model.ProtocolHBONE, Addresses: []netip.Addr{netip.MustParseAddr("10.10.5.2")},
		Services: map[string]model.PortMap{"ns/reviews.ns.svc": {}, "ns/reviews-v1.ns.svc": {}}}
	services := []model.Service{
		{Name: "reviews", Namespace: "ns", Hostname: "reviews.ns.svc", VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.30")},
			Ports: model.PortMap{80: 8080}, Waypoint: &model.Waypoint{Service: wpKey, Port: 15008}},
		{Name: "reviews-v1", Namespace: "ns", Hostname: "reviews-v1.ns.svc", VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.31")},
			Ports: model.PortMap{80: 8080}},
	}
	snap, err := state.NewSnapshotWithPolicies([]model.Workload{w}, services, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := identity.ID{TrustDomain: "cluster.local", Namespace: "ns", ServiceAccount: "client"}
	if err := CheckWaypoint(snap, w, 8080, client, false); err != nil {
		t.Fatalf("CheckWaypoint: %v, want nil (reviews-v1 exposes the port without a waypoint)", err)
	}
}
