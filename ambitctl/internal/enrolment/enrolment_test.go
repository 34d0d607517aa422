package enrolment

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"ambit.dev/pkg/enrol"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var ambient = map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}

func pod(name, node string, mut ...func(*corev1.Pod)) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, m := range mut {
		m(&p)
	}
	return p
}

func annotated(v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Annotations = map[string]string{enrol.AnnotationRedirection: v} }
}

func readyCond(p *corev1.Pod) {
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}

func demoPods() []corev1.Pod {
	return []corev1.Pod{
		pod("web-1", "n1", annotated(enrol.RedirectionEnabled)),
		pod("db-0", "n2", annotated(enrol.RedirectionPending)),
		pod("new", "", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		pod("legacy", "n1", func(p *corev1.Pod) { p.Labels = map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeNone} }),
		pod("sidecar", "n2", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
		}),
		pod("done", "n1", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
	}
}

func TestPods(t *testing.T) {
	tests := []struct {
		name     string
		labels   map[string]string
		wantIn   []string
		wantOut  []string
		wantRedi map[string]string
	}{
		{"enrolled namespace", ambient, []string{"db-0", "new", "web-1"}, []string{"legacy", "sidecar"},
			map[string]string{"web-1": "enabled", "db-0": "pending", "new": "not set", "legacy": "-"}},
		{"plain namespace", nil, nil, []string{"db-0", "legacy", "new", "sidecar", "web-1"}, map[string]string{"web-1": "-"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var in, out []string
			for _, p := range Pods(tc.labels, demoPods()) {
				if p.Why == "" {
					t.Errorf("pod %s has no reason", p.Name)
				}
				if p.InMesh {
					in = append(in, p.Name)
				} else {
					out = append(out, p.Name)
				}
				if want, ok := tc.wantRedi[p.Name]; ok && p.RedirectionState() != want {
					t.Errorf("pod %s redirection = %q, want %q", p.Name, p.RedirectionState(), want)
				}
			}
			if !slices.Equal(in, tc.wantIn) || !slices.Equal(out, tc.wantOut) {
				t.Fatalf("in mesh %v, out %v; want %v, %v", in, out, tc.wantIn, tc.wantOut)
			}
		})
	}
}

func TestCheckTarget(t *testing.T) {
	tests := []struct {
		ns, want string
	}{
		{"demo", ""},
		{"ambit-system", "is where Ambit itself runs"},
		{"kube-system", "runs the cluster's own components"},
	}
	for _, tc := range tests {
		t.Run(tc.ns, func(t *testing.T) {
			err := CheckTarget(tc.ns, "ambit-system")
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("CheckTarget(%s) = %v, want %q", tc.ns, err, tc.want)
			}
		})
	}
}

