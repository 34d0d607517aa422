// Package manifest turns a rendered multi-document YAML stream into
// Kubernetes objects and decides the order they are applied and deleted in.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// KindCRD is the kind of a CustomResourceDefinition.
const KindCRD = "CustomResourceDefinition"

// CRDGroupKind is the GroupKind of CustomResourceDefinitions.
var CRDGroupKind = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: KindCRD}

// Parse decodes a multi-document YAML (or JSON) stream. Empty documents
// are skipped; every object must have apiVersion, kind and metadata.name.
func Parse(stream []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("rendered manifest, document %d: not valid YAML (is the chart template broken? try helm template): %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("rendered manifest, document %d: an object needs apiVersion, kind and metadata.name (got apiVersion %q kind %q name %q)",
				i, u.GetAPIVersion(), u.GetKind(), u.GetName())
		}
		out = append(out, u)
	}
}

// IsCRD reports whether u is a CustomResourceDefinition.
func IsCRD(u *unstructured.Unstructured) bool {
	return u.GroupVersionKind().GroupKind() == CRDGroupKind
}

// installOrder ranks kinds so that what others depend on comes first:
// CRDs (their kinds must exist before objects of those kinds), namespaces,
// identities and configuration, RBAC, then Services (ztunnel finds the
// control plane through the AMBIT_CONTROLPLANE_SERVICE_HOST variable that
// Kubernetes injects only for Services that exist when the pod starts),
// the control plane Deployment before the DaemonSets that need it, and
// webhooks last. It is Helm's install order with CRDs first and
// Deployments before DaemonSets, like ambit.dev/deploy/charts.Render's
// output. Unknown kinds, such as custom resources, come after all of these.
var installOrder = []string{
	KindCRD, "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodDisruptionBudget",
	"ServiceAccount", "Secret", "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "PriorityClass",
	"Deployment", "DaemonSet", "Pod", "ReplicaSet", "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob",
	"IngressClass", "Ingress", "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

func rank(kind string) int {
	if i := slices.Index(installOrder, kind); i >= 0 {
		return i
	}
	return len(installOrder)
}

// ApplyOrder returns objs in the order to apply them: by kind rank, and in
// stream order within a rank.
func ApplyOrder(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	out := slices.Clone(objs)
	slices.SortStableFunc(out, func(a, b *unstructured.Unstructured) int { return rank(a.GetKind()) - rank(b.GetKind()) })
	return out
}

// DeleteOrder returns objs in the order to delete them: the reverse of
// ApplyOrder, so workloads go before the RBAC and configuration they use,
// and CRDs last.
func DeleteOrder(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	out := ApplyOrder(objs)
	slices.Reverse(out)
	return out
}

// Ref names an object in messages: Kind namespace/name or Kind name.
func Ref(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return u.GetKind() + " " + ns + "/" + u.GetName()
	}
	return u.GetKind() + " " + u.GetName()
}
