package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/waypoint"
)

// applyKeepsStatus makes the fake dynamic client answer server-side apply
// like the apiserver for a sole field manager: the object becomes the
// applied configuration, and its status (a subresource) is kept.
func applyKeepsStatus(tracker clienttesting.ObjectTracker) clienttesting.ReactionFunc {
	return func(action clienttesting.Action) (bool, runtime.Object, error) {
		pa, ok := action.(clienttesting.PatchAction)
		if !ok || pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		obj := &unstructured.Unstructured{}
		if err := json.Unmarshal(pa.GetPatch(), &obj.Object); err != nil {
			return true, nil, err
		}
		gvr, ns := pa.GetResource(), pa.GetNamespace()
		old, err := tracker.Get(gvr, ns, pa.GetName())
		switch {
		case apierrors.IsNotFound(err):
			return true, obj, tracker.Create(gvr, obj, ns)
		case err != nil:
			return true, nil, err
		}
		if st, ok := old.(*unstructured.Unstructured).Object["status"]; ok {
			obj.Object["status"] = st
		}
		return true, obj, tracker.Update(gvr, obj, ns)
	}
}

func gatewayObj(ns, name, class string, programmed bool) *unstructured.Unstructured {
	u := waypoint.Gateway(ns, name, waypoint.ForService)
	_ = unstructured.SetNestedField(u.Object, class, "spec", "gatewayClassName")
	status := "False"
	if programmed {
		status = "True"
	}
	u.Object["status"] = map[string]any{
		"conditions": []any{map[string]any{"type": "Programmed", "status": status, "reason": "Pending", "message": "0/1 replicas available"}},
		"addresses":  []any{map[string]any{"type": "IPAddress", "value": "10.96.0.20"}, map[string]any{"type": "IPAddress", "value": "fd00:10:96::20"}},
	}
	return u
}

type waypointCluster struct {
	typed *fake.Clientset
	dyn   *dynamicfake.FakeDynamicClient
}

func newWaypointCluster(gatewayAPI bool, typedObjs []runtime.Object, gateways ...runtime.Object) waypointCluster {
	cs := fake.NewClientset(typedObjs...)
	if gatewayAPI {
		cs.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
			GroupVersion: "gateway.networking.k8s.io/v1",
			APIResources: []metav1.APIResource{{Name: "gateways", Namespaced: true, Kind: "Gateway"}},
		}}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{waypoint.GatewayGVR: "GatewayList"})
	for _, g := range gateways {
		u := g.(*unstructured.Unstructured)
		if err := dyn.Tracker().Create(waypoint.GatewayGVR, u, u.GetNamespace()); err != nil {
			panic(err)
		}
	}
	dyn.PrependReactor("patch", "gateways", applyKeepsStatus(dyn.Tracker()))
	return waypointCluster{typed: cs, dyn: dyn}
}

func (c waypointCluster) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := NewCommand(Env{Out: &out, Connect: func(kube.Flags) (*kube.Clients, error) {
		return &kube.Clients{Typed: c.typed, Dynamic: c.dyn}, nil
	}})
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func svc(namespace, name string, labels map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels}}
}

var useWP = map[string]string{waypoint.LabelUseWaypoint: "waypoint"}

