package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"ambit.dev/pkg/enrol"
)

const labelKey = enrol.LabelDataplaneMode

// fieldManager names the agent in the pods' managedFields.
const fieldManager = "ambit-node-agent"

func (a *Agent) enqueue(key string) {
	if q := a.queue.Load(); q != nil {
		(*q).Add(key)
	}
}

func (a *Agent) enqueuePod(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	a.enqueue(key)
}

// enqueueNamespace queues this node's pods of a namespace whose labels
// changed.
func (a *Agent) enqueueNamespace(obj any) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	pods, err := a.podLister.Pods(ns.Name).List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	for _, p := range pods {
		a.enqueue(p.Namespace + "/" + p.Name)
	}
}

// EnqueueAll queues every pod of the node, and every pod the agent holds a
// netns for; the ZDS server calls it when a ztunnel acked its replay, so
// pods left pending for lack of a ztunnel are captured at once.
func (a *Agent) EnqueueAll() {
	if a.queue.Load() == nil {
		return
	}
	pods, err := a.podLister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	for _, p := range pods {
		a.enqueue(p.Namespace + "/" + p.Name)
	}
	a.mu.Lock()
	recs := slices.Collect(maps.Values(a.records))
	a.mu.Unlock()
	for _, r := range recs {
		a.enqueue(r.pod.String())
	}
}

// podChanged reports whether an update touched anything reconcile reads.
func podChanged(o, n *corev1.Pod) bool {
	return o.UID != n.UID ||
		!maps.Equal(o.Labels, n.Labels) ||
		o.Annotations[enrol.AnnotationRedirection] != n.Annotations[enrol.AnnotationRedirection] ||
		o.Annotations[enrol.AnnotationSidecarStatus] != n.Annotations[enrol.AnnotationSidecarStatus] ||
		o.Status.Phase != n.Status.Phase ||
		!slices.Equal(o.Status.PodIPs, n.Status.PodIPs) ||
		(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
		o.Spec.NodeName != n.Spec.NodeName
}

// trim drops what the agent never reads from cached objects.
func trim(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	if p, ok := obj.(*corev1.Pod); ok {
		delete(p.Annotations, corev1.LastAppliedConfigAnnotation)
		p.Spec.Volumes = nil
		for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
			for i := range cs {
				cs[i] = corev1.Container{Name: cs[i].Name}
			}
		}
		p.Spec.EphemeralContainers = nil
		p.Status.ContainerStatuses = nil
		p.Status.InitContainerStatuses = nil
		p.Status.EphemeralContainerStatuses = nil
		p.Status.Conditions = nil
	}
	return obj, nil
}

func (a *Agent) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)
	err := a.reconcile(ctx, key)
	if err == nil {
		q.Forget(key)
		a.metrics.reconciles.WithLabelValues("success").Inc()
		return true
	}
	a.metrics.reconciles.WithLabelValues("retry").Inc()
	if ctx.Err() == nil {
		a.log.Warn("pod not settled; retrying with backoff", "pod", key, "error", err, "retries", q.NumRequeues(key))
		q.AddRateLimited(key)
	}
	return true
}

// prime records every enrolled (or still annotated) running pod of the
// node as a Keep for ztunnel, before any replay, so that a ztunnel that
// connects while the agent starts keeps them (see the package doc).
func (a *Agent) prime() int {
	pods, err := a.podLister.List(labels.Everything())
	if err != nil {
		utilruntime.HandleError(err)
		return 0
	}
	n := 0
	for _, p := range pods {
		st := a.podState(p)
		if !st.Exists || st.Finished || !st.HasIPs {
			continue
		}
		if st.Enrolled || st.Annotation == enrol.RedirectionEnabled {
			a.zt.Keep(toPod(p).workload())
			n++
		}
	}
	return n
}

