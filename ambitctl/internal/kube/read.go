package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"ambit.dev/ambitctl/internal/check"
	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/enrolment"
	"ambit.dev/ambitctl/internal/readiness"
	"ambit.dev/pkg/enrol"
)

// CRDResource is the resource of CustomResourceDefinitions.
var CRDResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// ReadPreflight reads what the pre-flight rules judge. An unreachable
// apiserver is reported in the result (ServerErr), not as an error.
func ReadPreflight(ctx context.Context, typed kubernetes.Interface, namespace string) (check.Cluster, error) {
	c := check.Cluster{Namespace: namespace}
	c.Server, c.ServerErr = typed.Discovery().ServerVersion()
	if c.ServerErr != nil {
		c.Server = nil
		return c, nil
	}
	nodes, err := typed.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return c, listErr("nodes", err)
	}
	c.Nodes = nodes.Items
	nss, err := typed.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return c, listErr("namespaces", err)
	}
	for _, ns := range nss.Items {
		c.Namespaces = append(c.Namespaces, ns.Name)
	}
	dss, err := typed.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return c, listErr("daemonsets", err)
	}
	c.DaemonSets = dss.Items
	cm, err := typed.CoreV1().ConfigMaps("kube-system").Get(ctx, "cilium-config", metav1.GetOptions{})
	switch {
	case err == nil:
		c.CiliumConfig = cm.Data
		if c.CiliumConfig == nil {
			c.CiliumConfig = map[string]string{}
		}
	case !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err):
		return c, fmt.Errorf("reading ConfigMap kube-system/cilium-config: %w", err)
	}
	return c, nil
}

func listErr(what string, err error) error {
	return fmt.Errorf("listing %s: %w (ambitctl check reads nodes, namespaces and DaemonSets cluster-wide: use a kubeconfig user allowed to list them)", what, hint(err))
}

// ReadInstall reads what the post-install rules judge.
func ReadInstall(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface, namespace string) (check.Install, error) {
	in := check.Install{Namespace: namespace, CRDs: map[string]readiness.State{},
		DaemonSets: map[string]*appsv1.DaemonSet{}, Pods: map[string][]corev1.Pod{}}
	if _, err := typed.Discovery().ServerVersion(); err != nil {
		return in, fmt.Errorf("cannot reach the Kubernetes apiserver: check --kubeconfig and --context (kubectl cluster-info): %w", err)
	}
	nodes, err := typed.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, listErr("nodes", err)
	}
	in.Nodes = nodes.Items
	for _, name := range components.CRDs {
		u, err := dyn.Resource(CRDResource).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return in, fmt.Errorf("reading CRD %s: %w", name, hint(err))
		default:
			in.CRDs[name] = readiness.CRD(u)
		}
	}
	d, err := typed.AppsV1().Deployments(namespace).Get(ctx, components.ControlPlane, metav1.GetOptions{})
	switch {
	case err == nil:
		in.ControlPlane = d
	case !apierrors.IsNotFound(err):
		return in, fmt.Errorf("reading Deployment %s/%s: %w", namespace, components.ControlPlane, hint(err))
	}
	for _, w := range components.Workloads() {
		if w.Kind != components.KindDaemonSet {
			continue
		}
		ds, err := typed.AppsV1().DaemonSets(namespace).Get(ctx, w.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return in, fmt.Errorf("reading DaemonSet %s/%s: %w", namespace, w.Name, hint(err))
		}
		in.DaemonSets[w.Name] = ds
		pods, err := typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: podSelector(ds)})
		if err != nil {
			return in, listErr("pods", err)
		}
		in.Pods[w.Name] = pods.Items
	}
	cm, err := typed.CoreV1().ConfigMaps(namespace).Get(ctx, components.RootCertConfigMap, metav1.GetOptions{})
	switch {
	case err == nil:
		in.RootCert = cm
	case !apierrors.IsNotFound(err):
		return in, fmt.Errorf("reading ConfigMap %s/%s: %w", namespace, components.RootCertConfigMap, hint(err))
	}
	return in, nil
}

// podSelector is ds's pod selector, or app=<name> when it has none.
func podSelector(ds *appsv1.DaemonSet) string {
	if ds.Spec.Selector != nil {
		if s, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err == nil && !s.Empty() {
			return s.String()
		}
	}
	return components.DefaultSelector(ds.Name)
}

// ZtunnelTrustDomain returns the trust domain the ztunnel DaemonSet in
// namespace runs with (its --trust-domain argument).
func ZtunnelTrustDomain(ctx context.Context, typed kubernetes.Interface, namespace string) (string, error) {
	ds, err := typed.AppsV1().DaemonSets(namespace).Get(ctx, components.Ztunnel, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading daemonset %s/%s for the mesh's trust domain (is Ambit installed there? pass -n if it runs elsewhere): %w", namespace, components.Ztunnel, hint(err))
	}
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == components.Ztunnel {
			return TrustDomainArg(c.Args), nil
		}
	}
	return "", fmt.Errorf("daemonset %s/%s has no container %q: not Ambit's ztunnel", namespace, components.Ztunnel, components.Ztunnel)
}

// TrustDomainArg returns the value of the last --trust-domain in args
// (flag package syntax: --trust-domain=X, -trust-domain X, ...), or the
// default ztunnel uses without it.
func TrustDomainArg(args []string) string {
	td := components.DefaultTrustDomain
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "trust-domain" {
			continue
		}
		switch {
		case hasVal:
			td = val
		case i+1 < len(args):
			td = args[i+1]
		}
	}
	return td
}

