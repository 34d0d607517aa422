package kube

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/ca"
	"ambit.dev/controlplane/internal/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout only guards against a hung test; no test asserts on time.
const waitTimeout = 30 * time.Second

const webName = "demo/web.demo.svc.cluster.local"

// call is one UpdateAddresses call.
type call struct {
	updated map[string]*workloadv1alpha1.Address
	removed []string
}

// authzCall is one UpdateAuthorizations call.
type authzCall struct {
	updated map[string]*workloadv1alpha1.Authorization
	removed []string
}

// recorder is a Sink that records every call.
type recorder struct {
	calls chan call
	authz chan authzCall
}

func (r *recorder) UpdateAuthorizations(u map[string]*workloadv1alpha1.Authorization, rm []string) error {
	r.authz <- authzCall{updated: maps.Clone(u), removed: slices.Clone(rm)}
	return nil
}

func (r *recorder) UpdateAddresses(u map[string]*workloadv1alpha1.Address, rm []string) error {
	r.calls <- call{updated: maps.Clone(u), removed: slices.Clone(rm)}
	return nil
}

type env struct {
	t      *testing.T
	client *fake.Clientset
	dyn    *dynamicfake.FakeDynamicClient
	ctrl   *Controller
	rec    *recorder
	wp     *wpRecorder
	// initial is the first, complete batch.
	initial call
}

func ns(name string, lbl map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}}
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func pod(namespace, name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "web", Containers: []corev1.Container{{
			Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}

func service() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10", "fd00:96::10"}, Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http"),
		}}},
	}
}

func slice(name string, pods ...*corev1.Pod) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: new(corev1.ProtocolTCP)}},
	}
	for _, p := range pods {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		})
	}
	return s
}

// fixture: namespace demo (not enrolled) with p1 (IPv4, backs web) and p2
// (IPv6); namespace other (enrolled) with p3; node-1.
func fixture() []runtime.Object {
	p1 := pod("demo", "p1", "10.244.1.10")
	return []runtime.Object{
		ns("demo", nil), ns("other", map[string]string{model.LabelDataplaneMode: model.DataplaneModeAmbient}),
		node("node-1"),
		p1, pod("demo", "p2", "fd00:10:244:1::20"), pod("other", "p3", "10.244.1.30"),
		service(), slice("web-abc", p1),
	}
}

// start runs a controller on fake clients holding objs: policies and
// Gateways (*unstructured.Unstructured) in the dynamic client, the rest in
// the clientset. The API server serves the Gateway API.
func start(t *testing.T, objs ...runtime.Object) *env {
	t.Helper()
	return startWith(t, true, objs...)
}

// startWith is start with or without the Gateway API.
func startWith(t *testing.T, gatewayAPI bool, objs ...runtime.Object) *env {
	t.Helper()
	var core, policies, gateways []runtime.Object
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok && u.GetKind() == "Gateway" {
			gateways = append(gateways, o)
		} else if ok {
			policies = append(policies, o)
		} else {
			core = append(core, o)
		}
	}
	client := fake.NewClientset(core...)
	watched := 7 // namespaces, pods, services, endpointslices, nodes and the two policies
	if gatewayAPI {
		client.Resources = []*metav1.APIResourceList{{
			GroupVersion: GatewaysResource.GroupVersion().String(),
			APIResources: []metav1.APIResource{{Name: "gateways", Namespaced: true, Kind: "Gateway"}, {Name: "httproutes", Namespaced: true, Kind: "HTTPRoute"}, {Name: "grpcroutes", Namespaced: true, Kind: "GRPCRoute"}},
		}, {
			GroupVersion: HTTPFaultsResource.GroupVersion().String(),
			APIResources: []metav1.APIResource{{Name: "httpfaults", Namespaced: true, Kind: "HTTPFault"}},
		}}
		watched += 4 // gateways, httproutes, grpcroutes, httpfaults
	}
	listKinds := PolicyListKinds()
	maps.Copy(listKinds, GatewayListKinds())
	listKinds[HTTPFaultsResource] = "HTTPFaultList"
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, policies...)
	for _, g := range gateways {
		// Added with its resource: the fake's guess from the kind is
		// "gatewaies".
		if err := dyn.Tracker().Create(GatewaysResource, g, g.(*unstructured.Unstructured).GetNamespace()); err != nil {
			t.Fatal(err)
		}
	}
	// Make every watch a tracker watch, and count them, so the test changes
	// objects only once all informers watch (the fake clientset drops
	// events that happen between an informer's list and its watch).
	var mu sync.Mutex
	watching := map[string]bool{}
	client.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		gvr := action.GetResource()
		w, err := client.Tracker().Watch(gvr, action.GetNamespace())
		mu.Lock()
		watching[gvr.Resource] = true
		mu.Unlock()
		return true, w, err
	})
	dyn.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		gvr := action.GetResource()
		w, err := dyn.Tracker().Watch(gvr, action.GetNamespace())
		mu.Lock()
		watching[gvr.Resource] = true
		mu.Unlock()
		return true, w, err
	})
	rec := &recorder{calls: make(chan call, 100), authz: make(chan authzCall, 100)}
	wp := &wpRecorder{calls: make(chan wpCall, 1000)}
	ctrl, err := New(client, dyn, rec, Config{TrustDomain: "cluster.local", RootNamespace: "ambit-system", Waypoints: wp}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ctrl.Synced():
	case <-time.After(waitTimeout):
		t.Fatal("controller did not sync")
	}
	for {
		mu.Lock()
		n := len(watching)
		mu.Unlock()
		if n == watched {
			break
		}
		time.Sleep(time.Millisecond)
	}
	e := &env{t: t, client: client, dyn: dyn, ctrl: ctrl, rec: rec, wp: wp}
	if len(core) > 0 {
		e.initial = e.next()
	}
	return e
}