func TestEnrollLines(t *testing.T) {
	pods := Pods(ambient, demoPods())
	tests := []struct {
		name      string
		already   bool
		pods      []Pod
		installed bool
		want      []string
	}{
		{"first time", false, pods, true, []string{
			"namespace demo enrolled: labelled ambit.dev/dataplane-mode=ambient",
			"the node agent captures its running pods now, without restarting them: 3 join the mesh (db-0, new, web-1)",
			"pod legacy stays out: pod opted out with label ambit.dev/dataplane-mode=none",
			"pod sidecar stays out: pod has an Istio sidecar (container istio-proxy)",
			"see the redirection state with: ambitctl status"}},
		{"again", true, pods[:1], true, []string{
			"namespace demo is already enrolled (ambit.dev/dataplane-mode=ambient)",
			"1 pod(s) in the mesh (db-0)",
			"see the redirection state with: ambitctl status"}},
		{"empty, not installed", false, nil, false, []string{
			"namespace demo enrolled: labelled ambit.dev/dataplane-mode=ambient",
			"it has no running pods; pods created from now on are captured as they start",
			"warning: Ambit's node agent is not installed in namespace ambit-system, so nothing captures these pods yet: run ambitctl install (or pass -n)",
			"see the redirection state with: ambitctl status"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := EnrollLines("demo", tc.already, tc.pods, tc.installed, "ambit-system"); !slices.Equal(got, tc.want) {
				t.Fatalf("EnrollLines =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestUnenrollLines(t *testing.T) {
	pods := Pods(ambient, demoPods())
	tests := []struct {
		name string
		was  bool
		want []string
	}{
		{"enrolled", true, []string{"namespace demo unenrolled: label ambit.dev/dataplane-mode removed",
			"the node agent removes the redirection rules of 3 pod(s) now, without restarting them (db-0, new, web-1); their traffic is no longer carried over mTLS"}},
		{"not enrolled", false, []string{"namespace demo is not enrolled (no label ambit.dev/dataplane-mode=ambient): nothing to do"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := UnenrollLines("demo", tc.was, pods); !slices.Equal(got, tc.want) {
				t.Fatalf("UnenrollLines =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestZtunnels(t *testing.T) {
	nodes := []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n3"}}}
	pods := []corev1.Pod{
		pod("ztunnel-old", "n1"),
		pod("ztunnel-new", "n1", readyCond),
		pod("ztunnel-b", "n2"),
	}
	want := []Ztunnel{{Node: "n1", Pod: "ztunnel-new", Ready: true}, {Node: "n2", Pod: "ztunnel-b"}, {Node: "n3"}}
	if got := Ztunnels(nodes, pods); !slices.Equal(got, want) {
		t.Fatalf("Ztunnels = %+v, want %+v", got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	nodes := []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n2"}}}
	tests := []struct {
		golden string
		s      Status
	}{
		{"status", Status{AmbitNamespace: "ambit-system",
			Namespaces: []Namespace{{Name: "demo", Pods: Pods(ambient, demoPods())}, {Name: "empty"}},
			Ztunnels:   Ztunnels(nodes, []corev1.Pod{pod("ztunnel-a", "n1", readyCond)})}},
		{"status-none", Status{AmbitNamespace: "ambit-system", Ztunnels: Ztunnels(nodes, nil)}},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			var b bytes.Buffer
			if err := Render(&b, tc.s); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden+".golden")
			if *update {
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if b.String() != string(want) {
				t.Fatalf("status output differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, b.String(), want)
			}
		})
	}
}

func TestUninstallBlocker(t *testing.T) {
	many := []string{"a/1", "a/2", "a/3", "a/4", "a/5", "a/6", "a/7"}
	tests := []struct {
		name          string
		nss, captured []string
		want          []string // substrings; nil: no blocker
	}{
		{name: "nothing in the mesh"},
		{name: "enrolled namespace without pods", nss: []string{"shop"}, want: []string{"1 namespace(s) are enrolled (shop)", "--unenroll"}},
		{name: "captured pod left by a pod label", captured: []string{"tools/debug"}, want: []string{"1 pod(s) are captured (tools/debug)", "ambitctl unenroll"}},
		{name: "both, long list cut", nss: []string{"shop"}, captured: many, want: []string{"enrolled (shop) and 7 pod(s) are captured (a/1, a/2, a/3, a/4, a/5, and 2 more)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := UninstallBlocker(tc.nss, tc.captured)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("UninstallBlocker = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("UninstallBlocker = nil, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCaptured(t *testing.T) {
	pod := func(ns, name, anno string) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if anno != "" {
			p.Annotations = map[string]string{enrol.AnnotationRedirection: anno}
		}
		return p
	}
	got := Captured([]corev1.Pod{pod("b", "x", enrol.RedirectionPending), pod("a", "y", ""), pod("a", "z", enrol.RedirectionEnabled)})
	if want := []string{"a/z", "b/x"}; !slices.Equal(got, want) {
		t.Fatalf("Captured = %v, want %v", got, want)
	}
}
