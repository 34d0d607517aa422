package manifest

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const stream = `
# leading comment
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ztunnel, namespace: ambit-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: ambit-system}
---
---
apiVersion: security.ambit.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: default, namespace: ambit-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: ambit-controlplane}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ambit-controlplane, namespace: ambit-system}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: peerauthentications.security.ambit.dev}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ztunnel, namespace: ambit-system}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ambit-node-agent, namespace: ambit-system}
`

func refs(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, Ref(o))
	}
	return out
}

func TestParseAndOrder(t *testing.T) {
	objs, err := Parse([]byte(stream))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		order func([]*unstructured.Unstructured) []*unstructured.Unstructured
		want  []string
	}{
		{"stream order", func(o []*unstructured.Unstructured) []*unstructured.Unstructured { return o }, []string{
			"DaemonSet ambit-system/ztunnel", "Namespace ambit-system", "PeerAuthentication ambit-system/default",
			"ClusterRole ambit-controlplane", "Deployment ambit-system/ambit-controlplane",
			"CustomResourceDefinition peerauthentications.security.ambit.dev", "ServiceAccount ambit-system/ztunnel",
			"DaemonSet ambit-system/ambit-node-agent"}},
		{"apply: CRDs first, custom resources last, stable within a kind", ApplyOrder, []string{
			"CustomResourceDefinition peerauthentications.security.ambit.dev", "Namespace ambit-system",
			"ServiceAccount ambit-system/ztunnel", "ClusterRole ambit-controlplane",
			"Deployment ambit-system/ambit-controlplane",
			"DaemonSet ambit-system/ztunnel", "DaemonSet ambit-system/ambit-node-agent", "PeerAuthentication ambit-system/default"}},
		{"delete: reverse of apply", DeleteOrder, []string{
			"PeerAuthentication ambit-system/default",
			"DaemonSet ambit-system/ambit-node-agent", "DaemonSet ambit-system/ztunnel", "Deployment ambit-system/ambit-controlplane",
			"ClusterRole ambit-controlplane", "ServiceAccount ambit-system/ztunnel", "Namespace ambit-system",
			"CustomResourceDefinition peerauthentications.security.ambit.dev"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := refs(tc.order(objs)); !slices.Equal(got, tc.want) {
				t.Fatalf("order =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
	if !IsCRD(ApplyOrder(objs)[0]) || IsCRD(objs[0]) {
		t.Fatal("IsCRD disagrees with the kinds")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", "document 1: an object needs apiVersion, kind and metadata.name"},
		{"no name in second doc", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\n", "document 2"},
		{"bad yaml", "apiVersion: v1\nkind: [\n", "not valid YAML"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("empty stream", func(t *testing.T) {
		objs, err := Parse([]byte("---\n# nothing\n"))
		if err != nil || len(objs) != 0 {
			t.Fatalf("Parse(empty) = %v, %v; want no objects", objs, err)
		}
	})
}
