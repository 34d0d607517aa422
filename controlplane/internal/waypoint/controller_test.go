package waypoint

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/model"
)

// testRoots stands for the CA's PEM roots (the controller copies them
// without parsing).
const testRoots = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout only guards against a hung test; no test asserts on time.
const waitTimeout = 30 * time.Second

type env struct {
	t      *testing.T
	client *fake.Clientset
	dyn    *dynamicfake.FakeDynamicClient
	ctrl   *Controller
}

func toUnstructured(t *testing.T, obj runtime.Object, kind string) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(gwapiv1.GroupVersion.String())
	u.SetKind(kind)
	return u
}

// start runs a controller on fake clients: gateways in the dynamic client
// (the API server serves the Gateway API when gatewayAPI is true), objs in
// the clientset. The test's end stops it and checks that Run returned nil.
func start(t *testing.T, gatewayAPI bool, gateways []*gwapiv1.Gateway, objs ...runtime.Object) *env {
	t.Helper()
	// The control plane's Service and the CA's mesh roots.
	objs = append(objs,
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "ambit-controlplane"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.5"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: RootCertConfigMap}, Data: map[string]string{RootCertKey: testRoots}})
	client := fake.NewClientset(objs...)
	if gatewayAPI {
		client.Resources = []*metav1.APIResourceList{{
			GroupVersion: gwapiv1.GroupVersion.String(),
			APIResources: []metav1.APIResource{{Name: "gateways", Namespaced: true, Kind: "Gateway"}, {Name: "gatewayclasses", Kind: "GatewayClass"}},
		}}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), ListKinds())
	// The fake's apply is a strategic merge patch, which it cannot do on
	// unstructured objects, and only on existing ones. This reactor
	// applies as a JSON merge (maps merged, lists and values replaced) and
	// creates a missing object, which is what the controller's applies
	// need (it sends every condition it owns).
	dyn.PrependReactor("patch", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		pa := action.(k8stesting.PatchAction)
		if pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		patch := map[string]any{}
		if err := yaml.Unmarshal(pa.GetPatch(), &patch); err != nil {
			return true, nil, err
		}
		gvr, ns := pa.GetResource(), pa.GetNamespace()
		cur, err := dyn.Tracker().Get(gvr, ns, pa.GetName())
		switch {
		case apierrors.IsNotFound(err) && pa.GetSubresource() == "":
			u := &unstructured.Unstructured{Object: patch}
			return true, u, dyn.Tracker().Create(gvr, u, ns)
		case err != nil:
			return true, nil, err
		}
		u := cur.(*unstructured.Unstructured).DeepCopy()
		mergeInto(u.Object, patch)
		return true, u, dyn.Tracker().Update(gvr, u, ns)
	})
	for _, g := range gateways {
		if err := dyn.Tracker().Create(GatewaysResource, toUnstructured(t, g, "Gateway"), g.Namespace); err != nil {
			t.Fatal(err)
		}
	}
	ctrl, err := New(client, dyn, Config{
		Image: "localhost/ambit-waypoint:dev", PullPolicy: corev1.PullNever, TrustDomain: "cluster.local",
		XDSAddress: "ambit-controlplane.ambit-system.svc:15012", ControlPlaneName: "ambit-controlplane.ambit-system.svc",
		DiscoveryInterval: 10 * time.Millisecond,
	}, slog.New(slog.DiscardHandler))
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
	return &env{t: t, client: client, dyn: dyn, ctrl: ctrl}
}

// mergeInto merges src into dst: maps recursively, everything else
// replaced.
func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// eventually polls cond until it holds; what describes the wait.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) gateway(ns, name string) *gwapiv1.Gateway {
	e.t.Helper()
	u, err := e.dyn.Resource(GatewaysResource).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	gw, err := toGateway(u)
	if err != nil {
		e.t.Fatal(err)
	}
	return gw
}

func (e *env) condition(ns, name, typ string) metav1.Condition {
	return *findCondition(e.gateway(ns, name).Status.Conditions, typ)
}

