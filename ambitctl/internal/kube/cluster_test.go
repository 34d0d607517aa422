package kube

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"ambit.dev/ambitctl/internal/install"
	"ambit.dev/ambitctl/internal/manifest"
)

var (
	gvkCRD = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	gvkNS  = schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}
	gvkCM  = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	gvkDS  = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}
	gvkPA  = schema.GroupVersionKind{Group: "security.ambit.dev", Version: "v1alpha1", Kind: "PeerAuthentication"}
)

// discoveryMapper is a ResettableRESTMapper whose kinds appear only after
// Reset once they are "served" (like a CRD's kind after it is established).
type discoveryMapper struct {
	mu     sync.Mutex
	served []schema.GroupVersionKind
	known  *meta.DefaultRESTMapper
	resets int
}

func newMapper(served ...schema.GroupVersionKind) *discoveryMapper {
	m := &discoveryMapper{served: served}
	m.Reset()
	m.resets = 0
	return m
}

func (m *discoveryMapper) serve(gvk schema.GroupVersionKind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.served = append(m.served, gvk)
}

func (m *discoveryMapper) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resets++
	m.known = meta.NewDefaultRESTMapper(nil)
	for _, gvk := range m.served {
		scope := meta.RESTScopeNamespace
		if gvk.Kind == "Namespace" || gvk.Kind == "CustomResourceDefinition" {
			scope = meta.RESTScopeRoot
		}
		m.known.Add(gvk, scope)
	}
}

func (m *discoveryMapper) mapper() *meta.DefaultRESTMapper {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.known
}

func (m *discoveryMapper) KindFor(r schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	return m.mapper().KindFor(r)
}
func (m *discoveryMapper) KindsFor(r schema.GroupVersionResource) ([]schema.GroupVersionKind, error) {
	return m.mapper().KindsFor(r)
}
func (m *discoveryMapper) ResourceFor(r schema.GroupVersionResource) (schema.GroupVersionResource, error) {
	return m.mapper().ResourceFor(r)
}
func (m *discoveryMapper) ResourcesFor(r schema.GroupVersionResource) ([]schema.GroupVersionResource, error) {
	return m.mapper().ResourcesFor(r)
}
func (m *discoveryMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	return m.mapper().RESTMapping(gk, versions...)
}
func (m *discoveryMapper) RESTMappings(gk schema.GroupKind, versions ...string) ([]*meta.RESTMapping, error) {
	return m.mapper().RESTMappings(gk, versions...)
}
func (m *discoveryMapper) ResourceSingularizer(r string) (string, error) {
	return m.mapper().ResourceSingularizer(r)
}

// applyReactor makes the fake dynamic client answer server-side apply
// like the apiserver does for a sole field manager: the object becomes the
// applied configuration, and its resourceVersion moves only when that
// changes something.
func applyReactor(tracker clienttesting.ObjectTracker) clienttesting.ReactionFunc {
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
			obj.SetResourceVersion("1")
			return true, obj, tracker.Create(gvr, obj, ns)
		case err != nil:
			return true, nil, err
		}
		ou := old.(*unstructured.Unstructured)
		rv, _ := strconv.Atoi(ou.GetResourceVersion())
		cmp := ou.DeepCopy()
		unstructured.RemoveNestedField(cmp.Object, "metadata", "resourceVersion")
		unstructured.RemoveNestedField(cmp.Object, "status")
		if reflect.DeepEqual(cmp.Object, obj.Object) {
			return true, ou, nil
		}
		obj.SetResourceVersion(strconv.Itoa(rv + 1))
		return true, obj, tracker.Update(gvr, obj, ns)
	}
}

const objects = `
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
kind: ConfigMap
metadata: {name: settings, namespace: ambit-system}
data: {logLevel: info}
---
apiVersion: security.ambit.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: ambit-system}
spec: {mtls: {mode: STRICT}}
`

func newTestCluster(t *testing.T) (*Cluster, *discoveryMapper, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}: "CustomResourceDefinitionList",
		{Version: "v1", Resource: "namespaces"}:                                               "NamespaceList",
		{Version: "v1", Resource: "configmaps"}:                                               "ConfigMapList",
		{Group: "security.ambit.dev", Version: "v1alpha1", Resource: "peerauthentications"}:   "PeerAuthenticationList",
	})
	dyn.PrependReactor("patch", "*", applyReactor(dyn.Tracker()))
	m := newMapper(gvkCRD, gvkNS, gvkCM, gvkDS)
	return NewCluster(dyn, fake.NewClientset(), m), m, dyn
}

