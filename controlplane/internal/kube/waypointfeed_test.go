package kube

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/waypointxds"
)

// wpCall is one WaypointSink call: an Update (in set) or a Remove.
type wpCall struct {
	waypoint string
	in       *waypointxds.Input
}

// wpRecorder is a WaypointSink that records every call.
type wpRecorder struct{ calls chan wpCall }

func (r *wpRecorder) Update(waypoint string, in waypointxds.Input) error {
	r.calls <- wpCall{waypoint: waypoint, in: &in}
	return nil
}

func (r *wpRecorder) Remove(waypoint string) { r.calls <- wpCall{waypoint: waypoint} }

func (e *env) nextWaypoint() wpCall {
	e.t.Helper()
	select {
	case c := <-e.wp.calls:
		return c
	case <-time.After(waitTimeout):
		e.t.Fatal("no WaypointSink call")
		return wpCall{}
	}
}

// expectWaypointUpdate reads the next call, which must be an Update of
// demo/wp with exactly services.
func (e *env) expectWaypointUpdate(services ...waypointxds.Service) {
	e.t.Helper()
	c := e.nextWaypoint()
	if c.waypoint != "demo/wp" || c.in == nil {
		e.t.Fatalf("call %+v; want Update(demo/wp)", c)
	}
	want := waypointxds.Waypoint{Namespace: "demo", Name: "wp", ClusterDomain: "cluster.local", TrustDomain: "cluster.local"}
	if !reflect.DeepEqual(c.in.Waypoint, want) {
		e.t.Errorf("waypoint %+v, want %+v", c.in.Waypoint, want)
	}
	if !reflect.DeepEqual(c.in.Services, services) {
		e.t.Fatalf("services\n%+v\nwant\n%+v", c.in.Services, services)
	}
}

// webFor is web as bound to the waypoint, with endpoints.
func webFor(eps ...waypointxds.Endpoint) waypointxds.Service {
	return waypointxds.Service{
		Namespace: "demo", Name: "web", Hostname: "web.demo.svc.cluster.local",
		VIPs:      []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::10")},
		Ports:     []waypointxds.Port{{Name: "http", Port: 80}},
		Endpoints: eps,
	}
}

// webEndpoint is a pod of web in namespace demo, which the fixture does
// not enrol: outside the mesh, the waypoint reaches it in plaintext.
func webEndpoint(name, ip string, healthy bool) waypointxds.Endpoint {
	return waypointxds.Endpoint{
		Name: name, Namespace: "demo", Addresses: []netip.Addr{netip.MustParseAddr(ip)}, Node: "node-1",
		Plaintext: true, Healthy: healthy, TargetPorts: map[uint16]uint16{80: 8080},
	}
}

// meshEndpoint is webEndpoint once demo is enrolled: reached over HBONE,
// its ztunnel proving the pod's identity.
func meshEndpoint(name, ip string, healthy bool) waypointxds.Endpoint {
	ep := webEndpoint(name, ip, healthy)
	ep.Plaintext, ep.Identity = false, "spiffe://cluster.local/ns/demo/sa/web"
	return ep
}

func TestWaypointFeed(t *testing.T) {
	p1 := pod("demo", "p1", "10.244.1.10")
	p2 := pod("demo", "p2", "fd00:10:244:1::20")
	e := start(t, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", p1),
		gateway(t, "demo", "wp", "service", true))...)

	// Bound to a Programmed waypoint: the Service with its endpoint.
	e.expectWaypointUpdate(webFor(webEndpoint("p1", "10.244.1.10", true)))

	// A new member (IPv6): a new Update with both endpoints.
	if _, err := e.client.DiscoveryV1().EndpointSlices("demo").Update(context.Background(), slice("web-abc", p1, p2), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expectWaypointUpdate(webFor(webEndpoint("p1", "10.244.1.10", true), webEndpoint("p2", "fd00:10:244:1::20", true)))

	// A member pod no longer ready: it stays, unhealthy.
	e.updatePod("demo", "p1", func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse })
	e.expectWaypointUpdate(webFor(webEndpoint("p1", "10.244.1.10", false), webEndpoint("p2", "fd00:10:244:1::20", true)))

	// Not Programmed any more: its pods keep a configuration (they need one
	// to become ready again) but no Service is bound; Programmed again: the
	// Service is back.
	e.putGateway(gateway(t, "demo", "wp", "service", false))
	e.expectWaypointUpdate()
	e.putGateway(gateway(t, "demo", "wp", "service", true))
	e.expectWaypointUpdate(webFor(webEndpoint("p1", "10.244.1.10", false), webEndpoint("p2", "fd00:10:244:1::20", true)))

	// The namespace joins the mesh: its pods are reached over HBONE now
	// (and back in plaintext when it leaves).
	e.labelNamespace("demo", map[string]string{model.LabelDataplaneMode: model.DataplaneModeAmbient})
	e.expectWaypointUpdate(webFor(meshEndpoint("p1", "10.244.1.10", false), meshEndpoint("p2", "fd00:10:244:1::20", true)))
	e.labelNamespace("demo", nil)
	e.expectWaypointUpdate(webFor(webEndpoint("p1", "10.244.1.10", false), webEndpoint("p2", "fd00:10:244:1::20", true)))

	// The Service opts out: an Update without it.
	svc := labelledService()
	svc.Labels[model.LabelUseWaypoint] = model.UseWaypointNone
	if _, err := e.client.CoreV1().Services("demo").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expectWaypointUpdate()

	// The Gateway is deleted: Remove.
	if err := e.dyn.Resource(GatewaysResource).Namespace("demo").Delete(context.Background(), "wp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := e.nextWaypoint(); c.waypoint != "demo/wp" || c.in != nil {
		t.Fatalf("call %+v; want Remove(demo/wp)", c)
	}
	select {
	case c := <-e.wp.calls:
		t.Fatalf("unexpected call %+v", c)
	default:
	}
}

