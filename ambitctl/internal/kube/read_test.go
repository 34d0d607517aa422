package kube

import (
	"slices"
	"strings"
	"testing"

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

	"ambit.dev/ambitctl/internal/check"
	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/pkg/enrol"
)

func readyPod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}

func readyNode(name string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.NodeInfo.KernelVersion = "6.1.0-18-amd64"
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	return n
}

func daemonSet(name string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: name},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
}

// installed is a healthy two-node installation.
func installed() []runtime.Object {
	one := int32(1)
	return []runtime.Object{
		readyNode("n1"), readyNode("n2"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambit-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"team": "a"}}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "ambit-controlplane"},
			Spec: appsv1.DeploymentSpec{Replicas: &one, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "controlplane", Image: "localhost/ambit-controlplane:dev"}}}}},
			Status: appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}},
		daemonSet("ztunnel"), daemonSet("ambit-node-agent"),
		readyPod("ambit-system", "ztunnel-a", "n1", map[string]string{"app": "ztunnel"}),
		readyPod("ambit-system", "ztunnel-b", "n2", map[string]string{"app": "ztunnel"}),
		readyPod("ambit-system", "agent-a", "n1", map[string]string{"app": "ambit-node-agent"}),
		readyPod("ambit-system", "agent-b", "n2", map[string]string{"app": "ambit-node-agent"}),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: "ambit-root-cert"}, Data: map[string]string{"root-cert.pem": "PEM"}},
		readyPod("demo", "web", "n1", nil),
		readyPod("demo", "host", "n2", nil),
	}
}

func clientset(objs ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset(objs...)
	cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.34.4"}
	return cs
}

func crdObjects(established ...string) *dynamicfake.FakeDynamicClient {
	var objs []runtime.Object
	for _, name := range established {
		objs = append(objs, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": map[string]any{"name": name},
			"status": map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True"}}}}})
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{CRDResource: "CustomResourceDefinitionList"}, objs...)
}

func TestReadInstall(t *testing.T) {
	tests := []struct {
		name     string
		objs     []runtime.Object
		crds     []string
		wantFail []string
	}{
		{"healthy", installed(), components.CRDs, nil},
		{"ztunnel gone from n2, one CRD missing", slices.DeleteFunc(installed(), func(o runtime.Object) bool {
			p, ok := o.(*corev1.Pod)
			return ok && p.Name == "ztunnel-b"
		}), slices.DeleteFunc(slices.Clone(components.CRDs), func(n string) bool { return n == "peerauthentications.security.ambit.dev" }), []string{
			"FAIL  CRDs missing: peerauthentications.security.ambit.dev:",
			"FAIL  ztunnel is not running on node n2: kubectl -n ambit-system describe pod -l app=ztunnel --field-selector spec.nodeName=n2",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, err := ReadInstall(t.Context(), clientset(tc.objs...), crdObjects(tc.crds...), "ambit-system")
			if err != nil {
				t.Fatal(err)
			}
			var fails []string
			for _, r := range check.PostInstall(in) {
				if r.Status == check.Fail {
					fails = append(fails, r.Line())
				}
			}
			if len(fails) != len(tc.wantFail) {
				t.Fatalf("failures:\n%s\nwant %d", strings.Join(fails, "\n"), len(tc.wantFail))
			}
			for i := range fails {
				if !strings.HasPrefix(fails[i], tc.wantFail[i]) {
					t.Errorf("failure %d = %s\nwant prefix %s", i, fails[i], tc.wantFail[i])
				}
			}
		})
	}
}

func TestReadPreflight(t *testing.T) {
	objs := append(installed(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}},
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "cilium-config"}, Data: map[string]string{"cni-exclusive": "true"}})
	c, err := ReadPreflight(t.Context(), clientset(objs...), "ambit-system")
	if err != nil {
		t.Fatal(err)
	}
	got := check.Lines(check.Preflight(c))
	for _, want := range []string{
		"ok    apiserver reachable, Kubernetes v1.34.4",
		"ok    2 node(s) Ready with a CNI network: n1, n2",
		"ok    kernel 4.18 or newer on 2 node(s)",
		"FAIL  Istio ambient's ztunnel DaemonSet runs in namespace istio-system",
		"FAIL  Cilium is configured with cni-exclusive=true",
	} {
		if !slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("pre-flight lacks %q:\n%s", want, strings.Join(got, "\n"))
		}
	}
	// Ambit's own ztunnel is not a conflicting mesh.
	if slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "namespace ambit-system: it captures") }) {
		t.Errorf("Ambit's own ztunnel reported as a conflict:\n%s", strings.Join(got, "\n"))
	}
}

