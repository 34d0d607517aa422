package kube

import (
	"context"
	"slices"
	"strings"
	"testing"

	apinet "istio.io/api/networking/v1alpha3"
	apisec "istio.io/api/security/v1beta1"
	clinet "istio.io/client-go/pkg/apis/networking/v1"
	clisec "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"ambit.dev/ambitctl/internal/migrate"
)

func TestReadMigrationInputs(t *testing.T) {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	ic := istiofake.NewSimpleClientset(
		&clinet.VirtualService{ObjectMeta: meta("demo", "reviews"), Spec: apinet.VirtualService{Hosts: []string{"reviews"}}},
		&clinet.VirtualService{ObjectMeta: meta("other", "x")},
		&clinet.DestinationRule{ObjectMeta: meta("demo", "reviews"), Spec: apinet.DestinationRule{Host: "reviews"}},
		&clinet.Sidecar{ObjectMeta: meta("demo", "default")},
		&clisec.AuthorizationPolicy{ObjectMeta: meta("demo", "allow"), Spec: apisec.AuthorizationPolicy{Action: apisec.AuthorizationPolicy_DENY}},
	)
	// PeerAuthentication's CRD is "not installed".
	ic.PrependReactor("list", "peerauthentications", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "security.istio.io", Resource: "peerauthentications"}, "")
	})
	typed := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}},
		&corev1.Service{ObjectMeta: meta("demo", "reviews")},
		&corev1.Service{ObjectMeta: meta("other", "reviews")},
	)
	// The experimental channel's HTTPRoute CRD (it has rules[].retry).
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{CRDResource: "CustomResourceDefinitionList"},
		&unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
			"metadata": map[string]any{"name": "httproutes.gateway.networking.k8s.io"},
			"spec": map[string]any{"versions": []any{map[string]any{"name": "v1", "schema": map[string]any{"openAPIV3Schema": map[string]any{
				"properties": map[string]any{"spec": map[string]any{"properties": map[string]any{"rules": map[string]any{
					"items": map[string]any{"properties": map[string]any{"retry": map[string]any{"type": "object"}}}}}}}}}}}}}})
	in, err := ReadMigrationInputs(context.Background(), ic, typed, dyn, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(in.VirtualServices) != 1 || in.VirtualServices[0].Name != "reviews" || in.VirtualServices[0].Spec.Hosts[0] != "reviews" {
		t.Errorf("VirtualServices = %v", in.VirtualServices)
	}
	if len(in.DestinationRules) != 1 || len(in.Sidecars) != 1 || len(in.AuthorizationPolicies) != 1 || len(in.PeerAuthentications) != 0 {
		t.Errorf("got %d DRs, %d Sidecars, %d APs, %d PAs; want 1, 1, 1, 0", len(in.DestinationRules), len(in.Sidecars), len(in.AuthorizationPolicies), len(in.PeerAuthentications))
	}
	if in.AuthorizationPolicies[0].Spec.Action != apisec.AuthorizationPolicy_DENY {
		t.Errorf("AuthorizationPolicy action = %v", in.AuthorizationPolicies[0].Spec.Action)
	}
	if len(in.Services) != 1 || in.Services[0].Namespace != "demo" {
		t.Errorf("Services = %v", in.Services)
	}
	if !slices.Equal(in.Unserved, []string{"peerauthentications.security.istio.io/v1"}) {
		t.Errorf("Unserved = %v", in.Unserved)
	}
	if in.HTTPRouteCRD != migrate.HTTPRouteCRDExperimental {
		t.Errorf("HTTPRouteCRD = %q, want experimental", in.HTTPRouteCRD)
	}
	noCRD := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{CRDResource: "CustomResourceDefinitionList"})
	if in, err := ReadMigrationInputs(context.Background(), ic, typed, noCRD, "demo"); err != nil || in.HTTPRouteCRD != migrate.HTTPRouteCRDMissing {
		t.Errorf("without the CRD: HTTPRouteCRD = %q, err = %v; want missing", in.HTTPRouteCRD, err)
	}

	if _, err := ReadMigrationInputs(context.Background(), ic, typed, dyn, "nope"); err == nil || !strings.Contains(err.Error(), "namespace nope does not exist") {
		t.Errorf("missing namespace: err = %v", err)
	}
	ic.PrependReactor("list", "virtualservices", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "networking.istio.io", Resource: "virtualservices"}, "", nil)
	})
	if _, err := ReadMigrationInputs(context.Background(), ic, typed, dyn, "demo"); err == nil || !strings.Contains(err.Error(), "needs get on the namespace and list") {
		t.Errorf("forbidden: err = %v", err)
	}
}