func (e *env) next() call {
	e.t.Helper()
	select {
	case c := <-e.rec.calls:
		return c
	case <-time.After(waitTimeout):
		e.t.Fatal("no UpdateAddresses call")
		return call{}
	}
}

// expect reads the next call and checks which names it updated and removed.
func (e *env) expect(updated, removed []string) call {
	e.t.Helper()
	c := e.next()
	got := slices.Sorted(maps.Keys(c.updated))
	slices.Sort(updated)
	if !slices.Equal(got, updated) || !slices.Equal(c.removed, removed) {
		e.t.Fatalf("UpdateAddresses(updated %v, removed %v); want updated %v, removed %v", got, c.removed, updated, removed)
	}
	return c
}

// sentinel changes p3 and checks that the next call is exactly p3's
// update: nothing else was sent before it.
func (e *env) sentinel() {
	e.t.Helper()
	e.updatePod("other", "p3", func(p *corev1.Pod) { p.Labels["version"] = time.Now().Format(time.RFC3339Nano) })
	e.expect([]string{"uid-p3"}, nil)
}

func (e *env) updatePod(namespace, name string, mod func(*corev1.Pod)) {
	e.t.Helper()
	ctx := context.Background()
	p, err := e.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	mod(p)
	if _, err := e.client.CoreV1().Pods(namespace).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func wl(t *testing.T, c call, name string) *workloadv1alpha1.Workload {
	t.Helper()
	w := c.updated[name].GetWorkload()
	if w == nil {
		t.Fatalf("no workload %s in %v", name, slices.Collect(maps.Keys(c.updated)))
	}
	return w
}

func TestInitialState(t *testing.T) {
	e := start(t, fixture()...)
	got := slices.Sorted(maps.Keys(e.initial.updated))
	want := []string{webName, "uid-p1", "uid-p2", "uid-p3"}
	if !slices.Equal(got, want) {
		t.Fatalf("initial resources %v, want %v", got, want)
	}
	p1 := wl(t, e.initial, "uid-p1")
	wantP1 := &workloadv1alpha1.Workload{
		Uid: "uid-p1", Name: "p1", Namespace: "demo", Addresses: [][]byte{{10, 244, 1, 10}}, Node: "node-1",
		ServiceAccount: "web", TrustDomain: "cluster.local", TunnelProtocol: workloadv1alpha1.TunnelProtocol_NONE,
		Services:      map[string]*workloadv1alpha1.PortList{webName: {Ports: []*workloadv1alpha1.Port{{ServicePort: 80, TargetPort: 8080}}}},
		CanonicalName: "web", CanonicalRevision: "latest", WorkloadName: "p1",
	}
	if !proto.Equal(p1, wantP1) {
		t.Errorf("p1 = %v\nwant %v", p1, wantP1)
	}
	if p2 := wl(t, e.initial, "uid-p2"); len(p2.GetAddresses()) != 1 || len(p2.GetAddresses()[0]) != 16 || len(p2.GetServices()) != 0 {
		t.Errorf("p2 (IPv6, no service) = %v", p2)
	}
	if p3 := wl(t, e.initial, "uid-p3"); p3.GetTunnelProtocol() != workloadv1alpha1.TunnelProtocol_HBONE {
		t.Errorf("p3 in an enrolled namespace has protocol %v, want HBONE", p3.GetTunnelProtocol())
	}
	svc := e.initial.updated[webName].GetService()
	if len(svc.GetAddresses()) != 2 || len(svc.GetPorts()) != 1 || svc.GetPorts()[0].GetTargetPort() != 0 {
		t.Errorf("web = %v; want two VIPs and port 80 with a named target port (0)", svc)
	}
}

func TestOnePodChangeSendsOneResource(t *testing.T) {
	e := start(t, fixture()...)
	e.updatePod("demo", "p1", func(p *corev1.Pod) { p.Labels["version"] = "v2" })
	c := e.expect([]string{"uid-p1"}, nil)
	if got := wl(t, c, "uid-p1").GetCanonicalRevision(); got != "v2" {
		t.Errorf("canonical revision = %q, want v2", got)
	}
	e.sentinel()

	// An update ztunnel cannot see (an unrelated annotation) sends nothing.
	e.updatePod("demo", "p1", func(p *corev1.Pod) { p.Annotations = map[string]string{"note": "x"} })
	e.sentinel()

	// Readiness is visible: one resource again.
	e.updatePod("demo", "p2", func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse })
	c = e.expect([]string{"uid-p2"}, nil)
	if got := wl(t, c, "uid-p2").GetStatus(); got != workloadv1alpha1.WorkloadStatus_UNHEALTHY {
		t.Errorf("status = %v, want UNHEALTHY", got)
	}
}