// podState is what reconcile knows of p (nil: not on this node).
func (a *Agent) podState(p *corev1.Pod) PodState {
	if p == nil || p.Spec.NodeName != a.cfg.NodeName {
		return PodState{}
	}
	var ns *corev1.Namespace
	if n, err := a.nsLister.Get(p.Namespace); err == nil {
		ns = n
	}
	enrolled, _ := enrol.Decide(toEnrolNamespace(ns), toEnrolPod(p))
	captured := a.record(string(p.UID)) != nil
	return PodState{
		Exists:      true,
		Finished:    p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
		Terminating: p.DeletionTimestamp != nil,
		HasIPs:      len(podIPs(p)) > 0,
		Enrolled:    enrolled,
		Captured:    captured || a.zt.Has(string(p.UID)),
		Annotation:  p.Annotations[enrol.AnnotationRedirection],
	}
}

// reconcile brings the pod at key (namespace/name) to what Plan wants.
// A non-nil error re-queues it with backoff.
func (a *Agent) reconcile(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this controller made
	}
	p, err := a.podLister.Pods(namespace).Get(name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			return err
		}
		p = nil
	}
	if p != nil && p.Spec.NodeName != a.cfg.NodeName {
		p = nil
	}
	// Records of an older pod of the same name: its sandbox is gone.
	for _, uid := range a.recordsOf(namespace, name) {
		if p == nil || string(p.UID) != uid {
			a.forget(uid, "pod deleted")
		}
	}
	if p == nil {
		for _, uid := range a.deletedOf(namespace, name) {
			a.markDeleted(uid, Pod{})
		}
		return nil
	}
	st := a.podState(p)
	act := Plan(st)
	if act == ActionCapture && !st.Captured && a.sandboxDeleted(string(p.UID), podIPs(p)) {
		// The informer is behind a CNI DEL: wait for the pod to finish or
		// for its next sandbox (a CNI ADD).
		return nil
	}
	if st.Finished {
		a.markDeleted(string(p.UID), Pod{})
	}
	out := OutcomeDone
	var actErr error
	switch act {
	case ActionCapture:
		out, actErr = a.captureRunning(ctx, toPod(p))
		if out == OutcomeNetnsNotFound && a.finishedNow(ctx, p) {
			// The cache was behind: the pod finished and its sandbox is
			// gone. Nothing to capture, and "pending" would be wrong.
			a.forget(string(p.UID), "pod finished")
			return nil
		}
	case ActionRelease:
		out, actErr = a.release(ctx, toPod(p))
	case ActionForget:
		a.forget(string(p.UID), "pod finished")
	}
	if want := WantAnnotation(st.Annotation, act, out); want != st.Annotation {
		if err := a.annotate(ctx, p, want); err != nil {
			return err
		}
	}
	if Retry(act, out) {
		if actErr == nil {
			actErr = fmt.Errorf("%s ended with %s", act, out)
		}
		return fmt.Errorf("%s: %w", act, actErr)
	}
	return nil
}

// finishedNow asks the API server (not the cache) whether pod p has
// finished or is gone.
func (a *Agent) finishedNow(ctx context.Context, p *corev1.Pod) bool {
	live, err := a.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true
	case err != nil:
		return false
	}
	return live.UID != p.UID || live.Status.Phase == corev1.PodSucceeded || live.Status.Phase == corev1.PodFailed
}

// annotate sets the pod's ambit.dev/redirection annotation to value ("":
// removes it).
func (a *Agent) annotate(ctx context.Context, p *corev1.Pod, value string) error {
	_, err := a.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType,
		annotationPatch(string(p.UID), value), metav1.PatchOptions{FieldManager: fieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("annotate pod %s/%s %s=%q: %w (may the node agent patch pods? check its RBAC)",
			p.Namespace, p.Name, enrol.AnnotationRedirection, value, err)
	}
	a.log.Debug("annotated pod", "pod", p.Namespace+"/"+p.Name, "value", value)
	return nil
}