func TestRunDeploysWaypoint(t *testing.T) {
	e := start(t, true, []*gwapiv1.Gateway{waypointGateway()})
	ctx := context.Background()

	// The GatewayClass is created and accepted.
	e.eventually("the GatewayClass to be accepted", func() bool {
		u, err := e.dyn.Resource(GatewayClassesResource).Get(ctx, model.WaypointClass, metav1.GetOptions{})
		if err != nil {
			return false
		}
		gc, err := toGatewayClass(u)
		return err == nil && gc.Spec.ControllerName == model.WaypointControllerName &&
			findCondition(gc.Status.Conditions, "Accepted").Status == metav1.ConditionTrue
	})

	// The Gateway is accepted, and waits for its Deployment.
	e.eventually("the Gateway to be accepted", func() bool {
		return e.condition("demo", "wp", "Accepted").Status == metav1.ConditionTrue
	})
	if p := e.condition("demo", "wp", "Programmed"); p.Status != metav1.ConditionFalse || p.Reason != string(gwapiv1.GatewayReasonAddressNotAssigned) {
		t.Errorf("Programmed = %+v, want False: the fake Service has no ClusterIP", p)
	}
	sa, err := e.client.CoreV1().ServiceAccounts("demo").Get(ctx, "wp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := e.client.CoreV1().Services("demo").Get(ctx, "wp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep, err := e.client.AppsV1().Deployments("demo").Get(ctx, "wp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []metav1.Object{sa, svc, dep} {
		if ref := metav1.GetControllerOf(o); ref == nil || ref.UID != "uid-wp" {
			t.Errorf("%s: controller %+v, want Gateway uid-wp", o.GetName(), ref)
		}
		if !managedBy(o, FieldManager) {
			t.Errorf("%s: managed fields %+v, want an apply by %s", o.GetName(), o.GetManagedFields(), FieldManager)
		}
	}
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != "localhost/ambit-waypoint:dev" {
		t.Errorf("image %s", img)
	}
	// The control plane is reached by its ClusterIP (no DNS needed).
	env := map[string]string{}
	for _, v := range dep.Spec.Template.Spec.Containers[0].Env {
		env[v.Name] = v.Value
	}
	if env[EnvXDSAddress] != "10.96.0.5:15012" || env[EnvCAAddress] != "10.96.0.5:15017" || env[EnvControlPlaneName] != "ambit-controlplane.ambit-system.svc" {
		t.Errorf("control plane env %v", env)
	}
	// The mesh roots are copied into the Gateway's namespace.
	cm, err := e.client.CoreV1().ConfigMaps("demo").Get(ctx, RootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[RootCertKey] != testRoots || len(cm.OwnerReferences) != 1 || cm.OwnerReferences[0].UID != "uid-wp" {
		t.Errorf("root ConfigMap %+v", cm)
	}
	// ... and kept in sync when the CA's roots change (on the next
	// reconcile of the Gateway, here triggered by a Service update).
	root, err := e.client.CoreV1().ConfigMaps("ambit-system").Get(ctx, RootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root.Data[RootCertKey] = testRoots + testRoots
	if _, err := e.client.CoreV1().ConfigMaps("ambit-system").Update(ctx, root, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The API server assigns ClusterIPs; the Deployment becomes available.
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "10.96.0.20", []string{"10.96.0.20", "fd00:96::20"}
	if _, err := e.client.CoreV1().Services("demo").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("Programmed to wait for a replica", func() bool {
		return e.condition("demo", "wp", "Programmed").Reason == string(gwapiv1.GatewayReasonPending)
	})
	dep.Status.AvailableReplicas = 1
	if _, err := e.client.AppsV1().Deployments("demo").UpdateStatus(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the Gateway to be Programmed", func() bool {
		return e.condition("demo", "wp", "Programmed").Status == metav1.ConditionTrue
	})
	e.eventually("the copied roots to follow the CA's", func() bool {
		cm, err := e.client.CoreV1().ConfigMaps("demo").Get(ctx, RootCertConfigMap, metav1.GetOptions{})
		return err == nil && cm.Data[RootCertKey] == testRoots+testRoots
	})
	gw := e.gateway("demo", "wp")
	var addrs []string
	for _, a := range gw.Status.Addresses {
		addrs = append(addrs, string(*a.Type)+"="+a.Value)
	}
	if got, want := strings.Join(addrs, ","), "IPAddress=10.96.0.20,IPAddress=fd00:96::20,Hostname=wp.demo.svc.cluster.local"; got != want {
		t.Errorf("status.addresses %s, want %s", got, want)
	}

	// Deleting the Deployment brings it back.
	if err := e.client.AppsV1().Deployments("demo").Delete(ctx, "wp", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the Deployment to be recreated", func() bool {
		_, err := e.client.AppsV1().Deployments("demo").Get(ctx, "wp", metav1.GetOptions{})
		return err == nil
	})
}

func managedBy(o metav1.Object, manager string) bool {
	for _, m := range o.GetManagedFields() {
		if m.Manager == manager && m.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

func TestInvalidGatewayIsNotDeployed(t *testing.T) {
	bad := waypointGateway(func(g *gwapiv1.Gateway) {
		g.Name = "bad"
		g.UID = "uid-bad"
		g.Spec.Listeners[0].Protocol = "HTTP"
	})
	other := waypointGateway(func(g *gwapiv1.Gateway) {
		g.Name = "ingress"
		g.Spec.GatewayClassName = "istio"
	})
	e := start(t, true, []*gwapiv1.Gateway{bad, other, waypointGateway()})
	e.eventually("the invalid Gateway to be rejected", func() bool {
		return e.condition("demo", "bad", "Accepted").Status == metav1.ConditionFalse
	})
	acc := e.condition("demo", "bad", "Accepted")
	if acc.Reason != string(gwapiv1.GatewayReasonListenersNotValid) || !strings.Contains(acc.Message, `protocol "HTTP"`) {
		t.Errorf("Accepted = %+v", acc)
	}
	if p := e.condition("demo", "bad", "Programmed"); p.Status != metav1.ConditionFalse || p.Reason != string(gwapiv1.GatewayReasonInvalid) {
		t.Errorf("Programmed = %+v", p)
	}
	// The valid one in the same run is deployed: so the invalid one had
	// its turn and deployed nothing.
	e.eventually("the valid Gateway's Deployment", func() bool {
		_, err := e.client.AppsV1().Deployments("demo").Get(context.Background(), "wp", metav1.GetOptions{})
		return err == nil
	})
	for _, name := range []string{"bad", "ingress"} {
		if _, err := e.client.AppsV1().Deployments("demo").Get(context.Background(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Deployment %s: %v, want none", name, err)
		}
	}
	if c := e.gateway("demo", "ingress").Status.Conditions; len(c) != 0 {
		t.Errorf("a Gateway of another class got status %+v", c)
	}
}

func TestObjectsNotOwnedAreLeftAlone(t *testing.T) {
	mine := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "wp", Labels: map[string]string{"app": "mine"}}}
	e := start(t, true, []*gwapiv1.Gateway{waypointGateway()}, mine)
	e.eventually("the Gateway to be rejected", func() bool {
		return e.condition("demo", "wp", "Accepted").Status == metav1.ConditionFalse
	})
	if m := e.condition("demo", "wp", "Accepted").Message; !strings.Contains(m, "Deployment demo/wp that this Gateway does not own") {
		t.Errorf("message %q", m)
	}
	dep, err := e.client.AppsV1().Deployments("demo").Get(context.Background(), "wp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dep.OwnerReferences) != 0 || dep.Labels["app"] != "mine" || dep.Spec.Template.Spec.Containers != nil {
		t.Errorf("the user's Deployment was changed: %+v", dep)
	}
}

func TestRunWaitsForTheGatewayAPI(t *testing.T) {
	e := start(t, false, []*gwapiv1.Gateway{waypointGateway()})
	// Discovery is asked again and again; nothing is written meanwhile.
	e.eventually("a few discovery rounds", func() bool {
		n := 0
		for _, a := range e.client.Actions() {
			if a.GetVerb() == "get" && a.GetResource().Resource == "resource" {
				n++
			}
		}
		return n >= 3
	})
	for _, a := range e.dyn.Actions() {
		t.Errorf("dynamic client called while the Gateway API is missing: %v", a)
	}
}
