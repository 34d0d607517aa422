package check

import (
	"errors"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/readiness"
)

func node(name, kernel string, ready corev1.ConditionStatus, msg string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	n.Status.NodeInfo.KernelVersion = kernel
	if ready != "" {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: "KubeletNotReady", Message: msg}}
	}
	return n
}

func lines(rs []Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Line())
	}
	return out
}

// expect compares results with want lines, which must each be a prefix of
// the corresponding line.
func expect(t *testing.T, got []Result, want ...string) {
	t.Helper()
	gl := lines(got)
	if len(gl) != len(want) {
		t.Fatalf("got %d results, want %d:\n%s", len(gl), len(want), strings.Join(gl, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(gl[i], want[i]) {
			t.Errorf("result %d =\n  %s\nwant it to start with\n  %s", i, gl[i], want[i])
		}
	}
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in   string
		want Version
		ok   bool
	}{
		{"6.1.0-18-amd64", Version{6, 1}, true},
		{"4.18.0-425.el8.x86_64", Version{4, 18}, true},
		{"5.15.0-1034-azure", Version{5, 15}, true},
		{"v1.34.4", Version{1, 34}, true},
		{"v1.29.0-eks-1", Version{1, 29}, true},
		{"unknown", Version{}, false},
		{"", Version{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := ParseVersion(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("ParseVersion(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestAPIServer(t *testing.T) {
	tests := []struct {
		name string
		v    *version.Info
		err  error
		want string
	}{
		{"reachable", &version.Info{GitVersion: "v1.34.4"}, nil, "ok    apiserver reachable, Kubernetes v1.34.4"},
		{"minimum", &version.Info{GitVersion: "v1.29.0"}, nil, "ok    apiserver reachable, Kubernetes v1.29.0"},
		{"too old", &version.Info{GitVersion: "v1.28.9"}, nil, "FAIL  Kubernetes v1.28.9 is too old: upgrade the cluster to Kubernetes 1.29 or newer"},
		{"major minor only", &version.Info{Major: "1", Minor: "30+"}, nil, "ok    apiserver reachable"},
		{"unreadable", &version.Info{GitVersion: "weird"}, nil, `warn  apiserver reachable, but its version "weird" cannot be read`},
		{"unreachable", nil, errors.New("dial tcp 127.0.0.1:6443: connection refused"),
			"FAIL  cannot reach the Kubernetes apiserver (dial tcp 127.0.0.1:6443: connection refused): check --kubeconfig and --context"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, []Result{APIServer(tc.v, tc.err)}, tc.want) })
	}
}

func TestNodes(t *testing.T) {
	const cniMsg = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
	tests := []struct {
		name  string
		nodes []corev1.Node
		want  []string
	}{
		{"all ready", []corev1.Node{node("n1", "6.1.0", corev1.ConditionTrue, ""), node("n2", "6.1.0", corev1.ConditionTrue, "")},
			[]string{"ok    2 node(s) Ready with a CNI network: n1, n2"}},
		{"no CNI on n2", []corev1.Node{node("n1", "6.1.0", corev1.ConditionTrue, ""), node("n2", "6.1.0", corev1.ConditionFalse, cniMsg)},
			[]string{"ok    1 node(s) Ready", "FAIL  node n2 is not Ready: its container runtime has no network configured (NetworkReady=false): install a primary CNI plugin"}},
		{"kubelet down", []corev1.Node{node("n1", "6.1.0", corev1.ConditionUnknown, "Kubelet stopped posting node status.")},
			[]string{"FAIL  node n1 is not Ready (KubeletNotReady Kubelet stopped posting node status.): kubectl describe node n1"}},
		{"no condition", []corev1.Node{node("n1", "6.1.0", "", "")}, []string{"FAIL  node n1 is not Ready (no Ready condition reported)"}},
		{"no nodes", nil, []string{"FAIL  the cluster has no nodes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, Nodes(tc.nodes), tc.want...) })
	}
}

func TestKernels(t *testing.T) {
	tests := []struct {
		name  string
		nodes []corev1.Node
		want  []string
	}{
		{"new", []corev1.Node{node("n1", "6.18.44-fc", "", ""), node("n2", "6.1.0-18-amd64", "", "")},
			[]string{"ok    kernel 4.18 or newer on 2 node(s)"}},
		{"minimum, no nftables", []corev1.Node{node("n1", "4.18.0-425.el8.x86_64", "", "")},
			[]string{"ok    kernel 4.18 or newer on 1 node(s)", "warn  node(s) n1 run a kernel older than 5.13, too old for nftables redirection"}},
		{"too old", []corev1.Node{node("n1", "6.1.0", "", ""), node("old", "3.10.0-1160.el7.x86_64", "", "")},
			[]string{"ok    kernel 4.18 or newer on 1 node(s)", "FAIL  node old runs kernel 3.10.0-1160.el7.x86_64, older than 4.18: upgrade node old to Linux 4.18 or newer"}},
		{"unreadable", []corev1.Node{node("n1", "", "", "")}, []string{`warn  node n1 reports kernel "", which cannot be read`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, Kernels(tc.nodes), tc.want...) })
	}
}

func ds(ns, name string) appsv1.DaemonSet {
	return appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func TestMeshes(t *testing.T) {
	tests := []struct {
		name string
		c    Cluster
		want []string
	}{
		{"clean", Cluster{Namespace: "ambit-system", Namespaces: []string{"default", "kube-system", "ambit-system"},
			DaemonSets: []appsv1.DaemonSet{ds("ambit-system", "ztunnel"), ds("ambit-system", "ambit-node-agent"), ds("kube-system", "kube-proxy")}},
			[]string{"ok    no other mesh found"}},
		{"istio ambient", Cluster{Namespace: "ambit-system", Namespaces: []string{"istio-system"},
			DaemonSets: []appsv1.DaemonSet{ds("istio-system", "ztunnel"), ds("istio-system", "istio-cni-node")}},
			[]string{"FAIL  Istio ambient's ztunnel DaemonSet runs in namespace istio-system: it captures pods on the same ports as Ambit: remove Istio's ambient data plane first",
				"warn  Istio is installed (namespace istio-system)"}},
		{"istio sidecar mode with cni", Cluster{Namespace: "ambit-system", Namespaces: []string{"istio-system"},
			DaemonSets: []appsv1.DaemonSet{ds("kube-system", "istio-cni-node")}},
			[]string{"warn  istio-cni runs in namespace kube-system", "warn  Istio is installed"}},
		{"linkerd", Cluster{Namespace: "ambit-system", Namespaces: []string{"linkerd", "linkerd-cni"},
			DaemonSets: []appsv1.DaemonSet{ds("linkerd-cni", "linkerd-cni")}},
			[]string{"warn  Linkerd is installed (namespace linkerd): do not enrol namespaces whose pods carry linkerd-proxy",
				"warn  linkerd-cni runs in namespace linkerd-cni"}},
		{"cilium exclusive with mesh and socket LB", Cluster{Namespace: "ambit-system", CiliumConfig: map[string]string{
			"cni-exclusive": "true", "enable-envoy-config": "true", "kube-proxy-replacement": "true"}},
			[]string{"FAIL  Cilium is configured with cni-exclusive=true", "warn  Cilium's own service mesh is enabled",
				"warn  Cilium's socket load balancing runs in pod namespaces"}},
		{"cilium chained-friendly", Cluster{Namespace: "ambit-system", CiliumConfig: map[string]string{
			"cni-exclusive": "false", "kube-proxy-replacement": "true", "bpf-lb-sock-hostns-only": "true"}},
			[]string{"ok    no other mesh found"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expect(t, Meshes(tc.c), tc.want...) })
	}
}

func TestPreflightUnreachable(t *testing.T) {
	got := Preflight(Cluster{ServerErr: errors.New("no route to host"), Nodes: []corev1.Node{node("n1", "6.1", corev1.ConditionTrue, "")}})
	expect(t, got, "FAIL  cannot reach the Kubernetes apiserver (no route to host)")
	if !Failed(got) {
		t.Fatal("Failed = false for an unreachable apiserver")
	}
}

func readyPod(name, nodeName string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
}

func crashingPod(name, nodeName string) corev1.Pod {
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{Name: "ztunnel", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}}
}

func daemonSet(name string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "ambit-system", Name: name},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
}

// allCRDs has every CRD of components.CRDs established.
func allCRDs() map[string]readiness.State {
	m := map[string]readiness.State{}
	for _, name := range components.CRDs {
		m[name] = readiness.State{Ready: true}
	}
	return m
}

func healthy() Install {
	one := int32(1)
	return Install{
		Namespace: "ambit-system",
		Nodes:     []corev1.Node{node("n1", "6.1", corev1.ConditionTrue, ""), node("n2", "6.1", corev1.ConditionTrue, "")},
		CRDs:      allCRDs(),
		ControlPlane: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: &one},
			Status: appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}},
		DaemonSets: map[string]*appsv1.DaemonSet{components.Ztunnel: daemonSet(components.Ztunnel), components.NodeAgent: daemonSet(components.NodeAgent)},
		Pods: map[string][]corev1.Pod{
			components.Ztunnel:   {readyPod("ztunnel-a", "n1"), readyPod("ztunnel-b", "n2")},
			components.NodeAgent: {readyPod("agent-a", "n1"), readyPod("agent-b", "n2")},
		},
		RootCert: &corev1.ConfigMap{Data: map[string]string{"root-cert.pem": "-----BEGIN CERTIFICATE-----"}},
	}
}

func TestPostInstall(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Install)
		want   []string
	}{
		{"healthy", func(*Install) {}, []string{
			"ok    CRDs established: " + strings.Join(components.CRDs, ", "),
			"ok    control plane available (1/1 available)",
			"ok    ztunnel ready on 2 node(s): n1, n2",
			"ok    node agent ready on 2 node(s): n1, n2",
			"ok    mesh root certificate published (ConfigMap ambit-system/ambit-root-cert)"}},
		{"ztunnel missing on n2", func(in *Install) { in.Pods[components.Ztunnel] = in.Pods[components.Ztunnel][:1] }, []string{
			"ok    CRDs", "ok    control plane",
			"ok    ztunnel ready on 1 node(s): n1",
			"FAIL  ztunnel is not running on node n2: kubectl -n ambit-system describe pod -l app=ztunnel --field-selector spec.nodeName=n2",
			"ok    node agent", "ok    mesh root"}},
		{"node agent crashing on n1", func(in *Install) { in.Pods[components.NodeAgent][0] = crashingPod("agent-a", "n1") }, []string{
			"ok    CRDs", "ok    control plane", "ok    ztunnel",
			"ok    node agent ready on 1 node(s): n2",
			"FAIL  node agent is not ready on node n1 (pod agent-a: ztunnel CrashLoopBackOff): kubectl -n ambit-system describe pod -l app=ambit-node-agent --field-selector spec.nodeName=n1; kubectl -n ambit-system logs agent-a",
			"ok    mesh root"}},
		{"nothing installed", func(in *Install) {
			in.CRDs, in.ControlPlane, in.DaemonSets, in.Pods, in.RootCert = nil, nil, nil, nil, nil
		}, []string{
			"FAIL  CRDs missing: authorizationpolicies.security.ambit.dev, backendpolicies.networking.ambit.dev, gatewayclasses.gateway.networking.k8s.io",
			"FAIL  control plane Deployment ambit-system/ambit-controlplane not found: run ambitctl install -n ambit-system",
			"FAIL  ztunnel DaemonSet ambit-system/ztunnel not found",
			"FAIL  node agent DaemonSet ambit-system/ambit-node-agent not found",
			"FAIL  ConfigMap ambit-system/ambit-root-cert (the mesh root certificate) is missing: the control plane publishes it when it starts"}},
		{"crd not established, control plane unavailable, empty root", func(in *Install) {
			in.CRDs["peerauthentications.security.ambit.dev"] = readiness.State{Reason: "names not accepted: clash"}
			in.ControlPlane.Status.AvailableReplicas = 0
			in.RootCert.Data = nil
		}, []string{
			"FAIL  CRD peerauthentications.security.ambit.dev is not established (names not accepted: clash): kubectl get crd peerauthentications.security.ambit.dev -o yaml",
			"FAIL  control plane is not available: 0 of 1 replicas available (0/1 available): kubectl -n ambit-system describe deployment ambit-controlplane",
			"ok    ztunnel", "ok    node agent",
			"FAIL  ConfigMap ambit-system/ambit-root-cert has no root-cert.pem"}},
		{"nodeSelector skips windows node", func(in *Install) {
			win := node("win", "10.0", corev1.ConditionTrue, "")
			win.Labels = map[string]string{"kubernetes.io/os": "windows"}
			in.Nodes = append(in.Nodes, win)
			for _, d := range in.DaemonSets {
				d.Spec.Template.Spec.NodeSelector = map[string]string{"kubernetes.io/os": "linux"}
			}
		}, []string{"ok    CRDs", "ok    control plane", "ok    ztunnel ready on 2 node(s): n1, n2", "ok    node agent ready on 2 node(s): n1, n2", "ok    mesh root"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := healthy()
			tc.mutate(&in)
			got := PostInstall(in)
			expect(t, got, tc.want...)
			wantFail := slices.ContainsFunc(tc.want, func(s string) bool { return strings.HasPrefix(s, "FAIL") })
			if Failed(got) != wantFail {
				t.Fatalf("Failed = %v, want %v", Failed(got), wantFail)
			}
		})
	}
}

func TestLines(t *testing.T) {
	tests := []struct {
		name string
		rs   []Result
		last string
	}{
		{"all ok", []Result{{Status: OK, Message: "a"}}, "all checks passed"},
		{"warnings", []Result{{Status: OK, Message: "a"}, {Status: Warn, Message: "b", Fix: "do c"}}, "all checks passed, 1 warning(s)"},
		{"failures", []Result{{Status: Fail, Message: "a", Fix: "x"}, {Status: Warn, Message: "b"}, {Status: Fail, Message: "c"}}, "2 check(s) failed, 1 warning(s)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Lines(tc.rs)
			if len(got) != len(tc.rs)+1 || got[len(got)-1] != tc.last {
				t.Fatalf("Lines = %q, want %d lines ending with %q", got, len(tc.rs)+1, tc.last)
			}
		})
	}
	if got := (Result{Status: Warn, Message: "m", Fix: "f"}).Line(); got != "warn  m: f" {
		t.Fatalf("Line = %q", got)
	}
}
