package kube

import (
	"context"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/httproute"
	"ambit.dev/controlplane/internal/waypointxds"
)

// httpRoute returns an HTTPRoute in namespace demo with the spec in YAML.
func httpRoute(t *testing.T, name, spec string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(spec), &m); err != nil {
		t.Fatal(err)
	}
	return demoObject(gwapiv1.GroupVersion.String(), "HTTPRoute", name, m)
}

// demoObject is an object of namespace demo at generation 1 with spec.
func demoObject(apiVersion, kind, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace("demo")
	u.SetName(name)
	u.SetGeneration(1)
	return u
}

func (e *env) putRoute(u *unstructured.Unstructured) {
	e.t.Helper()
	ctx := context.Background()
	res := HTTPRoutesResource
	if u.GetKind() == "GRPCRoute" {
		res = GRPCRoutesResource
	}
	r := e.dyn.Resource(res).Namespace(u.GetNamespace())
	if old, err := r.Get(ctx, u.GetName(), metav1.GetOptions{}); err == nil {
		u.SetResourceVersion(old.GetResourceVersion())
		u.SetGeneration(old.GetGeneration() + 1)
		if _, err := r.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			e.t.Fatal(err)
		}
		return
	}
	if _, err := r.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// v2 is a second Service (web-v2) backed by p2, not bound to a waypoint.
func v2() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web-v2"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"}, Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt(8080),
		}}},
	}
	sl := slice("web-v2-abc", pod("demo", "p2", "fd00:10:244:1::20"))
	sl.Labels[discoveryv1.LabelServiceName] = "web-v2"
	return svc, sl
}

const webRoute = `parentRefs: [{group: "", kind: Service, name: web, port: 80}]
rules:
- matches: [{headers: [{name: User-Agent, type: RegularExpression, value: ".*Mobile.*"}]}]
  backendRefs: [{name: web-v2, port: 80}]
- backendRefs: [{name: web, port: 80, weight: 90}, {name: web-v2, port: 80, weight: 10}]
`

// TestWaypointFeedHTTPRoute: an HTTPRoute attached to a bound Service
// fills its port's routes, in precedence order, and brings the backend
// Service it names (not bound) as a Backend with its endpoints; changes of
// the backend's endpoints and of the route are fed; a route the waypoint
// cannot apply leaves the default route; deleting the route restores it.
func TestWaypointFeedHTTPRoute(t *testing.T) {
	p1 := pod("demo", "p1", "10.244.1.10")
	svc2, sl2 := v2()
	e := start(t, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", p1), svc2, sl2,
		gateway(t, "demo", "wp", "service", true))...)
	web := webFor(webEndpoint("p1", "10.244.1.10", true))
	e.expectWaypointUpdate(web)

	e.putRoute(httpRoute(t, "canary", webRoute))
	c := e.nextWaypoint()
	if c.in == nil || len(c.in.Services) != 1 {
		t.Fatalf("call %+v; want an Update with web", c)
	}
	got := c.in.Services[0].Ports[0].Routes
	wantNames := []string{"demo.canary.0.0", "demo.canary.1.0"}
	if len(got) != 2 || got[0].Name != wantNames[0] || got[1].Name != wantNames[1] {
		t.Fatalf("routes %+v, want %v", got, wantNames)
	}
	wantSplit := []waypointxds.Backend{{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 90}, {Hostname: "web-v2.demo.svc.cluster.local", Port: 80, Weight: 10}}
	if !reflect.DeepEqual(got[1].Backends, wantSplit) {
		t.Fatalf("split %+v, want %+v", got[1].Backends, wantSplit)
	}
	wantV2 := waypointxds.Service{
		Namespace: "demo", Name: "web-v2", Hostname: "web-v2.demo.svc.cluster.local",
		VIPs:      []netip.Addr{netip.MustParseAddr("10.96.0.20")},
		Ports:     []waypointxds.Port{{Name: "http", Port: 80, TargetPort: 8080}},
		Endpoints: []waypointxds.Endpoint{webEndpoint("p2", "fd00:10:244:1::20", true)},
	}
	if len(c.in.Backends) != 1 || !reflect.DeepEqual(c.in.Backends[0], wantV2) {
		t.Fatalf("backends\n%+v\nwant\n%+v", c.in.Backends, wantV2)
	}

	// A backend pod no longer ready: an Update with it unhealthy.
	e.updatePod("demo", "p2", func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse })
	c = e.nextWaypoint()
	if c.in == nil || len(c.in.Backends) != 1 || c.in.Backends[0].Endpoints[0].Healthy {
		t.Fatalf("call %+v; want web-v2's endpoint unhealthy", c)
	}

	// A route using a filter the waypoint does not implement: not
	// applied, the default route is back.
	e.putRoute(httpRoute(t, "canary", `parentRefs: [{group: "", kind: Service, name: web}]
rules: [{filters: [{type: CORS, cors: {allowOrigins: ["https://a"]}}], backendRefs: [{name: web, port: 80}]}]
`))
	c = e.nextWaypoint()
	if c.in == nil || c.in.Services[0].Ports[0].Routes != nil || len(c.in.Backends) != 0 {
		t.Fatalf("call %+v; want web with the default route and no backends", c)
	}
	e.putRoute(httpRoute(t, "canary", webRoute))
	if c = e.nextWaypoint(); c.in == nil || len(c.in.Services[0].Ports[0].Routes) != 2 {
		t.Fatalf("call %+v; want the two routes again", c)
	}
	if err := e.dyn.Resource(HTTPRoutesResource).Namespace("demo").Delete(context.Background(), "canary", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if c = e.nextWaypoint(); c.in == nil || c.in.Services[0].Ports[0].Routes != nil || len(c.in.Backends) != 0 {
		t.Fatalf("call %+v; want the default route after the delete", c)
	}
}

