package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/migrate"
)

// workload is a Deployment, StatefulSet or DaemonSet as the restart step
// sees it: the typed object and pointers into it to its metadata, pod
// template and selector, so the edits are written once for every kind.
type workload struct {
	ref  migrate.WorkloadRef
	obj  any // *appsv1.Deployment, *appsv1.StatefulSet or *appsv1.DaemonSet
	meta *metav1.ObjectMeta
	tmpl *corev1.PodTemplateSpec
	sel  *metav1.LabelSelector
}

func deploymentWorkload(d *appsv1.Deployment) *workload {
	return &workload{ref: migrate.WorkloadRef{Kind: migrate.KindDeployment, Name: d.Name}, obj: d, meta: &d.ObjectMeta, tmpl: &d.Spec.Template, sel: d.Spec.Selector}
}

func statefulSetWorkload(s *appsv1.StatefulSet) *workload {
	return &workload{ref: migrate.WorkloadRef{Kind: migrate.KindStatefulSet, Name: s.Name}, obj: s, meta: &s.ObjectMeta, tmpl: &s.Spec.Template, sel: s.Spec.Selector}
}

func daemonSetWorkload(d *appsv1.DaemonSet) *workload {
	return &workload{ref: migrate.WorkloadRef{Kind: migrate.KindDaemonSet, Name: d.Name}, obj: d, meta: &d.ObjectMeta, tmpl: &d.Spec.Template, sel: d.Spec.Selector}
}

// getWorkload reads the workload ref names.
func getWorkload(ctx context.Context, typed kubernetes.Interface, ns string, ref migrate.WorkloadRef) (*workload, error) {
	apps := typed.AppsV1()
	switch ref.Kind {
	case migrate.KindDeployment:
		d, err := apps.Deployments(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return deploymentWorkload(d), nil
	case migrate.KindStatefulSet:
		s, err := apps.StatefulSets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return statefulSetWorkload(s), nil
	case migrate.KindDaemonSet:
		d, err := apps.DaemonSets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return daemonSetWorkload(d), nil
	}
	return nil, fmt.Errorf("ambitctl does not restart %s", ref)
}

// update writes the workload back.
func (w *workload) update(ctx context.Context, typed kubernetes.Interface) error {
	opts := metav1.UpdateOptions{FieldManager: components.FieldManager}
	var err error
	switch o := w.obj.(type) {
	case *appsv1.Deployment:
		_, err = typed.AppsV1().Deployments(o.Namespace).Update(ctx, o, opts)
	case *appsv1.StatefulSet:
		_, err = typed.AppsV1().StatefulSets(o.Namespace).Update(ctx, o, opts)
	case *appsv1.DaemonSet:
		_, err = typed.AppsV1().DaemonSets(o.Namespace).Update(ctx, o, opts)
	}
	return err
}

// listWorkloads returns the Deployments, StatefulSets and DaemonSets of ns.
func listWorkloads(ctx context.Context, typed kubernetes.Interface, ns string) ([]*workload, error) {
	apps := typed.AppsV1()
	var out []*workload
	deps, err := apps.Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("deployments", err)
	}
	for i := range deps.Items {
		out = append(out, deploymentWorkload(&deps.Items[i]))
	}
	sts, err := apps.StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("statefulsets", err)
	}
	for i := range sts.Items {
		out = append(out, statefulSetWorkload(&sts.Items[i]))
	}
	dss, err := apps.DaemonSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("daemonsets", err)
	}
	for i := range dss.Items {
		out = append(out, daemonSetWorkload(&dss.Items[i]))
	}
	return out, nil
}

// selects reports whether pod p belongs to the workload: its selector
// matches the pod's labels.
func (w *workload) selects(p corev1.Pod) bool {
	sel, err := metav1.LabelSelectorAsSelector(w.sel)
	if err != nil || sel.Empty() {
		return false
	}
	return sel.Matches(labels.Set(p.Labels))
}

// hasSidecar reports whether the workload's template or one of its live
// pods carries a sidecar.
func (w *workload) hasSidecar(pods []corev1.Pod) bool {
	return migrate.HasSidecar(w.tmpl.Annotations, w.tmpl.Spec) || slices.ContainsFunc(pods, func(p corev1.Pod) bool {
		return p.DeletionTimestamp == nil && w.selects(p) && migrate.HasSidecar(p.Annotations, p.Spec)
	})
}

// sidecarWorkloads returns the workloads of ns ("kind/name") whose pod
// template or live pods carry an Istio sidecar, and the pods with a
// sidecar no controller ambitctl restarts owns, both sorted.
func sidecarWorkloads(ctx context.Context, c *Clients, ns string) (workloads, unrestartable []string, err error) {
	ws, err := listWorkloads(ctx, c.Typed, ns)
	if err != nil {
		return nil, nil, err
	}
	pods, err := c.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, listErr("pods", err)
	}
	for _, w := range ws {
		if w.hasSidecar(pods.Items) {
			workloads = append(workloads, w.ref.String())
		}
	}
	slices.Sort(workloads)
	unrestartable, err = unrestartablePods(ctx, c.Typed, ns, pods.Items)
	return workloads, unrestartable, err
}

// unrestartablePods returns migrate.UnrestartablePods of pods, reading
// the ReplicaSets' owners.
func unrestartablePods(ctx context.Context, typed kubernetes.Interface, ns string, pods []corev1.Pod) ([]string, error) {
	rss, err := typed.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("replicasets", err)
	}
	owner := map[string]string{}
	for _, rs := range rss.Items {
		if c := metav1.GetControllerOf(&rs); c != nil {
			owner[rs.Name] = c.Kind
		}
	}
	return migrate.UnrestartablePods(pods, owner), nil
}

// stripSidecar takes the sidecar out of a workload's pod template,
// keeping it in the workload's annotation AnnotationSidecarRemoved; it
// reports whether it took anything.
func stripSidecar(w *workload) (bool, error) {
	sc := migrate.StripSidecar(w.tmpl)
	if sc == nil {
		return false, nil
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return false, err
	}
	if w.meta.Annotations == nil {
		w.meta.Annotations = map[string]string{}
	}
	w.meta.Annotations[migrate.AnnotationSidecarRemoved] = string(b)
	return true, nil
}

// restoreSidecar puts back what stripSidecar took.
func restoreSidecar(w *workload) (bool, error) {
	v, ok := w.meta.Annotations[migrate.AnnotationSidecarRemoved]
	if !ok {
		return false, nil
	}
	var sc migrate.Sidecar
	if err := json.Unmarshal([]byte(v), &sc); err != nil {
		return false, fmt.Errorf("annotation %s of %s in %s: %w (fix or remove the annotation)", migrate.AnnotationSidecarRemoved, w.ref, w.meta.Namespace, err)
	}
	migrate.RestoreSidecar(w.tmpl, &sc)
	delete(w.meta.Annotations, migrate.AnnotationSidecarRemoved)
	return true, nil
}