func TestWaypointPorts(t *testing.T) {
	tests := []struct {
		name string
		port corev1.ServicePort
		want []waypointxds.Port
	}{
		{"numeric target port", corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			[]waypointxds.Port{{Name: "http", Port: 80, TargetPort: 8080}}},
		{"unset target port is the port", corev1.ServicePort{Name: "tcp", Port: 5432},
			[]waypointxds.Port{{Name: "tcp", Port: 5432, TargetPort: 5432}}},
		{"named target port is per endpoint", corev1.ServicePort{Name: "grpc", Port: 9090, AppProtocol: new("grpc"), TargetPort: intstr.FromString("grpc")},
			[]waypointxds.Port{{Name: "grpc", AppProtocol: "grpc", Port: 9090}}},
		{"UDP is skipped", corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := WaypointPorts(&corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{tt.port}}})
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("WaypointPorts = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWaypointEndpoint(t *testing.T) {
	dual := pod("demo", "p1", "10.244.1.10")
	dual.Status.PodIPs = append(dual.Status.PodIPs, corev1.PodIP{IP: "fd00:10:244:1::10"})
	noSA := pod("demo", "p2", "fd00:10:244:1::20")
	noSA.Spec.ServiceAccountName = ""
	noIP := pod("demo", "p3", "")
	noIP.Status.PodIPs = nil
	sidecar := pod("demo", "p4", "10.244.1.40")
	sidecar.Annotations = map[string]string{"sidecar.istio.io/status": "{}"}
	ports := []model.PortMapping{{ServicePort: 80, TargetPort: 8080}}
	enrolled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"ambit.dev/dataplane-mode": "ambient"}}}
	tests := []struct {
		name   string
		pod    *corev1.Pod
		ns     *corev1.Namespace
		want   waypointxds.Endpoint
		wantOK bool
	}{
		{"dual stack", dual, enrolled, waypointxds.Endpoint{Name: "p1", Namespace: "demo", Node: "node-1", Healthy: true,
			Addresses: []netip.Addr{netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("fd00:10:244:1::10")},
			Identity:  "spiffe://cluster.local/ns/demo/sa/web", TargetPorts: map[uint16]uint16{80: 8080}}, true},
		{"IPv6, default service account", noSA, enrolled, waypointxds.Endpoint{Name: "p2", Namespace: "demo", Node: "node-1", Healthy: true,
			Addresses: []netip.Addr{netip.MustParseAddr("fd00:10:244:1::20")},
			Identity:  "spiffe://cluster.local/ns/demo/sa/default", TargetPorts: map[uint16]uint16{80: 8080}}, true},
		{"no IP", noIP, enrolled, waypointxds.Endpoint{}, false},
		// Outside the mesh: reached in plaintext, no identity to check.
		{"an Istio sidecar pod", sidecar, enrolled, waypointxds.Endpoint{Name: "p4", Namespace: "demo", Node: "node-1", Healthy: true,
			Addresses: []netip.Addr{netip.MustParseAddr("10.244.1.40")}, Plaintext: true, TargetPorts: map[uint16]uint16{80: 8080}}, true},
		{"a namespace not enrolled", dual, nil, waypointxds.Endpoint{Name: "p1", Namespace: "demo", Node: "node-1", Healthy: true,
			Addresses: []netip.Addr{netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("fd00:10:244:1::10")},
			Plaintext: true, TargetPorts: map[uint16]uint16{80: 8080}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := WaypointEndpoint(tt.pod, tt.ns, ports, "cluster.local")
			if ok != tt.wantOK || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("WaypointEndpoint = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
