package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/install"
	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/manifest"
	"ambit.dev/ambitctl/internal/ztunneladmin"
	"ambit.dev/deploy/charts"
	"ambit.dev/ztunnel/pkg/adminapi"
)

var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func pod(ns, name, node string, labels map[string]string, ready bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	return p
}

func cluster(ztunnelOnN2 bool) []runtime.Object {
	one := int32(1)
	node := func(name string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		n.Status.NodeInfo.KernelVersion = "6.1.0"
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		return n
	}
	ds := func(name string) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: name},
			Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
	}
	objs := []runtime.Object{
		node("n1"), node("n2"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambit-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "ambit-controlplane"},
			Spec: appsv1.DeploymentSpec{Replicas: &one, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "controlplane", Image: "localhost/ambit-controlplane:dev"}}}}},
			Status: appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}},
		ds("ztunnel"), ds("ambit-node-agent"),
		pod("ambit-system", "ztunnel-a", "n1", map[string]string{"app": "ztunnel"}, true),
		pod("ambit-system", "agent-a", "n1", map[string]string{"app": "ambit-node-agent"}, true),
		pod("ambit-system", "agent-b", "n2", map[string]string{"app": "ambit-node-agent"}, true),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "ambit-root-cert"}, Data: map[string]string{"root-cert.pem": "PEM"}},
		pod("demo", "web", "n1", nil, true),
	}
	if ztunnelOnN2 {
		objs = append(objs, pod("ambit-system", "ztunnel-b", "n2", map[string]string{"app": "ztunnel"}, true))
	}
	return objs
}

func crds() *dynamicfake.FakeDynamicClient {
	var objs []runtime.Object
	for _, name := range components.CRDs {
		objs = append(objs, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": map[string]any{"name": name},
			"status": map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True"}}}}})
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{kube.CRDResource: "CustomResourceDefinitionList"}, objs...)
}

type dumpGetter map[string]adminapi.ConfigDump

func (d dumpGetter) Get(_ context.Context, _, pod string, _ int, path string) ([]byte, error) {
	if path != adminapi.PathWorkloads {
		return nil, errors.New("unexpected path " + path)
	}
	return json.Marshal(d[pod].Workloads)
}

func run(t *testing.T, objs []runtime.Object, args ...string) (string, error) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.34.4"}
	var out bytes.Buffer
	cmd := NewCommand(Env{
		Out: &out, Now: func() time.Time { return now }, Version: "v9.9.9",
		Connect: func(kube.Flags) (*kube.Clients, error) { return &kube.Clients{Typed: cs, Dynamic: crds()}, nil },
		Render:  charts.Render,
		ReadFile: func(p string) ([]byte, error) {
			return nil, errors.New("open " + p + ": no such file or directory")
		},
		Getter: func(*kube.Clients) ztunneladmin.Getter {
			return dumpGetter{"ztunnel-a": {Workloads: []adminapi.WorkloadDump{{UID: "1", Name: "web", Namespace: "demo", Node: "n1",
				Protocol: "HBONE", MTLSMode: "STRICT", Addresses: []string{"10.244.1.5", "fd00:10:244:1::5"}, Captured: true}}},
				"ztunnel-b": {}}
		},
	})
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name     string
		objs     []runtime.Object
		args     []string
		wantOut  []string
		wantErr  string
		notInOut []string
	}{
		{"check healthy", cluster(true), []string{"check"}, []string{"ok    ztunnel ready on 2 node(s): n1, n2", "all checks passed"}, "", nil},
		{"check catches a missing ztunnel", cluster(false), []string{"check"},
			[]string{"FAIL  ztunnel is not running on node n2: kubectl -n ambit-system describe pod -l app=ztunnel --field-selector spec.nodeName=n2",
				"1 check(s) failed"}, ErrChecksFailed.Error(), nil},
		{"check in another namespace", cluster(true), []string{"check", "-n", "mesh"},
			[]string{"FAIL  control plane Deployment mesh/ambit-controlplane not found: run ambitctl install -n mesh"}, ErrChecksFailed.Error(), nil},
		{"pre-flight", cluster(true), []string{"check", "--pre"},
			[]string{"ok    apiserver reachable, Kubernetes v1.34.4", "ok    no other mesh found", "all checks passed"}, "", nil},
		{"enroll", cluster(true), []string{"enroll", "demo"},
			[]string{"namespace demo enrolled: labelled ambit.dev/dataplane-mode=ambient", "1 join the mesh (web)"}, "", nil},
		{"enroll needs a namespace", cluster(true), []string{"enroll"}, nil, "accepts 1 arg(s), received 0", nil},
		{"status", cluster(true), []string{"status"}, []string{"No namespace is enrolled", "n2     ztunnel-b     yes"}, "", nil},
		{"ztunnel one node is ztunnel-admin's table", cluster(true), []string{"ztunnel", "workloads", "--node", "n1"},
			[]string{"NAMESPACE   NAME   ADDRESSES                     NODE   PROTOCOL   MTLS     CAPTURED   SERVICE ACCOUNT\n" +
				"demo        web    10.244.1.5,fd00:10:244:1::5   n1     HBONE      STRICT   yes        -\n"}, "", []string{"# node"}},
		{"ztunnel every node", cluster(true), []string{"ztunnel", "workloads"},
			[]string{"# node n1 (pod ambit-system/ztunnel-a)\n", "\n# node n2 (pod ambit-system/ztunnel-b)\nNAMESPACE"}, "", nil},
		{"ztunnel bad output", cluster(true), []string{"ztunnel", "certs", "-o", "yaml"}, nil, `unknown output format "yaml"`, nil},
		{"ztunnel unknown node", cluster(true), []string{"ztunnel", "workloads", "--node", "n9"}, nil, "no running ztunnel pod on node n9", nil},
		{"version", cluster(true), []string{"version"}, []string{"ambitctl: v9.9.9\ncontrol plane: localhost/ambit-controlplane:dev\n"}, "", nil},
		{"version, not installed", nil, []string{"version"}, []string{"control plane: not installed in namespace ambit-system"}, "", nil},
		{"install: bad --set", nil, []string{"install", "--set", "novalue"}, nil, `--set "novalue"`, nil},
		{"install: missing values file", nil, []string{"install", "-f", "nope.yaml"}, nil, "reading values file nope.yaml", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.objs, tc.args...)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("ambitctl %v: %v\n%s", tc.args, err, out)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("ambitctl %v: err = %v, want it to contain %q", tc.args, err, tc.wantErr)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("ambitctl %v output lacks %q:\n%s", tc.args, w, out)
				}
			}
			for _, w := range tc.notInOut {
				if strings.Contains(out, w) {
					t.Errorf("ambitctl %v output has %q:\n%s", tc.args, w, out)
				}
			}
		})
	}
}