// ZtunnelPods lists the ztunnel pods in namespace, by the DaemonSet's
// selector (app=ztunnel when the DaemonSet cannot be read).
func ZtunnelPods(ctx context.Context, typed kubernetes.Interface, namespace string) ([]corev1.Pod, error) {
	selector := components.DefaultSelector(components.Ztunnel)
	if ds, err := typed.AppsV1().DaemonSets(namespace).Get(ctx, components.Ztunnel, metav1.GetOptions{}); err == nil {
		selector = podSelector(ds)
	}
	pods, err := typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("listing the ztunnel pods in namespace %s (check --kubeconfig/--context, and -n if Ambit runs elsewhere): %w", namespace, hint(err))
	}
	return pods.Items, nil
}

// ReadStatus reads the enrolled namespaces, their pods and the ztunnel of
// each node.
func ReadStatus(ctx context.Context, typed kubernetes.Interface, ambitNamespace string) (enrolment.Status, error) {
	s := enrolment.Status{AmbitNamespace: ambitNamespace}
	sel := labels.SelectorFromSet(labels.Set{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}).String()
	nss, err := typed.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return s, listErr("namespaces", err)
	}
	for _, ns := range nss.Items {
		pods, err := typed.CoreV1().Pods(ns.Name).List(ctx, metav1.ListOptions{})
		if err != nil {
			return s, listErr("pods", err)
		}
		s.Namespaces = append(s.Namespaces, enrolment.Namespace{Name: ns.Name, Pods: enrolment.Pods(ns.Labels, pods.Items)})
	}
	nodes, err := typed.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, listErr("nodes", err)
	}
	zpods, err := ZtunnelPods(ctx, typed, ambitNamespace)
	if err != nil {
		return s, err
	}
	s.Ztunnels = enrolment.Ztunnels(nodes.Items, zpods)
	return s, nil
}

// Enroll labels namespace ns ambit.dev/dataplane-mode=ambient (merge
// patch; nothing is written when it already is) and describes the outcome.
func Enroll(ctx context.Context, typed kubernetes.Interface, ns, ambitNamespace string) ([]string, error) {
	if err := enrolment.CheckTarget(ns, ambitNamespace); err != nil {
		return nil, err
	}
	obj, err := getNamespace(ctx, typed, ns)
	if err != nil {
		return nil, err
	}
	already := enrolment.Enrolled(obj.Labels)
	if !already {
		obj, err = patchLabel(ctx, typed, ns, enrol.DataplaneModeAmbient)
		if err != nil {
			return nil, err
		}
	}
	pods, err := typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("pods", err)
	}
	_, err = typed.AppsV1().DaemonSets(ambitNamespace).Get(ctx, components.NodeAgent, metav1.GetOptions{})
	installed := err == nil
	return enrolment.EnrollLines(ns, already, enrolment.Pods(obj.Labels, pods.Items), installed, ambitNamespace), nil
}

// Unenroll removes the label ambit.dev/dataplane-mode from namespace ns and
// describes the outcome.
func Unenroll(ctx context.Context, typed kubernetes.Interface, ns string) ([]string, error) {
	obj, err := getNamespace(ctx, typed, ns)
	if err != nil {
		return nil, err
	}
	was := enrolment.Enrolled(obj.Labels)
	pods, err := typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("pods", err)
	}
	before := enrolment.Pods(obj.Labels, pods.Items)
	if was {
		if _, err := patchLabel(ctx, typed, ns, ""); err != nil {
			return nil, err
		}
	}
	return enrolment.UnenrollLines(ns, was, before), nil
}

func getNamespace(ctx context.Context, typed kubernetes.Interface, ns string) (*corev1.Namespace, error) {
	obj, err := typed.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("namespace %s not found: check the name (kubectl get namespaces) or create it (kubectl create namespace %s)", ns, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("reading namespace %s: %w", ns, hint(err))
	}
	return obj, nil
}

// patchLabel sets (value != "") or removes (value == "") the enrolment
// label of ns with a JSON merge patch, leaving other labels alone.
func patchLabel(ctx context.Context, typed kubernetes.Interface, ns, value string) (*corev1.Namespace, error) {
	var v any
	if value != "" {
		v = value
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{enrol.LabelDataplaneMode: v}}})
	if err != nil {
		return nil, err
	}
	obj, err := typed.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: components.FieldManager})
	if err != nil {
		return nil, fmt.Errorf("labelling namespace %s: %w (you need permission to patch namespaces)", ns, hint(err))
	}
	return obj, nil
}

// ControlPlaneImages returns the container images of the control plane
// Deployment; found is false when it does not exist.
func ControlPlaneImages(ctx context.Context, typed kubernetes.Interface, namespace string) (images []string, found bool, err error) {
	d, err := typed.AppsV1().Deployments(namespace).Get(ctx, components.ControlPlane, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, hint(err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		images = append(images, c.Image)
	}
	return images, true, nil
}

// MeshMembers returns the enrolled namespaces and the pods, in any
// namespace, that carry the node agent's redirection annotation.
func MeshMembers(ctx context.Context, typed kubernetes.Interface) (namespaces, captured []string, err error) {
	sel := labels.SelectorFromSet(labels.Set{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}).String()
	nss, err := typed.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, nil, listErr("namespaces", err)
	}
	for _, ns := range nss.Items {
		namespaces = append(namespaces, ns.Name)
	}
	pods, err := typed.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, listErr("pods", err)
	}
	return namespaces, enrolment.Captured(pods.Items), nil
}
