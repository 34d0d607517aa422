package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"ambit.dev/ambitctl/internal/manifest"
	"ambit.dev/ambitctl/internal/readiness"
)

const rendered = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: peerauthentications.security.ambit.dev}
spec: {group: security.ambit.dev}
---
apiVersion: v1
kind: Namespace
metadata: {name: ambit-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ztunnel, namespace: ambit-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ambit-controlplane}
---
apiVersion: v1
kind: Service
metadata: {name: ambit-controlplane, namespace: ambit-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ambit-controlplane, namespace: ambit-system}
spec:
  replicas: 1
  selector: {matchLabels: {app: ambit-controlplane}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ztunnel, namespace: ambit-system}
spec:
  selector: {matchLabels: {app: ztunnel}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ambit-node-agent, namespace: ambit-system}
spec:
  selector: {matchLabels: {app: ambit-node-agent}}
`

func parse(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifest.Parse([]byte(rendered))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// fakeCluster is an in-memory Cluster with a tiny controller: a CRD is
// established, and a workload ready, after readyAfter reads; each
// workload has podsLeft pods that go away one per CountPods call once it
// is deleted.
type fakeCluster struct {
	mu         sync.Mutex
	objs       map[string]*unstructured.Unstructured // key: kind/ns/name
	reads      map[string]int
	readyAfter int
	neverReady string // a name that never becomes ready
	applyErr   map[string]error
	pods       map[string]int // selector -> pods
	log        []string
}

func newFake() *fakeCluster {
	return &fakeCluster{objs: map[string]*unstructured.Unstructured{}, reads: map[string]int{}, readyAfter: 2,
		applyErr: map[string]error{}, pods: map[string]int{}}
}

func key(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

func (f *fakeCluster) Apply(_ context.Context, obj *unstructured.Unstructured) (Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, "apply "+manifest.Ref(obj))
	if err := f.applyErr[obj.GetName()]; err != nil {
		return "", err
	}
	k := key(obj.GetKind(), obj.GetNamespace(), obj.GetName())
	old, ok := f.objs[k]
	f.objs[k] = obj.DeepCopy()
	if sel := PodSelector(obj); sel != "" {
		f.pods[sel] = 2
	}
	switch {
	case !ok:
		return Created, nil
	case jsonEqual(old, obj):
		return Unchanged, nil
	default:
		return Configured, nil
	}
}

func jsonEqual(a, b *unstructured.Unstructured) bool {
	ja, _ := json.Marshal(a.Object)
	jb, _ := json.Marshal(b.Object)
	return bytes.Equal(ja, jb)
}

func (f *fakeCluster) Get(_ context.Context, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := key(gvk.Kind, ns, name)
	f.log = append(f.log, "get "+gvk.Kind+" "+name)
	o, ok := f.objs[k]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: gvk.Kind}, name)
	}
	f.reads[k]++
	o = o.DeepCopy()
	ready := f.reads[k] >= f.readyAfter && name != f.neverReady
	switch gvk.Kind {
	case "CustomResourceDefinition":
		status := "False"
		if ready {
			status = "True"
		}
		unstructured.SetNestedSlice(o.Object, []any{map[string]any{"type": "Established", "status": status}}, "status", "conditions")
	case "Deployment":
		n := int64(0)
		if ready {
			n = 1
		}
		unstructured.SetNestedMap(o.Object, map[string]any{"replicas": int64(1), "updatedReplicas": int64(1), "availableReplicas": n}, "status")
	case "DaemonSet":
		n := int64(1)
		if ready {
			n = 2
		}
		unstructured.SetNestedMap(o.Object, map[string]any{"desiredNumberScheduled": int64(2), "updatedNumberScheduled": int64(2), "numberAvailable": n}, "status")
	}
	return o, nil
}

func (f *fakeCluster) Delete(_ context.Context, obj *unstructured.Unstructured) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, "delete "+manifest.Ref(obj))
	k := key(obj.GetKind(), obj.GetNamespace(), obj.GetName())
	_, ok := f.objs[k]
	delete(f.objs, k)
	return ok, nil
}

func (f *fakeCluster) CountPods(_ context.Context, ns, selector string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, "count pods "+selector)
	n := f.pods[selector]
	// Pods of a deleted workload go away one per look.
	for _, o := range f.objs {
		if PodSelector(o) == selector {
			return n, nil
		}
	}
	if n > 0 {
		f.pods[selector] = n - 1
	}
	return n, nil
}

func newInstaller(t *testing.T, f *fakeCluster, out *bytes.Buffer) *Installer {
	t.Helper()
	in, err := New(f, Options{Namespace: "ambit-system", Out: out, Interval: time.Millisecond, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func applied(log []string) []string {
	var out []string
	for _, l := range log {
		if strings.HasPrefix(l, "apply ") {
			out = append(out, strings.TrimPrefix(l, "apply "))
		}
	}
	return out
}

func TestInstallTwice(t *testing.T) {
	f := newFake()
	var out bytes.Buffer
	in := newInstaller(t, f, &out)
	if err := in.Install(t.Context(), parse(t)); err != nil {
		t.Fatalf("Install: %v\n%s", err, out.String())
	}
	wantOrder := []string{"CustomResourceDefinition peerauthentications.security.ambit.dev", "Namespace ambit-system",
		"ServiceAccount ambit-system/ztunnel", "ClusterRole ambit-controlplane", "Service ambit-system/ambit-controlplane",
		"Deployment ambit-system/ambit-controlplane", "DaemonSet ambit-system/ztunnel", "DaemonSet ambit-system/ambit-node-agent"}
	if got := applied(f.log); !slices.Equal(got, wantOrder) {
		t.Fatalf("apply order =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(wantOrder, "\n  "))
	}
	// The CRD is established before anything else is applied.
	iNS := slices.Index(f.log, "apply Namespace ambit-system")
	if last := slices.Index(f.log, "get CustomResourceDefinition peerauthentications.security.ambit.dev"); last < 0 || last > iNS ||
		f.reads[key("CustomResourceDefinition", "", "peerauthentications.security.ambit.dev")] < f.readyAfter {
		t.Fatalf("the CRD was not waited for before the Namespace was applied: %v", f.log)
	}
	for _, want := range []string{"CustomResourceDefinition peerauthentications.security.ambit.dev created",
		"applied 8 objects: 8 created, 0 configured, 0 unchanged",
		"[ready]    control plane  Deployment ambit-system/ambit-controlplane  1/1 available",
		"[ready]    node agent     DaemonSet ambit-system/ambit-node-agent     2/2 nodes ready",
		"Ambit is ready"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("first install output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	f.log = nil
	if err := in.Install(t.Context(), parse(t)); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	if !strings.Contains(out.String(), "applied 8 objects: 0 created, 0 configured, 8 unchanged") || strings.Contains(out.String(), " created\n") {
		t.Fatalf("second install changed something:\n%s", out.String())
	}
}

func TestInstallErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*fakeCluster)
		objs  func([]*unstructured.Unstructured) []*unstructured.Unstructured
		want  string
	}{
		{"apply fails", func(f *fakeCluster) { f.applyErr["ztunnel"] = errors.New("forbidden") }, nil,
			"applying ServiceAccount ambit-system/ztunnel: forbidden"},
		{"ztunnel never ready", func(f *fakeCluster) { f.neverReady = "ztunnel" }, nil,
			"not ready after 50ms: ztunnel (1 of 2 pods available): see ambitctl check -n ambit-system"},
		{"crd never established", func(f *fakeCluster) { f.neverReady = "peerauthentications.security.ambit.dev" }, nil,
			"waiting for CustomResourceDefinition peerauthentications.security.ambit.dev to be established (not established yet)"},
		{"nothing rendered", func(*fakeCluster) {}, func([]*unstructured.Unstructured) []*unstructured.Unstructured { return nil },
			"the rendered chart has no objects"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			tc.setup(f)
			var out bytes.Buffer
			in, err := New(f, Options{Namespace: "ambit-system", Out: &out, Interval: time.Millisecond, Timeout: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			objs := parse(t)
			if tc.objs != nil {
				objs = tc.objs(objs)
			}
			err = in.Install(t.Context(), objs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Install = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func refs(objs []*unstructured.Unstructured) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, manifest.Ref(o))
	}
	return out
}

func TestDeletePlan(t *testing.T) {
	tests := []struct {
		name       string
		deleteCRDs bool
		workloads  []string
		rest       []string
		kept       []string
	}{
		{"keep CRDs", false,
			[]string{"DaemonSet ambit-system/ambit-node-agent", "DaemonSet ambit-system/ztunnel", "Deployment ambit-system/ambit-controlplane"},
			[]string{"Service ambit-system/ambit-controlplane", "ClusterRole ambit-controlplane", "ServiceAccount ambit-system/ztunnel"},
			[]string{"Namespace ambit-system", "CustomResourceDefinition peerauthentications.security.ambit.dev"}},
		{"delete CRDs", true,
			[]string{"DaemonSet ambit-system/ambit-node-agent", "DaemonSet ambit-system/ztunnel", "Deployment ambit-system/ambit-controlplane"},
			[]string{"Service ambit-system/ambit-controlplane", "ClusterRole ambit-controlplane", "ServiceAccount ambit-system/ztunnel",
				"CustomResourceDefinition peerauthentications.security.ambit.dev"},
			[]string{"Namespace ambit-system"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DeletePlan(parse(t), tc.deleteCRDs)
			var kept []string
			for _, k := range p.Kept {
				kept = append(kept, manifest.Ref(k.Obj))
				if k.Why == "" {
					t.Errorf("%s kept without a reason", manifest.Ref(k.Obj))
				}
			}
			if got := refs(p.Workloads); !slices.Equal(got, tc.workloads) {
				t.Errorf("workloads = %v, want %v", got, tc.workloads)
			}
			if got := refs(p.Rest); !slices.Equal(got, tc.rest) {
				t.Errorf("rest = %v, want %v", got, tc.rest)
			}
			if !slices.Equal(kept, tc.kept) {
				t.Errorf("kept = %v, want %v", kept, tc.kept)
			}
		})
	}
}

func TestUninstall(t *testing.T) {
	f := newFake()
	var out bytes.Buffer
	in := newInstaller(t, f, &out)
	if err := in.Install(t.Context(), parse(t)); err != nil {
		t.Fatal(err)
	}
	f.log = nil
	out.Reset()
	cleanup := func(context.Context) ([]string, error) {
		f.log = append(f.log, "cleanup")
		return []string{"waypoint demo/waypoint deleted (created by you)"}, nil
	}
	if err := in.Uninstall(t.Context(), parse(t), false, cleanup); err != nil {
		t.Fatalf("Uninstall: %v\n%s", err, out.String())
	}
	// Workloads are deleted, their pods waited for, then the rest.
	lastWorkload := slices.Index(f.log, "delete Deployment ambit-system/ambit-controlplane")
	firstRest := slices.Index(f.log, "delete Service ambit-system/ambit-controlplane")
	lastCount := -1
	for i, l := range f.log {
		if strings.HasPrefix(l, "count pods") {
			lastCount = i
		}
	}
	if lastWorkload < 0 || firstRest < 0 || lastCount < lastWorkload || lastCount > firstRest {
		t.Fatalf("uninstall did not wait for the pods between workloads and the rest: %v", f.log)
	}
	// The run-time cleanup comes once the pods are gone, before the rest.
	if c := slices.Index(f.log, "cleanup"); c < lastCount || c > firstRest {
		t.Fatalf("cleanup ran at %d, want between the last pod count (%d) and the rest (%d): %v", c, lastCount, firstRest, f.log)
	}
	for sel, n := range f.pods {
		if n != 0 {
			t.Errorf("%d pods of %s left", n, sel)
		}
	}
	if _, ok := f.objs[key("CustomResourceDefinition", "", "peerauthentications.security.ambit.dev")]; !ok {
		t.Error("the CRD was deleted without --delete-crds")
	}
	if _, ok := f.objs[key("Namespace", "", "ambit-system")]; !ok {
		t.Error("the namespace was deleted")
	}
	if len(f.objs) != 2 {
		t.Errorf("left behind: %v", f.objs)
	}
	for _, want := range []string{"DaemonSet ambit-system/ztunnel deleted", "2 ztunnel pod(s)", "waypoint demo/waypoint deleted (created by you)",
		"CustomResourceDefinition peerauthentications.security.ambit.dev kept: keeps the users' policies", "Ambit is uninstalled"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("uninstall output lacks %q:\n%s", want, out.String())
		}
	}

	// Again: everything already gone, still a success.
	out.Reset()
	if err := in.Uninstall(t.Context(), parse(t), true, nil); err != nil {
		t.Fatalf("second Uninstall: %v", err)
	}
	if !strings.Contains(out.String(), "DaemonSet ambit-system/ztunnel already gone") ||
		!strings.Contains(out.String(), "CustomResourceDefinition peerauthentications.security.ambit.dev deleted") {
		t.Fatalf("second uninstall output:\n%s", out.String())
	}
}

func TestProgress(t *testing.T) {
	items := []Item{
		{Title: "control plane", Ref: "Deployment ambit-system/ambit-controlplane", State: readinessState(true, "1/1 available", "")},
		{Title: "ztunnel", Ref: "DaemonSet ambit-system/ztunnel", State: readinessState(false, "1/2 nodes ready", "1 of 2 pods available")},
	}
	want := []string{
		"[ready]    control plane  Deployment ambit-system/ambit-controlplane  1/1 available",
		"[waiting]  ztunnel        DaemonSet ambit-system/ztunnel              1/2 nodes ready: 1 of 2 pods available",
	}
	if got := ProgressLines(items); !slices.Equal(got, want) {
		t.Fatalf("ProgressLines =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	tests := []struct {
		name     string
		terminal bool
		want     string
	}{
		{"log: only changed lines", false, want[0] + "\n" + want[1] + "\n" +
			"[ready]    ztunnel        DaemonSet ambit-system/ztunnel              2/2 nodes ready\n"},
		{"terminal: redrawn in place", true, "\x1b[2K" + want[0] + "\n\x1b[2K" + want[1] + "\n" +
			"\x1b[2A\x1b[2K" + want[0] + "\n\x1b[2K[ready]    ztunnel        DaemonSet ambit-system/ztunnel              2/2 nodes ready\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			p := newProgress(&b, tc.terminal)
			its := slices.Clone(items)
			p.show(its)
			p.show(its) // unchanged: nothing written
			its[1].State = readinessState(true, "2/2 nodes ready", "")
			p.show(its)
			if b.String() != tc.want {
				t.Fatalf("progress output =\n%q\nwant\n%q", b.String(), tc.want)
			}
		})
	}
}

func TestPodSelector(t *testing.T) {
	objs := parse(t)
	got := []string{}
	for _, o := range objs {
		got = append(got, fmt.Sprintf("%s=%q", o.GetKind(), PodSelector(o)))
	}
	want := []string{`CustomResourceDefinition=""`, `Namespace=""`, `ServiceAccount=""`, `ClusterRole=""`, `Service=""`,
		`Deployment="app=ambit-controlplane"`, `DaemonSet="app=ztunnel"`, `DaemonSet="app=ambit-node-agent"`}
	if !slices.Equal(got, want) {
		t.Fatalf("PodSelector = %v, want %v", got, want)
	}
}

func readinessState(ready bool, summary, reason string) readiness.State {
	return readiness.State{Ready: ready, Summary: summary, Reason: reason}
}
