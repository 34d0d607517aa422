package kube

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/install"
)

// Cluster implements install.Cluster with server-side apply through a
// dynamic client and a RESTMapper.
type Cluster struct {
	dyn    dynamic.Interface
	typed  kubernetes.Interface
	mapper meta.ResettableRESTMapper
}

var _ install.Cluster = (*Cluster)(nil)

// NewCluster returns a Cluster over the given clients.
func NewCluster(dyn dynamic.Interface, typed kubernetes.Interface, mapper meta.ResettableRESTMapper) *Cluster {
	return &Cluster{dyn: dyn, typed: typed, mapper: mapper}
}

// resource maps gvk to its resource client, resetting the mapper once when
// the kind is unknown (its CRD was just established).
func (c *Cluster) resource(gvk schema.GroupVersionKind, namespace string) (dynamic.ResourceInterface, error) {
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, fmt.Errorf("the cluster does not serve kind %s in %s (is its CRD installed, or is the cluster too old?): %w", gvk.Kind, gvk.GroupVersion(), err)
		}
		return nil, fmt.Errorf("discovering the resource of %s (is the apiserver reachable?): %w", gvk, err)
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource), nil
	}
	if namespace == "" {
		return nil, fmt.Errorf("%s is namespaced but the rendered object has no metadata.namespace", gvk.Kind)
	}
	return c.dyn.Resource(m.Resource).Namespace(namespace), nil
}

// Apply server-side applies obj as field manager "ambitctl", forcing
// conflicts, and compares resourceVersions to report what changed.
func (c *Cluster) Apply(ctx context.Context, obj *unstructured.Unstructured) (install.Outcome, error) {
	r, err := c.resource(obj.GroupVersionKind(), obj.GetNamespace())
	if err != nil {
		return "", err
	}
	before := ""
	old, err := r.Get(ctx, obj.GetName(), metav1.GetOptions{})
	switch {
	case err == nil:
		before = old.GetResourceVersion()
	case !apierrors.IsNotFound(err):
		return "", hint(err)
	}
	got, err := r.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: components.FieldManager, Force: true})
	if err != nil {
		return "", hint(err)
	}
	switch {
	case before == "":
		return install.Created, nil
	case got.GetResourceVersion() == before:
		return install.Unchanged, nil
	default:
		return install.Configured, nil
	}
}

// Get reads the live object.
func (c *Cluster) Get(ctx context.Context, gvk schema.GroupVersionKind, namespace, name string) (*unstructured.Unstructured, error) {
	r, err := c.resource(gvk, namespace)
	if err != nil {
		return nil, err
	}
	return r.Get(ctx, name, metav1.GetOptions{})
}

// Delete deletes obj with background propagation; a missing object (or
// kind, for a CRD already deleted) is not an error.
func (c *Cluster) Delete(ctx context.Context, obj *unstructured.Unstructured) (bool, error) {
	r, err := c.resource(obj.GroupVersionKind(), obj.GetNamespace())
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	bg := metav1.DeletePropagationBackground
	err = r.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, hint(err)
	}
}

// CountPods counts the pods of namespace matching selector, terminating
// ones included.
func (c *Cluster) CountPods(ctx context.Context, namespace, selector string) (int, error) {
	pods, err := c.typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return 0, hint(err)
	}
	return len(pods.Items), nil
}

// hint adds what to check to the API errors a user can fix.
func hint(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w (installing Ambit creates CRDs and cluster-wide RBAC: use a kubeconfig user with cluster-admin rights)", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w (the kubeconfig credentials were refused: log in again or pick another --context)", err)
	case apierrors.IsInvalid(err):
		return fmt.Errorf("%w (the apiserver rejected the rendered object: check the values given with -f/--set)", err)
	}
	return err
}
