package kube

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	networkingv1alpha1 "ambit.dev/api/networking/v1alpha1"
	"ambit.dev/controlplane/internal/waypointxds"
)

func httpFault(name string, spec map[string]any) *unstructured.Unstructured {
	return demoObject(networkingv1alpha1.SchemeGroupVersion.String(), "HTTPFault", name, spec)
}

// TestWaypointFeedHTTPFault: a rule naming a missing HTTPFault answers
// 500; the HTTPFault appearing, changing and going away re-compiles the
// route each time.
func TestWaypointFeedHTTPFault(t *testing.T) {
	p1 := pod("demo", "p1", "10.244.1.10")
	e := start(t, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", p1),
		gateway(t, "demo", "wp", "service", true))...)
	e.expectWaypointUpdate(webFor(webEndpoint("p1", "10.244.1.10", true)))

	e.putRoute(httpRoute(t, "faulty", `parentRefs: [{group: "", kind: Service, name: web, port: 80}]
rules:
- filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: slow}}]
  backendRefs: [{name: web, port: 80}]
`))
	route := func(what string) waypointxds.Route {
		t.Helper()
		c := e.nextWaypoint()
		if c.in == nil || len(c.in.Services) != 1 || len(c.in.Services[0].Ports[0].Routes) != 1 {
			t.Fatalf("%s: call %+v; want web with one route", what, c)
		}
		return c.in.Services[0].Ports[0].Routes[0]
	}
	if r := route("missing"); r.DirectStatus != 500 || r.Fault != nil {
		t.Fatalf("missing HTTPFault: route %+v, want a 500 direct response", r)
	}

	faults := e.dyn.Resource(HTTPFaultsResource).Namespace("demo")
	ctx := context.Background()
	created, err := faults.Create(ctx, httpFault("slow", map[string]any{"delay": map[string]any{"fixedDelay": "200ms"}}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := route("created"); r.DirectStatus != 0 || r.Fault == nil || r.Fault.Delay == nil ||
		r.Fault.Delay.Fixed != 200*time.Millisecond || r.Fault.Delay.Percent != 100 {
		t.Fatalf("created HTTPFault: route %+v (fault %+v), want a 200ms delay at 100%%", r, r.Fault)
	}

	upd := httpFault("slow", map[string]any{"abort": map[string]any{"httpStatus": int64(503), "percentage": int64(50)}})
	upd.SetResourceVersion(created.GetResourceVersion())
	upd.SetGeneration(2)
	if _, err := faults.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := route("updated"); r.Fault == nil || r.Fault.Delay != nil || r.Fault.Abort == nil || *r.Fault.Abort != (waypointxds.FaultAbort{HTTPStatus: 503, Percent: 50}) {
		t.Fatalf("updated HTTPFault: fault %+v, want abort 503 at 50%%", r.Fault)
	}

	if err := faults.Delete(ctx, "slow", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := route("deleted"); r.DirectStatus != 500 {
		t.Fatalf("deleted HTTPFault: route %+v, want 500 again", r)
	}
}