// TestChartMatchesComponents guards the names ambitctl looks for against
// the chart it installs.
func TestChartMatchesComponents(t *testing.T) {
	for _, ns := range []string{components.DefaultNamespace, "mesh"} {
		t.Run(ns, func(t *testing.T) {
			stream, err := charts.Render(ns, nil)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := manifest.Parse(stream)
			if err != nil {
				t.Fatal(err)
			}
			var crdNames, workloads []string
			for _, o := range objs {
				if manifest.IsCRD(o) {
					crdNames = append(crdNames, o.GetName())
				}
				if o.GetKind() != "Namespace" && o.GetNamespace() == "" && !strings.HasPrefix(o.GetKind(), "Cluster") && !manifest.IsCRD(o) {
					t.Errorf("%s has no namespace", manifest.Ref(o))
				}
			}
			for _, w := range install.Workloads(objs) {
				workloads = append(workloads, w.GetKind()+" "+w.GetNamespace()+"/"+w.GetName()+" selector "+install.PodSelector(w))
			}
			slices.Sort(crdNames)
			if !slices.Equal(crdNames, components.CRDs) {
				t.Errorf("chart CRDs = %v, ambitctl checks %v", crdNames, components.CRDs)
			}
			var want []string
			for _, w := range components.Workloads() {
				want = append(want, w.Kind+" "+ns+"/"+w.Name+" selector "+components.DefaultSelector(w.Name))
			}
			slices.Sort(workloads)
			slices.Sort(want)
			if !slices.Equal(workloads, want) {
				t.Errorf("chart workloads =\n  %s\nambitctl expects\n  %s", strings.Join(workloads, "\n  "), strings.Join(want, "\n  "))
			}
			plan := install.DeletePlan(objs, false)
			if len(plan.Kept) == 0 || len(plan.Workloads) != 3 {
				t.Errorf("delete plan of the chart: %d workloads, kept %d", len(plan.Workloads), len(plan.Kept))
			}
		})
	}
}