func TestNextRouteStatus(t *testing.T) {
	group, kind := gwapiv1.Group(""), gwapiv1.Kind("Service")
	ref := gwapiv1.ParentReference{Group: &group, Kind: &kind, Name: "web"}
	other := gwapiv1.RouteParentStatus{ParentRef: gwapiv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted"}}}
	accepted := metav1.Condition{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "ok", ObservedGeneration: 2}
	resolved := metav1.Condition{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs", Message: "ok", ObservedGeneration: 2}
	compiled := httproute.Compiled{Parents: []httproute.Parent{{ParentRef: ref, Accepted: accepted, ResolvedRefs: resolved}}}

	next, changed := NextRouteStatus(gwapiv1.RouteStatus{Parents: []gwapiv1.RouteParentStatus{other}}, compiled)
	if !changed || len(next.Parents) != 2 || !reflect.DeepEqual(next.Parents[0], other) {
		t.Fatalf("first write: changed %v, parents %+v; want other kept and ours added", changed, next.Parents)
	}
	ours := next.Parents[1]
	if ours.ControllerName != httproute.ControllerName || len(ours.Conditions) != 2 {
		t.Fatalf("our status %+v", ours)
	}
	if _, changed := NextRouteStatus(next, compiled); changed {
		t.Fatal("the same outcome again must not change the status")
	}
	bad := compiled
	bad.Parents = []httproute.Parent{{ParentRef: ref, Accepted: metav1.Condition{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "UnsupportedValue", Message: "no", ObservedGeneration: 3}, ResolvedRefs: resolved}}
	next2, changed := NextRouteStatus(next, bad)
	if !changed || next2.Parents[1].Conditions[0].Reason != "UnsupportedValue" {
		t.Fatalf("changed %v, %+v; want Accepted=False UnsupportedValue", changed, next2.Parents)
	}
	// The parent leaves the spec: our entry goes, the other stays.
	next3, changed := NextRouteStatus(next2, httproute.Compiled{})
	if !changed || len(next3.Parents) != 1 || next3.Parents[0].ControllerName != "example.com/gateway" {
		t.Fatalf("changed %v, %+v; want only the other controller's entry", changed, next3.Parents)
	}
}

// TestWaypointFeedGRPCRoute: a GRPCRoute attached to a bound Service's
// HTTP/2 port is compiled as the HTTPRoute it means and fed with the
// HTTPRoutes of the same port, in precedence order; deleting it restores
// the default route.
func TestWaypointFeedGRPCRoute(t *testing.T) {
	p1 := pod("demo", "p1", "10.244.1.10")
	svc := labelledService()
	grpc := "grpc"
	svc.Spec.Ports[0].AppProtocol = &grpc
	e := start(t, append(fixture()[:len(fixture())-2], svc, slice("web-abc", p1), gateway(t, "demo", "wp", "service", true))...)
	e.nextWaypoint()

	g := httpRoute(t, "health", `parentRefs: [{group: "", kind: Service, name: web}]
rules:
- matches: [{method: {service: grpc.health.v1.Health, method: Check}}]
  backendRefs: [{name: web, port: 80}]
`)
	g.SetKind("GRPCRoute")
	e.putRoute(g)
	c := e.nextWaypoint()
	if c.in == nil || len(c.in.Services) != 1 {
		t.Fatalf("call %+v; want an Update with web", c)
	}
	got := c.in.Services[0].Ports[0].Routes
	if len(got) != 1 || got[0].Name != "grpc.demo.health.0.0" || got[0].Match.Path != "/grpc.health.v1.Health/Check" || got[0].Match.PathType != waypointxds.PathExact {
		t.Fatalf("routes %+v, want the exact gRPC method route", got)
	}
	// An HTTPRoute on the same port joins it, after the more specific
	// gRPC method.
	e.putRoute(httpRoute(t, "all", `parentRefs: [{group: "", kind: Service, name: web}]
rules: [{backendRefs: [{name: web, port: 80}]}]
`))
	c = e.nextWaypoint()
	if got = c.in.Services[0].Ports[0].Routes; len(got) != 2 || got[0].Name != "grpc.demo.health.0.0" || got[1].Name != "demo.all.0.0" {
		t.Fatalf("routes %+v, want the gRPC route then the HTTPRoute", got)
	}
	for _, del := range []struct {
		res  schema.GroupVersionResource
		name string
	}{{GRPCRoutesResource, "health"}, {HTTPRoutesResource, "all"}} {
		if err := e.dyn.Resource(del.res).Namespace("demo").Delete(context.Background(), del.name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		c = e.nextWaypoint()
	}
	if c.in == nil || c.in.Services[0].Ports[0].Routes != nil {
		t.Fatalf("call %+v; want the default route after the deletes", c)
	}
}