func TestNamespaceLabelUpdatesItsPods(t *testing.T) {
	e := start(t, fixture()...)
	ctx := context.Background()
	if _, err := e.client.CoreV1().Namespaces().Update(ctx, ns("demo", map[string]string{model.LabelDataplaneMode: model.DataplaneModeAmbient}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := e.expect([]string{"uid-p1", "uid-p2"}, nil)
	for _, n := range []string{"uid-p1", "uid-p2"} {
		if got := wl(t, c, n).GetTunnelProtocol(); got != workloadv1alpha1.TunnelProtocol_HBONE {
			t.Errorf("%s protocol = %v, want HBONE", n, got)
		}
	}
	// Removing the label takes them out again.
	if _, err := e.client.CoreV1().Namespaces().Update(ctx, ns("demo", nil), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c = e.expect([]string{"uid-p1", "uid-p2"}, nil)
	if got := wl(t, c, "uid-p1").GetTunnelProtocol(); got != workloadv1alpha1.TunnelProtocol_NONE {
		t.Errorf("protocol after unlabelling = %v, want NONE", got)
	}
	e.sentinel()
}

func TestDeletingAPodRemovesItsResource(t *testing.T) {
	e := start(t, fixture()...)
	if err := e.client.CoreV1().Pods("demo").Delete(context.Background(), "p2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expect(nil, []string{"uid-p2"})

	// A pod that terminates is removed as well (its IP may be reused).
	e.updatePod("demo", "p1", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	e.expect(nil, []string{"uid-p1"})
	e.sentinel()
}

func TestEndpointSliceChangeUpdatesOnlyChangedMembers(t *testing.T) {
	e := start(t, fixture()...)
	ctx := context.Background()
	p1, _ := e.client.CoreV1().Pods("demo").Get(ctx, "p1", metav1.GetOptions{})
	p2, _ := e.client.CoreV1().Pods("demo").Get(ctx, "p2", metav1.GetOptions{})

	// p2 joins web through a second slice, with another port for the named
	// target port: only p2 changes (the Service and p1 do not).
	s2 := slice("web-v6", p2)
	s2.AddressType = discoveryv1.AddressTypeIPv6
	s2.Ports[0].Port = new(int32(9090))
	if _, err := e.client.DiscoveryV1().EndpointSlices("demo").Create(ctx, s2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := e.expect([]string{"uid-p2"}, nil)
	ports := wl(t, c, "uid-p2").GetServices()[webName].GetPorts()
	if len(ports) != 1 || ports[0].GetServicePort() != 80 || ports[0].GetTargetPort() != 9090 {
		t.Errorf("p2 ports in web = %v, want 80->9090", ports)
	}

	// p1's endpoint turns not ready: p1 leaves web.
	s1 := slice("web-abc", p1)
	s1.Endpoints[0].Conditions.Ready = new(false)
	if _, err := e.client.DiscoveryV1().EndpointSlices("demo").Update(ctx, s1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c = e.expect([]string{"uid-p1"}, nil)
	if s := wl(t, c, "uid-p1").GetServices(); len(s) != 0 {
		t.Errorf("p1 services = %v, want none", s)
	}
	e.sentinel()

	// The Service is deleted: its resource goes, and p2 loses it.
	if err := e.client.CoreV1().Services("demo").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c = e.expect([]string{"uid-p2"}, []string{webName})
	if s := wl(t, c, "uid-p2").GetServices(); len(s) != 0 {
		t.Errorf("p2 services = %v, want none", s)
	}
	e.sentinel()
}

func TestServicePortChange(t *testing.T) {
	e := start(t, fixture()...)
	svc := service()
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "admin", Port: 9000, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9001)})
	if _, err := e.client.CoreV1().Services("demo").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The slice does not list "admin" yet, so p1's mapping is unchanged:
	// only the Service is sent.
	c := e.expect([]string{webName}, nil)
	if n := len(c.updated[webName].GetService().GetPorts()); n != 2 {
		t.Errorf("web has %d ports, want 2", n)
	}
	e.sentinel()
}

func TestNodeDeletionMakesItsPodsUnhealthy(t *testing.T) {
	e := start(t, fixture()...)
	if err := e.client.CoreV1().Nodes().Delete(context.Background(), "node-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c := e.expect([]string{"uid-p1", "uid-p2", "uid-p3"}, nil)
	for _, w := range c.updated {
		if w.GetWorkload().GetStatus() != workloadv1alpha1.WorkloadStatus_UNHEALTHY {
			t.Errorf("%s status = %v, want UNHEALTHY", w.GetWorkload().GetName(), w.GetWorkload().GetStatus())
		}
	}
}

func TestPodRecreatedWithSameName(t *testing.T) {
	e := start(t, fixture()...)
	ctx := context.Background()
	if err := e.client.CoreV1().Pods("demo").Delete(ctx, "p2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expect(nil, []string{"uid-p2"})
	p := pod("demo", "p2", "fd00:10:244:1::21")
	p.UID = "uid-p2-new"
	if _, err := e.client.CoreV1().Pods("demo").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.expect([]string{"uid-p2-new"}, nil)
}

func TestPodLookup(t *testing.T) {
	done := pod("demo", "job-1", "10.244.1.40")
	done.Status.Phase = corev1.PodSucceeded
	other := pod("demo", "elsewhere", "10.244.2.40")
	other.Spec.NodeName = "node-2"
	other.Spec.ServiceAccountName = ""
	e := start(t, append(fixture(), done, other)...)

	var lookup ca.PodLookup = e.ctrl
	var got []string
	for _, r := range lookup.PodsOnNode("node-1") {
		got = append(got, r.Namespace+"/"+r.Name+"/"+r.ServiceAccount)
	}
	slices.Sort(got)
	if want := []string{"demo/p1/web", "demo/p2/web", "other/p3/web"}; !slices.Equal(got, want) {
		t.Errorf("PodsOnNode(node-1) = %v, want %v (terminated pods left out)", got, want)
	}
	if r, ok := lookup.PodByName("demo", "elsewhere"); !ok || r != (ca.PodRef{Namespace: "demo", Name: "elsewhere", ServiceAccount: "default", NodeName: "node-2", UID: "uid-elsewhere"}) {
		t.Errorf("PodByName(demo, elsewhere) = %+v, %v", r, ok)
	}
	if _, ok := lookup.PodByName("demo", "job-1"); ok {
		t.Error("PodByName found a terminated pod")
	}
	if _, ok := lookup.PodByName("demo", "nope"); ok {
		t.Error("PodByName found a pod that does not exist")
	}
	if n := len(lookup.PodsOnNode("")); n != 0 {
		t.Errorf("PodsOnNode(\"\") = %d pods, want 0", n)
	}
}
