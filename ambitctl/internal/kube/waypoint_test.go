package kube

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"ambit.dev/ambitctl/internal/waypoint"
)

// TestRemoveWaypoints: after the control plane is gone, uninstall deletes
// every waypoint Gateway, removes only the bindings auto-provisioning
// added, and deletes the GatewayClass; without the Gateway API it does
// nothing.
func TestRemoveWaypoints(t *testing.T) {
	ctx := context.Background()
	svc := func(name string, labels, annotations map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels, Annotations: annotations}}
	}
	typed := clientset(
		svc("auto", map[string]string{waypoint.LabelUseWaypoint: "ambit-auto-waypoint", "app": "auto"}, map[string]string{waypoint.AnnotationAutoWaypoint: "HTTPRoute shop/r"}),
		svc("mine", map[string]string{waypoint.LabelUseWaypoint: "waypoint"}, nil),
	)
	typed.Resources = []*metav1.APIResourceList{{GroupVersion: waypoint.GatewayGVR.GroupVersion().String(),
		APIResources: []metav1.APIResource{{Name: "gateways", Namespaced: true, Kind: "Gateway"}}}}
	auto := waypoint.Gateway("shop", "ambit-auto-waypoint", waypoint.ForService)
	auto.SetLabels(map[string]string{waypoint.LabelAutoProvisioned: "true"})
	other := waypoint.Gateway("shop", "edge", waypoint.ForService)
	_ = unstructured.SetNestedField(other.Object, "istio", "spec", "gatewayClassName")
	class := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": map[string]any{"name": waypoint.Class}}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		waypoint.GatewayGVR: "GatewayList", gatewayClassGVR: "GatewayClassList"})
	for _, g := range []*unstructured.Unstructured{auto, waypoint.Gateway("demo", "waypoint", waypoint.ForAll), other} {
		if err := dyn.Tracker().Create(waypoint.GatewayGVR, g, g.GetNamespace()); err != nil {
			t.Fatal(err)
		}
	}
	if err := dyn.Tracker().Create(gatewayClassGVR, class, ""); err != nil {
		t.Fatal(err)
	}

	lines, err := RemoveWaypoints(ctx, typed, dyn)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"waypoint shop/ambit-auto-waypoint deleted (auto-provisioned)", "waypoint demo/waypoint deleted (created by you)",
		"Service shop/auto: auto-provisioned waypoint binding removed", "GatewayClass ambit-waypoint deleted"}
	slices.Sort(want)
	slices.Sort(lines)
	if !slices.Equal(lines, want) {
		t.Fatalf("lines\n%q\nwant\n%q", lines, want)
	}
	left, err := dyn.Resource(waypoint.GatewayGVR).Namespace("").List(ctx, metav1.ListOptions{})
	if err != nil || len(left.Items) != 1 || left.Items[0].GetName() != "edge" {
		t.Fatalf("Gateways left %v (%v), want only the other class's", left, err)
	}
	if _, err := dyn.Resource(gatewayClassGVR).Get(ctx, waypoint.Class, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("GatewayClass: %v, want not found", err)
	}
	a, _ := typed.CoreV1().Services("shop").Get(ctx, "auto", metav1.GetOptions{})
	if _, ok := a.Labels[waypoint.LabelUseWaypoint]; ok || a.Labels["app"] != "auto" || len(a.Annotations) != 0 {
		t.Fatalf("auto-bound Service %v / %v: want the binding gone, its own labels kept", a.Labels, a.Annotations)
	}
	if m, _ := typed.CoreV1().Services("shop").Get(ctx, "mine", metav1.GetOptions{}); m.Labels[waypoint.LabelUseWaypoint] != "waypoint" {
		t.Fatalf("the user's own binding was removed: %v", m.Labels)
	}

	// No Gateway API (its CRDs deleted with --delete-crds): nothing to do.
	if lines, err := RemoveWaypoints(ctx, clientset(), dyn); err != nil || len(lines) != 0 {
		t.Fatalf("without the Gateway API: %q, %v", lines, err)
	}
}