func TestEnrollUnenrollStatus(t *testing.T) {
	cs := clientset(installed()...)
	ctx := t.Context()
	nsLabels := func() map[string]string {
		ns, err := cs.CoreV1().Namespaces().Get(ctx, "demo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ns.Labels
	}

	lines, err := Enroll(ctx, cs, "demo", "ambit-system")
	if err != nil {
		t.Fatal(err)
	}
	if lines[0] != "namespace demo enrolled: labelled ambit.dev/dataplane-mode=ambient" ||
		!strings.Contains(lines[1], "2 join the mesh (host, web)") {
		t.Fatalf("Enroll lines:\n%s", strings.Join(lines, "\n"))
	}
	if l := nsLabels(); l[enrol.LabelDataplaneMode] != "ambient" || l["team"] != "a" {
		t.Fatalf("labels after enroll = %v, want the enrolment label added and others kept", l)
	}
	lines, err = Enroll(ctx, cs, "demo", "ambit-system")
	if err != nil || !strings.Contains(lines[0], "already enrolled") {
		t.Fatalf("second Enroll = %q, %v", lines, err)
	}

	st, err := ReadStatus(ctx, cs, "ambit-system")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Namespaces) != 1 || st.Namespaces[0].Name != "demo" || len(st.Namespaces[0].Pods) != 2 ||
		len(st.Ztunnels) != 2 || !st.Ztunnels[0].Ready || st.Ztunnels[1].Pod != "ztunnel-b" {
		t.Fatalf("status = %+v", st)
	}

	lines, err = Unenroll(ctx, cs, "demo")
	if err != nil || !strings.HasPrefix(lines[0], "namespace demo unenrolled") {
		t.Fatalf("Unenroll = %q, %v", lines, err)
	}
	if l := nsLabels(); l[enrol.LabelDataplaneMode] != "" || l["team"] != "a" {
		t.Fatalf("labels after unenroll = %v, want the enrolment label gone and others kept", l)
	}
	lines, err = Unenroll(ctx, cs, "demo")
	if err != nil || !strings.Contains(lines[0], "is not enrolled") {
		t.Fatalf("second Unenroll = %q, %v", lines, err)
	}

	for _, tc := range []struct{ ns, want string }{
		{"nope", "namespace nope not found: check the name (kubectl get namespaces) or create it"},
		{"ambit-system", "is where Ambit itself runs"},
	} {
		if _, err := Enroll(ctx, cs, tc.ns, "ambit-system"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Enroll(%s) = %v, want %q", tc.ns, err, tc.want)
		}
	}
}

func TestControlPlaneImages(t *testing.T) {
	images, found, err := ControlPlaneImages(t.Context(), clientset(installed()...), "ambit-system")
	if err != nil || !found || !slices.Equal(images, []string{"localhost/ambit-controlplane:dev"}) {
		t.Fatalf("ControlPlaneImages = %v, %v, %v", images, found, err)
	}
	_, found, err = ControlPlaneImages(t.Context(), clientset(), "ambit-system")
	if err != nil || found {
		t.Fatalf("ControlPlaneImages(empty cluster) = %v, %v", found, err)
	}
}

func TestTrustDomainArg(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "cluster.local"},
		{[]string{"--xds-address=x:15012", "--trust-domain=example.org", "--log-level=info"}, "example.org"},
		{[]string{"-trust-domain", "corp.example"}, "corp.example"},
		{[]string{"--trust-domain=a", "--trust-domain=b"}, "b"},
		{[]string{"--trust-domain-extra=x", "trust-domain=y"}, "cluster.local"},
	}
	for _, tc := range tests {
		if got := TrustDomainArg(tc.args); got != tc.want {
			t.Errorf("TrustDomainArg(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