func TestWaypointCommands(t *testing.T) {
	base := func() []runtime.Object {
		return []runtime.Object{ns("demo", nil), ns("shop", nil),
			svc("demo", "web", useWP), svc("demo", "db", nil),
			svc("shop", "cart", map[string]string{waypoint.LabelUseWaypoint: "waypoint", waypoint.LabelUseWaypointNamespace: "demo"}),
			pod("demo", "waypoint-abc", "n1", map[string]string{waypoint.LabelGatewayName: "waypoint"}, true),
			pod("demo", "web-1", "n1", useWP, true)}
	}
	tests := []struct {
		name       string
		gatewayAPI bool
		typed      []runtime.Object
		gateways   []runtime.Object
		args       []string
		wantOut    []string
		wantErr    string
		check      func(t *testing.T, c waypointCluster)
	}{
		{name: "apply creates and waits", gatewayAPI: true, typed: base(),
			args:    []string{"waypoint", "apply", "-n", "demo", "--wait=false", "--for", "all"},
			wantOut: []string{"waypoint demo/waypoint created (Gateway of class ambit-waypoint, for all traffic)", "nothing uses it yet"},
			check: func(t *testing.T, c waypointCluster) {
				u, err := c.dyn.Resource(waypoint.GatewayGVR).Namespace("demo").Get(t.Context(), "waypoint", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if cl, _, _ := unstructured.NestedString(u.Object, "spec", "gatewayClassName"); cl != waypoint.Class || u.GetLabels()[waypoint.LabelWaypointFor] != "all" {
					t.Errorf("applied Gateway = %v", u.Object)
				}
				for _, a := range c.dyn.Actions() {
					if p, ok := a.(clienttesting.PatchAction); ok && p.GetPatchType() != types.ApplyPatchType {
						t.Errorf("Gateway written with %s, want server-side apply", p.GetPatchType())
					}
				}
			}},
		{name: "apply --enroll-namespace, already programmed", gatewayAPI: true,
			typed:    []runtime.Object{ns("demo", map[string]string{waypoint.LabelUseWaypointNamespace: "old"})},
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", waypoint.Class, true)},
			args:     []string{"waypoint", "apply", "-n", "demo", "--enroll-namespace", "--timeout", "5s"},
			wantOut: []string{"waypoint demo/waypoint configured", "namespace demo labelled ambit.dev/use-waypoint=waypoint",
				"waypoint demo/waypoint is Programmed (address 10.96.0.20, fd00:10:96::20)"},
			check: func(t *testing.T, c waypointCluster) {
				n, err := c.typed.CoreV1().Namespaces().Get(t.Context(), "demo", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if n.Labels[waypoint.LabelUseWaypoint] != "waypoint" || n.Labels[waypoint.LabelUseWaypointNamespace] != "" {
					t.Errorf("namespace labels = %v", n.Labels)
				}
			}},
		{name: "apply --wait times out with the conditions and the fix", gatewayAPI: true, typed: base(),
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", waypoint.Class, false)},
			args:     []string{"waypoint", "apply", "-n", "demo", "--timeout", "50ms"},
			wantOut: []string{"waiting for waypoint demo/waypoint: Programmed=False Pending", "  Programmed=False Pending: 0/1 replicas available",
				"kubectl -n demo describe deployment waypoint", "kubectl -n demo logs deployment/waypoint"},
			wantErr: ErrWaypointNotProgrammed.Error()},
		{name: "apply refuses another class", gatewayAPI: true, typed: base(),
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", "nginx", true)},
			args:     []string{"waypoint", "apply", "-n", "demo", "--timeout", "5s"}, wantErr: `class "nginx", not ambit-waypoint`},
		{name: "apply without the Gateway API", typed: base(), args: []string{"waypoint", "apply", "-n", "demo"},
			wantErr: "ambitctl install installs them"},
		{name: "apply to a missing namespace", gatewayAPI: true, typed: base(), args: []string{"waypoint", "apply", "-n", "nope"},
			wantErr: "namespace nope not found"},
		{name: "apply needs -n", gatewayAPI: true, typed: base(), args: []string{"waypoint", "apply"}, wantErr: "-n/--namespace is required"},
		{name: "apply bad --for", gatewayAPI: true, typed: base(), args: []string{"waypoint", "apply", "-n", "demo", "--for", "pods"}, wantErr: `--for "pods"`},
		{name: "list every namespace", gatewayAPI: true, typed: base(),
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", waypoint.Class, true), gatewayObj("shop", "edge", "nginx", true)},
			args:     []string{"waypoint", "list", "-A"},
			wantOut:  []string{"NAMESPACE   NAME       FOR       PROGRAMMED   ADDRESS\ndemo        waypoint   service   True         10.96.0.20,fd00:10:96::20\n"}},
		{name: "list one namespace", gatewayAPI: true, typed: base(),
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", waypoint.Class, true)},
			args:     []string{"waypoint", "list", "-n", "shop"}, wantOut: []string{"No waypoint in namespace shop"}},
		{name: "list -n and -A", gatewayAPI: true, args: []string{"waypoint", "list", "-n", "demo", "-A"}, wantErr: "exclude each other"},
		{name: "status", gatewayAPI: true, typed: append(base(), ns("team", useWP)),
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", waypoint.Class, true)},
			args:     []string{"waypoint", "status", "-n", "demo"},
			wantOut: []string{"Waypoint demo/waypoint (class ambit-waypoint, for service traffic)", "waypoint-abc   n1     Running   yes",
				"  service demo/web\n  service shop/cart\n  pod demo/web-1\n"}},
		{name: "status of a missing waypoint", gatewayAPI: true, typed: base(), args: []string{"waypoint", "status", "-n", "demo", "--name", "edge"},
			wantErr: "ambitctl waypoint apply -n demo --name edge creates it"},
		{name: "delete unlabels the namespace and warns", gatewayAPI: true,
			typed:    append(base()[1:], ns("demo", useWP)),
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", waypoint.Class, true)},
			args:     []string{"waypoint", "delete", "-n", "demo"},
			wantOut: []string{"namespace demo: removed label ambit.dev/use-waypoint=waypoint", "waypoint demo/waypoint deleted",
				"warning: 3 object(s) still name it with ambit.dev/use-waypoint=waypoint: service demo/web, service shop/cart, pod demo/web-1"},
			check: func(t *testing.T, c waypointCluster) {
				if _, err := c.dyn.Resource(waypoint.GatewayGVR).Namespace("demo").Get(t.Context(), "waypoint", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("Gateway still there: %v", err)
				}
				n, _ := c.typed.CoreV1().Namespaces().Get(t.Context(), "demo", metav1.GetOptions{})
				if _, ok := n.Labels[waypoint.LabelUseWaypoint]; ok {
					t.Errorf("namespace labels = %v", n.Labels)
				}
			}},
		{name: "delete keeps a namespace label naming another waypoint", gatewayAPI: true,
			typed:    []runtime.Object{ns("demo", map[string]string{waypoint.LabelUseWaypoint: "edge"})},
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", waypoint.Class, true)},
			args:     []string{"waypoint", "delete", "-n", "demo"},
			wantOut:  []string{"waypoint demo/waypoint deleted"},
			check: func(t *testing.T, c waypointCluster) {
				n, _ := c.typed.CoreV1().Namespaces().Get(t.Context(), "demo", metav1.GetOptions{})
				if n.Labels[waypoint.LabelUseWaypoint] != "edge" {
					t.Errorf("namespace labels = %v", n.Labels)
				}
			}},
		{name: "delete refuses another class", gatewayAPI: true, typed: base(),
			gateways: []runtime.Object{gatewayObj("demo", "waypoint", "nginx", true)},
			args:     []string{"waypoint", "delete", "-n", "demo"}, wantErr: "it is not a waypoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newWaypointCluster(tc.gatewayAPI, tc.typed, tc.gateways...)
			out, err := c.run(t, tc.args...)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("ambitctl %v: %v\n%s", tc.args, err, out)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("ambitctl %v: err = %v, want it to contain %q\n%s", tc.args, err, tc.wantErr, out)
			}
			if tc.wantErr == ErrWaypointNotProgrammed.Error() && !errors.Is(err, ErrWaypointNotProgrammed) {
				t.Errorf("err = %v, want ErrWaypointNotProgrammed", err)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("ambitctl %v output lacks %q:\n%s", tc.args, w, out)
				}
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// TestWaypointNamespaceFlag: under waypoint, -n is the waypoint's
// namespace, and the root's -n (Ambit's namespace) still works elsewhere.
func TestWaypointNamespaceFlag(t *testing.T) {
	cmd := NewCommand(Env{})
	wp, _, err := cmd.Find([]string{"waypoint", "status"})
	if err != nil {
		t.Fatal(err)
	}
	if err := wp.ParseFlags([]string{"-n", "demo"}); err != nil {
		t.Fatal(err)
	}
	if f := wp.Flags().Lookup("namespace"); f == nil || f.Value.String() != "demo" || f.DefValue != "" {
		t.Errorf("waypoint status -n = %+v, want demo with no default", f)
	}
	if f := cmd.PersistentFlags().Lookup("namespace"); f.Value.String() != "ambit-system" {
		t.Errorf("root -n changed to %q", f.Value.String())
	}
}
