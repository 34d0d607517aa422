package kube

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/model"
)

// gateway returns a waypoint Gateway as the dynamic client holds it.
func gateway(t *testing.T, namespace, name, waypointFor string, programmed bool) *unstructured.Unstructured {
	t.Helper()
	g := &gwapiv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Generation: 1},
		Spec: gwapiv1.GatewaySpec{GatewayClassName: model.WaypointClass, Listeners: []gwapiv1.Listener{{
			Name: model.WaypointListenerName, Port: model.WaypointListenerPort, Protocol: model.WaypointListenerProtocol,
		}}},
	}
	if waypointFor != "" {
		g.Labels = map[string]string{model.LabelWaypointFor: waypointFor}
	}
	status := metav1.ConditionFalse
	if programmed {
		status = metav1.ConditionTrue
	}
	g.Status.Conditions = []metav1.Condition{{Type: "Programmed", Status: status, Reason: "Test", LastTransitionTime: metav1.Now()}}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(g)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(gwapiv1.GroupVersion.String())
	u.SetKind("Gateway")
	return u
}

func (e *env) putGateway(u *unstructured.Unstructured) {
	e.t.Helper()
	ctx := context.Background()
	r := e.dyn.Resource(GatewaysResource).Namespace(u.GetNamespace())
	if _, err := r.Get(ctx, u.GetName(), metav1.GetOptions{}); err == nil {
		if _, err := r.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			e.t.Fatal(err)
		}
		return
	}
	if _, err := r.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) labelNamespace(name string, lbl map[string]string) {
	e.t.Helper()
	if _, err := e.client.CoreV1().Namespaces().Update(context.Background(), ns(name, lbl), metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) unusable(traffic model.Traffic) float64 {
	return testutil.ToFloat64(e.ctrl.metrics.waypointUnusable.WithLabelValues(string(traffic)))
}

// wantWaypoint checks the waypoint of an Address: the hostname of the
// Service of Gateway ns/name, or none when name is "".
func wantWaypoint(t *testing.T, got *workloadv1alpha1.GatewayAddress, namespace, name string) {
	t.Helper()
	if name == "" {
		if got != nil {
			t.Errorf("waypoint %v, want none", got)
		}
		return
	}
	want := &workloadv1alpha1.GatewayAddress{
		Destination: &workloadv1alpha1.GatewayAddress_Hostname{Hostname: &workloadv1alpha1.NamespacedHostname{
			Namespace: namespace, Hostname: name + "." + namespace + ".svc.cluster.local"}},
		HboneMtlsPort: 15008,
	}
	if !proto.Equal(got, want) {
		t.Errorf("waypoint %v, want %v", got, want)
	}
}

func labelledService() *corev1.Service {
	s := service()
	s.Labels = map[string]string{model.LabelUseWaypoint: "wp"}
	return s
}

func TestWaypointBinding(t *testing.T) {
	e := start(t, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", pod("demo", "p1", "10.244.1.10")),
		gateway(t, "demo", "wp", "all", true))...)
	wantWaypoint(t, e.initial.updated[webName].GetService().GetWaypoint(), "demo", "wp")
	wantWaypoint(t, wl(t, e.initial, "uid-p1").GetWaypoint(), "", "")

	// The namespace label binds the workload traffic of its pods (the
	// Gateway takes all traffic); the Service keeps its own label.
	e.labelNamespace("demo", map[string]string{model.LabelUseWaypoint: "wp"})
	c := e.expect([]string{"uid-p1", "uid-p2"}, nil)
	wantWaypoint(t, wl(t, c, "uid-p1").GetWaypoint(), "demo", "wp")
	wantWaypoint(t, wl(t, c, "uid-p2").GetWaypoint(), "demo", "wp")
	e.sentinel()

	// The Gateway stops being Programmed: nothing goes to it any more,
	// and the three bindings are reported.
	e.putGateway(gateway(t, "demo", "wp", "all", false))
	c = e.expect([]string{webName, "uid-p1", "uid-p2"}, nil)
	for _, a := range c.updated {
		wantWaypoint(t, a.GetService().GetWaypoint(), "", "")
		wantWaypoint(t, a.GetWorkload().GetWaypoint(), "", "")
	}
	if s, w := e.unusable(model.TrafficService), e.unusable(model.TrafficWorkload); s != 1 || w != 2 {
		t.Errorf("unusable bindings: %v services, %v workloads; want 1 and 2", s, w)
	}
	if got := slices.Sorted(maps.Keys(e.ctrl.UnusableWaypointBindings())); !slices.Equal(got, []string{webName, "uid-p1", "uid-p2"}) {
		t.Errorf("UnusableWaypointBindings = %v", got)
	}

	// Programmed again, for services only: the Service gets it back, the
	// workloads stay without (and are still reported).
	e.putGateway(gateway(t, "demo", "wp", "service", true))
	c = e.expect([]string{webName}, nil)
	wantWaypoint(t, c.updated[webName].GetService().GetWaypoint(), "demo", "wp")
	if s, w := e.unusable(model.TrafficService), e.unusable(model.TrafficWorkload); s != 0 || w != 2 {
		t.Errorf("unusable bindings: %v services, %v workloads; want 0 and 2", s, w)
	}

	// A Gateway update that changes nothing the binding reads sends
	// nothing.
	g := gateway(t, "demo", "wp", "service", true)
	g.SetAnnotations(map[string]string{"note": "x"})
	e.putGateway(g)
	e.sentinel()

	// The Service opts out; then the Gateway is deleted.
	svc := labelledService()
	svc.Labels[model.LabelUseWaypoint] = model.UseWaypointNone
	if _, err := e.client.CoreV1().Services("demo").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c = e.expect([]string{webName}, nil)
	wantWaypoint(t, c.updated[webName].GetService().GetWaypoint(), "", "")
	if err := e.dyn.Resource(GatewaysResource).Namespace("demo").Delete(context.Background(), "wp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.sentinel() // nothing used it any more
	if got := e.ctrl.UnusableWaypointBindings(); len(got) != 2 || got["uid-p1"] == "" {
		t.Errorf("UnusableWaypointBindings = %v; want the two pods (their Gateway does not exist)", got)
	}
}

func TestWaypointLabelNamingMissingGateway(t *testing.T) {
	e := start(t, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", pod("demo", "p1", "10.244.1.10")))...)
	wantWaypoint(t, e.initial.updated[webName].GetService().GetWaypoint(), "", "")
	if got := e.unusable(model.TrafficService); got != 1 {
		t.Errorf("unusable service bindings %v, want 1", got)
	}
	// Created, but not Programmed yet: still nothing.
	e.putGateway(gateway(t, "demo", "wp", "", false))
	e.sentinel()
	e.putGateway(gateway(t, "demo", "wp", "", true))
	c := e.expect([]string{webName}, nil)
	wantWaypoint(t, c.updated[webName].GetService().GetWaypoint(), "demo", "wp")
	if got := e.unusable(model.TrafficService); got != 0 {
		t.Errorf("unusable service bindings %v, want 0", got)
	}

	// The Service is deleted: it is no longer reported either.
	e.putGateway(gateway(t, "demo", "wp", "", false))
	e.expect([]string{webName}, nil)
	if err := e.client.CoreV1().Services("demo").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expect([]string{"uid-p1"}, []string{webName})
	if got := e.unusable(model.TrafficService); got != 0 {
		t.Errorf("unusable service bindings %v after deletion, want 0", got)
	}
}

func TestWaypointInAnotherNamespace(t *testing.T) {
	e := start(t, append(fixture(), gateway(t, "other", "shared", "workload", true))...)
	// Namespace demo uses the waypoint of namespace other for its pods.
	e.labelNamespace("demo", map[string]string{model.LabelUseWaypoint: "shared", model.LabelUseWaypointNamespace: "other"})
	c := e.expect([]string{"uid-p1", "uid-p2"}, nil)
	wantWaypoint(t, wl(t, c, "uid-p2").GetWaypoint(), "other", "shared")
	e.sentinel()
	// Deleting that Gateway re-derives them.
	if err := e.dyn.Resource(GatewaysResource).Namespace("other").Delete(context.Background(), "shared", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c = e.expect([]string{"uid-p1", "uid-p2"}, nil)
	wantWaypoint(t, wl(t, c, "uid-p1").GetWaypoint(), "", "")
}

func TestWaypointPods(t *testing.T) {
	wp := pod("demo", "wp-7d4f8b-x", "fd00:10:244:1::99")
	wp.Labels = map[string]string{model.LabelGatewayName: "wp", model.LabelDataplaneMode: model.DataplaneModeNone}
	e := start(t, ns("demo", map[string]string{model.LabelDataplaneMode: model.DataplaneModeAmbient, model.LabelUseWaypoint: "wp"}),
		node("node-1"), wp, pod("demo", "p1", "10.244.1.10"), gateway(t, "demo", "wp", "all", true))
	w := wl(t, e.initial, "uid-wp-7d4f8b-x")
	if w.GetTunnelProtocol() != workloadv1alpha1.TunnelProtocol_HBONE || w.GetWaypoint() != nil {
		t.Errorf("waypoint pod: protocol %v waypoint %v; want HBONE (it terminates HBONE itself) and no waypoint", w.GetTunnelProtocol(), w.GetWaypoint())
	}
	wantWaypoint(t, wl(t, e.initial, "uid-p1").GetWaypoint(), "demo", "wp")
}

func TestWithoutGatewayAPI(t *testing.T) {
	e := startWith(t, false, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", pod("demo", "p1", "10.244.1.10")))...)
	got := slices.Sorted(maps.Keys(e.initial.updated))
	if want := []string{webName, "uid-p1", "uid-p2", "uid-p3"}; !slices.Equal(got, want) {
		t.Fatalf("initial resources %v, want %v", got, want)
	}
	wantWaypoint(t, e.initial.updated[webName].GetService().GetWaypoint(), "", "")
	e.sentinel()
}