func TestClusterApplyIdempotent(t *testing.T) {
	c, m, dyn := newTestCluster(t)
	rec := &applyRecorder{Interface: c.dyn}
	c.dyn = rec
	objs, err := manifest.Parse([]byte(objects))
	if err != nil {
		t.Fatal(err)
	}
	apply := func(obj *unstructured.Unstructured) install.Outcome {
		t.Helper()
		if manifest.IsCRD(obj) {
			defer m.serve(gvkPA) // the CRD gets established
		}
		out, err := c.Apply(t.Context(), obj)
		if err != nil {
			t.Fatalf("Apply %s: %v", manifest.Ref(obj), err)
		}
		return out
	}
	for _, o := range objs {
		if got := apply(o); got != install.Created {
			t.Errorf("first apply of %s = %s, want created", manifest.Ref(o), got)
		}
	}
	if m.resets != 1 {
		t.Errorf("mapper reset %d times, want once (for the new kind PeerAuthentication)", m.resets)
	}
	for _, o := range objs {
		if got := apply(o); got != install.Unchanged {
			t.Errorf("second apply of %s = %s, want unchanged", manifest.Ref(o), got)
		}
	}
	changed := objs[2].DeepCopy()
	unstructured.SetNestedField(changed.Object, "debug", "data", "logLevel")
	if got := apply(changed); got != install.Configured {
		t.Errorf("apply of a changed ConfigMap = %s, want configured", got)
	}
	// Every apply is a server-side apply by ambitctl that forces conflicts.
	if len(rec.opts) != 9 {
		t.Errorf("%d applies recorded, want 9", len(rec.opts))
	}
	for _, o := range rec.opts {
		if o.FieldManager != "ambitctl" || !o.Force {
			t.Errorf("apply options %+v, want field manager ambitctl with force", o)
		}
	}
	for _, a := range dyn.Actions() {
		if p, ok := a.(clienttesting.PatchActionImpl); ok && p.GetPatchType() != types.ApplyPatchType {
			t.Errorf("patch %s %s has type %s, want a server-side apply", p.GetResource().Resource, p.GetName(), p.GetPatchType())
		}
	}
	got, err := c.Get(t.Context(), gvkPA, "ambit-system", "default")
	if err != nil || got.GetName() != "default" {
		t.Fatalf("Get PeerAuthentication = %v, %v", got, err)
	}
}

func TestClusterErrorsAndDelete(t *testing.T) {
	c, _, _ := newTestCluster(t)
	objs, err := manifest.Parse([]byte(objects))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("unknown kind names its CRD", func(t *testing.T) {
		_, err := c.Apply(t.Context(), objs[3])
		if err == nil || !strings.Contains(err.Error(), "the cluster does not serve kind PeerAuthentication in security.ambit.dev/v1alpha1 (is its CRD installed") {
			t.Fatalf("Apply = %v", err)
		}
	})
	t.Run("namespaced without namespace", func(t *testing.T) {
		o := objs[2].DeepCopy()
		o.SetNamespace("")
		_, err := c.Apply(t.Context(), o)
		if err == nil || !strings.Contains(err.Error(), "ConfigMap is namespaced but the rendered object has no metadata.namespace") {
			t.Fatalf("Apply = %v", err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if _, err := c.Apply(t.Context(), objs[2]); err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{true, false} {
			found, err := c.Delete(t.Context(), objs[2])
			if err != nil || found != want {
				t.Fatalf("Delete #%d = %v, %v; want found=%v", i+1, found, err, want)
			}
		}
		// A kind the cluster no longer serves (CRD deleted) is gone too.
		if found, err := c.Delete(t.Context(), objs[3]); err != nil || found {
			t.Fatalf("Delete of an unserved kind = %v, %v", found, err)
		}
		if _, err := c.Get(t.Context(), gvkCM, "ambit-system", "settings"); !apierrors.IsNotFound(err) {
			t.Fatalf("Get after delete = %v, want NotFound", err)
		}
	})
}

// applyRecorder records the options of every Apply (the fake dynamic
// client drops them).
type applyRecorder struct {
	dynamic.Interface
	mu   sync.Mutex
	opts []metav1.ApplyOptions
}

func (r *applyRecorder) record(o metav1.ApplyOptions) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts = append(r.opts, o)
}

func (r *applyRecorder) Resource(gvr schema.GroupVersionResource) dynamic.NamespaceableResourceInterface {
	return recNRI{r.Interface.Resource(gvr), r}
}

type recNRI struct {
	dynamic.NamespaceableResourceInterface
	r *applyRecorder
}

func (n recNRI) Namespace(ns string) dynamic.ResourceInterface {
	return recRI{n.NamespaceableResourceInterface.Namespace(ns), n.r}
}

func (n recNRI) Apply(ctx context.Context, name string, obj *unstructured.Unstructured, o metav1.ApplyOptions, sub ...string) (*unstructured.Unstructured, error) {
	n.r.record(o)
	return n.NamespaceableResourceInterface.Apply(ctx, name, obj, o, sub...)
}

type recRI struct {
	dynamic.ResourceInterface
	r *applyRecorder
}

func (n recRI) Apply(ctx context.Context, name string, obj *unstructured.Unstructured, o metav1.ApplyOptions, sub ...string) (*unstructured.Unstructured, error) {
	n.r.record(o)
	return n.ResourceInterface.Apply(ctx, name, obj, o, sub...)
}
