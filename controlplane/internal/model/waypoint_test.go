package model

import (
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// gw is a Programmed waypoint Gateway; mod changes it.
func gw(ns, name string, mod ...func(*Gateway)) Gateway {
	g := Gateway{Namespace: ns, Name: name, Class: WaypointClass, Programmed: true}
	for _, m := range mod {
		m(&g)
	}
	return g
}

func waypoints(gws ...Gateway) Waypoints {
	out := Waypoints{}
	for _, g := range gws {
		out[g.Ref()] = g
	}
	return out
}

func forLabel(v string) func(*Gateway) {
	return func(g *Gateway) { g.Labels = map[string]string{LabelWaypointFor: v} }
}

func use(name string, kv ...string) map[string]string {
	m := map[string]string{LabelUseWaypoint: name}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func wpAddr(ns, name string) *WaypointAddress {
	return &WaypointAddress{Gateway: ObjectRef{Namespace: ns, Name: name}, Hostname: name + "." + ns + ".svc.cluster.local", Port: 15008}
}

func TestParseWaypointFor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		labels  map[string]string
		want    WaypointFor
		wantErr bool
	}{
		{"no label means service", nil, WaypointForService, false},
		{"empty means service", map[string]string{LabelWaypointFor: ""}, WaypointForService, false},
		{"service", map[string]string{LabelWaypointFor: "service"}, WaypointForService, false},
		{"workload", map[string]string{LabelWaypointFor: "workload"}, WaypointForWorkload, false},
		{"all", map[string]string{LabelWaypointFor: "all"}, WaypointForAll, false},
		{"unknown", map[string]string{LabelWaypointFor: "Service"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseWaypointFor(tc.labels)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("ParseWaypointFor = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestServiceWaypoint(t *testing.T) {
	all := waypoints(
		gw("demo", "wp"),
		gw("demo", "wp-all", forLabel("all")),
		gw("demo", "wp-workload", forLabel("workload")),
		gw("demo", "wp-bad-for", forLabel("everything")),
		gw("demo", "wp-pending", func(g *Gateway) { g.Programmed = false }),
		gw("demo", "other-class", func(g *Gateway) { g.Class = "istio" }),
		gw("shared", "wp"),
	)
	cases := []struct {
		name         string
		nsLabels     map[string]string
		svcLabels    map[string]string
		want         *WaypointAddress
		wantUnusable bool
		wantReq      ObjectRef
		reason       string // substring of the reason
	}{
		{name: "no labels", reason: "no ambit.dev/use-waypoint label"},
		{name: "namespace label", nsLabels: use("wp"), want: wpAddr("demo", "wp"), wantReq: ObjectRef{"demo", "wp"}, reason: "namespace demo uses waypoint demo/wp"},
		{name: "service label", svcLabels: use("wp-all"), want: wpAddr("demo", "wp-all"), wantReq: ObjectRef{"demo", "wp-all"}, reason: "service demo/web uses"},
		{name: "service label wins over namespace label", nsLabels: use("wp"), svcLabels: use("wp-all"), want: wpAddr("demo", "wp-all"), wantReq: ObjectRef{"demo", "wp-all"}},
		{name: "service opts out of the namespace waypoint", nsLabels: use("wp"), svcLabels: use("none"), reason: "service demo/web opts out"},
		{name: "namespace opts out", nsLabels: use("none"), reason: "namespace demo opts out"},
		{name: "waypoint in another namespace", svcLabels: use("wp", LabelUseWaypointNamespace, "shared"), want: wpAddr("shared", "wp"), wantReq: ObjectRef{"shared", "wp"}},
		{name: "namespace label names another namespace", nsLabels: use("wp", LabelUseWaypointNamespace, "shared"), want: wpAddr("shared", "wp"), wantReq: ObjectRef{"shared", "wp"}},
		{name: "missing Gateway", svcLabels: use("nope"), wantUnusable: true, wantReq: ObjectRef{"demo", "nope"}, reason: "does not exist"},
		{name: "missing Gateway in another namespace", svcLabels: use("wp", LabelUseWaypointNamespace, "elsewhere"), wantUnusable: true, wantReq: ObjectRef{"elsewhere", "wp"}, reason: "does not exist"},
		{name: "a service label naming a missing Gateway does not fall back to the namespace", nsLabels: use("wp"), svcLabels: use("nope"), wantUnusable: true, wantReq: ObjectRef{"demo", "nope"}},
		{name: "workload-only waypoint takes no service traffic", svcLabels: use("wp-workload"), wantUnusable: true, wantReq: ObjectRef{"demo", "wp-workload"}, reason: "takes workload traffic only"},
		{name: "invalid waypoint-for", svcLabels: use("wp-bad-for"), wantUnusable: true, wantReq: ObjectRef{"demo", "wp-bad-for"}, reason: "invalid"},
		{name: "not Programmed", svcLabels: use("wp-pending"), wantUnusable: true, wantReq: ObjectRef{"demo", "wp-pending"}, reason: "not Programmed"},
		{name: "another class", svcLabels: use("other-class"), wantUnusable: true, wantReq: ObjectRef{"demo", "other-class"}, reason: `class "istio"`},
		{name: "not a Gateway name", svcLabels: use("WP"), wantUnusable: true, wantReq: ObjectRef{"demo", "WP"}, reason: "not a valid Gateway name"},
		{name: "the waypoint's own Service", nsLabels: use("wp"), svcLabels: map[string]string{LabelGatewayName: "wp"}, reason: "takes no waypoint"},
		{name: "gateway-name of a non-waypoint Gateway is an ordinary Service", nsLabels: use("wp"), svcLabels: map[string]string{LabelGatewayName: "other-class"}, want: wpAddr("demo", "wp"), wantReq: ObjectRef{"demo", "wp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc := Service{Name: "web", Namespace: "demo", Labels: tc.svcLabels, Hostname: "web.demo.svc.cluster.local",
				VIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::10")}}
			got := ServiceWaypoint(Namespace{Name: "demo", Labels: tc.nsLabels}, svc, all, "cluster.local")
			checkBinding(t, got, tc.want, tc.wantUnusable, tc.wantReq, tc.reason)
		})
	}
}

func TestWorkloadWaypoint(t *testing.T) {
	all := waypoints(
		gw("demo", "wp"),
		gw("demo", "wp-workload", forLabel("workload")),
		gw("demo", "wp-all", forLabel("all")),
	)
	cases := []struct {
		name         string
		nsLabels     map[string]string
		podLabels    map[string]string
		want         *WaypointAddress
		wantUnusable bool
		wantReq      ObjectRef
		reason       string
	}{
		{name: "no labels", reason: "no ambit.dev/use-waypoint label"},
		{name: "namespace label, workload waypoint", nsLabels: use("wp-workload"), want: wpAddr("demo", "wp-workload"), wantReq: ObjectRef{"demo", "wp-workload"}},
		{name: "namespace label, service-only waypoint", nsLabels: use("wp"), wantUnusable: true, wantReq: ObjectRef{"demo", "wp"}, reason: "takes service traffic only"},
		{name: "pod label wins", nsLabels: use("wp-workload"), podLabels: use("wp-all"), want: wpAddr("demo", "wp-all"), wantReq: ObjectRef{"demo", "wp-all"}, reason: "pod demo/web-1 uses"},
		{name: "pod opts out", nsLabels: use("wp-all"), podLabels: use("none"), reason: "pod demo/web-1 opts out"},
		{name: "pod names a missing Gateway", podLabels: use("gone"), wantUnusable: true, wantReq: ObjectRef{"demo", "gone"}, reason: "does not exist"},
		{name: "a pod of the waypoint", nsLabels: use("wp-all"), podLabels: map[string]string{LabelGatewayName: "wp-all"}, reason: "takes no waypoint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := basePod()
			p.Name = "web-1"
			p.Labels = tc.podLabels
			got := WorkloadWaypoint(Namespace{Name: "demo", Labels: tc.nsLabels}, p, all, "cluster.local")
			checkBinding(t, got, tc.want, tc.wantUnusable, tc.wantReq, tc.reason)
		})
	}
}

func checkBinding(t *testing.T, got WaypointBinding, want *WaypointAddress, unusable bool, req ObjectRef, reason string) {
	t.Helper()
	if (got.Waypoint == nil) != (want == nil) || (want != nil && *got.Waypoint != *want) {
		t.Errorf("waypoint = %+v, want %+v (%s)", got.Waypoint, want, got.Reason)
	}
	if got.Unusable != unusable || got.Requested != req {
		t.Errorf("unusable %v requested %v, want %v %v (%s)", got.Unusable, got.Requested, unusable, req, got.Reason)
	}
	if !strings.Contains(got.Reason, reason) || got.Reason == "" {
		t.Errorf("reason %q does not say %q", got.Reason, reason)
	}
	if got.Unusable && got.Waypoint != nil {
		t.Error("an unusable binding has a waypoint")
	}
}

func TestWaypointAddresses(t *testing.T) {
	wps := waypoints(gw("demo", "wp", forLabel("all")))
	cfg := Config{TrustDomain: "cluster.local"}

	t.Run("workload with a waypoint, IPv4", func(t *testing.T) {
		p := basePod()
		p.Labels = use("wp")
		w, ok, why := DeriveWorkload(cfg, ambientNS, p, nil, true)
		if !ok {
			t.Fatal(why)
		}
		w = WaypointWorkload(w, p, wps, WorkloadWaypoint(ambientNS, p, wps, "cluster.local"))
		wantProto(t, WorkloadAddress(w).GetWorkload(), `uid:"uid-1" name:"web-7d4f8b-abcde" namespace:"demo" addresses:"\n\xf4\x01\x07" node:"node-1" service_account:"web" trust_domain:"cluster.local" tunnel_protocol:HBONE waypoint:{hostname:{namespace:"demo" hostname:"wp.demo.svc.cluster.local"} hbone_mtls_port:15008} canonical_name:"web-7d4f8b-abcde" canonical_revision:"latest" workload_name:"web-7d4f8b-abcde"`)
	})
	t.Run("waypoint pod, not captured, is reached over HBONE, IPv6", func(t *testing.T) {
		p := basePod()
		p.IPs = []netip.Addr{netip.MustParseAddr("fd00:10:244::9")}
		p.Labels = map[string]string{LabelGatewayName: "wp", LabelDataplaneMode: DataplaneModeNone}
		w, ok, why := DeriveWorkload(cfg, Namespace{Name: "demo", Labels: use("wp")}, p, nil, true)
		if !ok {
			t.Fatal(why)
		}
		if w.Protocol != TunnelNone {
			t.Fatalf("the opted-out waypoint pod derived as %v before WaypointWorkload", w.Protocol)
		}
		w = WaypointWorkload(w, p, wps, WorkloadWaypoint(Namespace{Name: "demo", Labels: use("wp")}, p, wps, "cluster.local"))
		if w.Protocol != TunnelHBONE || w.Waypoint != nil {
			t.Fatalf("waypoint pod: protocol %v waypoint %+v; want HBONE and no waypoint", w.Protocol, w.Waypoint)
		}
	})
	t.Run("an ordinary pod opted out keeps protocol NONE", func(t *testing.T) {
		p := basePod()
		p.Labels = map[string]string{LabelDataplaneMode: DataplaneModeNone}
		w, _, _ := DeriveWorkload(cfg, ambientNS, p, nil, true)
		if w = WaypointWorkload(w, p, wps, WaypointBinding{}); w.Protocol != TunnelNone {
			t.Fatalf("protocol %v, want NONE", w.Protocol)
		}
	})
	t.Run("service with a waypoint, dual stack", func(t *testing.T) {
		svc := Service{Name: "web", Namespace: "demo", Labels: use("wp"), Hostname: "web.demo.svc.cluster.local",
			VIPs:  []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")},
			Ports: []ServicePort{{Name: "http", Protocol: ProtocolTCP, Port: 80, TargetPort: 8080}}}
		svc.Waypoint = ServiceWaypoint(plainNS, svc, wps, "cluster.local").Waypoint
		wantProto(t, ServiceAddress(svc).GetService(), `name:"web" namespace:"demo" hostname:"web.demo.svc.cluster.local" addresses:{address:"\x0a\x60\x00\x0a"} addresses:{address:"\xfd\x00\x00\x96\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\n"} ports:{service_port:80 target_port:8080} waypoint:{hostname:{namespace:"demo" hostname:"wp.demo.svc.cluster.local"} hbone_mtls_port:15008}`)
	})
}

func wantProto[M proto.Message](t *testing.T, got M, text string) {
	t.Helper()
	want := proto.Clone(got)
	proto.Reset(want)
	if err := prototext.Unmarshal([]byte(text), want); err != nil {
		t.Fatalf("bad want: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", prototext.Format(got), prototext.Format(want))
	}
}
