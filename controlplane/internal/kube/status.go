package kube

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	"ambit.dev/controlplane/internal/httproute"
	"ambit.dev/controlplane/internal/policy"
)

// fieldManager names the control plane in managedFields.
const fieldManager = "ambit-controlplane"

// RunStatusWriter writes the Accepted condition of every AuthorizationPolicy
// and PeerAuthentication, and the parent statuses of every HTTPRoute with a
// Service parent, whose compiled outcome differs from its status, and
// keeps doing so as policies change, until ctx ends. It is a leader-only
// writer (internal/leader): only one replica writes status. It starts with
// every known policy, so a new leader repairs what a previous one missed.
//
// It is a small controller of its own: a workqueue of policies, filled by
// the model controller whenever a policy's outcome may have changed, and a
// worker that compares the wanted condition with the cached object's status
// (level-based) and updates the status subresource only when they differ.
func (c *Controller) RunStatusWriter(ctx context.Context) error {
	select {
	case <-c.synced:
	case <-ctx.Done():
		return nil
	}
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[statusItem](),
		workqueue.TypedRateLimitingQueueConfig[statusItem]{Name: "ambit-policy-status"})
	c.statusMu.Lock()
	c.statusQueue = q
	c.statusMu.Unlock()
	defer func() {
		c.statusMu.Lock()
		c.statusQueue = nil
		c.statusMu.Unlock()
		q.ShutDown()
	}()
	// The queue is visible before the full list is taken, so a change in
	// between is queued by the model controller; the queue deduplicates.
	c.mu.Lock()
	refs := c.policies.Refs()
	routes := slices.Collect(maps.Keys(c.routes))
	c.mu.Unlock()
	for _, r := range refs {
		q.Add(statusItem{policy: r})
	}
	for _, r := range routes {
		q.Add(statusItem{route: r})
	}
	stop := context.AfterFunc(ctx, q.ShutDown)
	defer stop()
	for {
		r, shutdown := q.Get()
		if shutdown {
			return nil
		}
		var err error
		if r.route.Name != "" {
			err = c.writeRouteStatus(ctx, r.route)
		} else {
			err = c.writeStatus(ctx, r.policy)
		}
		switch {
		case err == nil:
			q.Forget(r)
		case ctx.Err() != nil:
			q.Done(r)
			return nil
		default:
			c.metrics.statusWrites.WithLabelValues("error").Inc()
			c.log.Warn("writing status failed; retrying", "object", r.String(), "error", err)
			q.AddRateLimited(r)
		}
		q.Done(r)
	}
}

// enqueueStatus queues the status of refs if the status writer runs (this
// replica leads). Safe with or without c.mu held.
func (c *Controller) enqueueStatus(refs ...policy.Ref) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.statusQueue == nil {
		return
	}
	for _, r := range refs {
		c.statusQueue.Add(statusItem{policy: r})
	}
}

// statusItem is one object whose status the writer keeps: a policy, or
// (route set) an HTTPRoute or GRPCRoute.
type statusItem struct {
	policy policy.Ref
	route  httproute.Ref
}

func (s statusItem) String() string {
	if s.route.Name != "" {
		return strings.ToLower(s.route.Kind.String()) + " " + s.route.Key()
	}
	return s.policy.Kind.String() + " " + s.policy.Namespace + "/" + s.policy.Name
}

// writeStatus makes the status of policy r say what the index says about
// it.
func (c *Controller) writeStatus(ctx context.Context, r policy.Ref) error {
	c.mu.Lock()
	want, known := c.policies.Condition(r)
	obj, exists, err := c.policyInformer(r.Kind).GetIndexer().GetByKey(r.Namespace + "/" + r.Name)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if !known || !exists {
		return nil // deleted: nothing to write
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("a %s in the cache is a %T, not unstructured", policyResource(r.Kind).Resource, obj)
	}
	var cur securityv1alpha1.PolicyStatus
	if raw, ok := u.Object["status"].(map[string]any); ok {
		// A status the control plane cannot read is overwritten.
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &cur)
	}
	next, changed := NextStatus(cur, want)
	if !changed {
		return nil
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&next)
	if err != nil {
		return fmt.Errorf("encoding status: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err() // no longer leading: do not write
	}
	upd := u.DeepCopy()
	upd.Object["status"] = raw
	_, err = c.dyn.Resource(policyResource(r.Kind)).Namespace(r.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{FieldManager: fieldManager})
	switch {
	case apierrors.IsNotFound(err):
		return nil // deleted meanwhile
	case err != nil:
		// A conflict means the cache is behind; the retry reads the newer
		// object.
		return fmt.Errorf("updating the status of %s %s/%s (RBAC: the control plane needs update on %s/status): %w",
			policyResource(r.Kind).Resource, r.Namespace, r.Name, policyResource(r.Kind).Resource, err)
	}
	c.metrics.statusWrites.WithLabelValues("success").Inc()
	c.log.Info("policy status updated", "kind", r.Kind.String(), "namespace", r.Namespace, "name", r.Name,
		"accepted", want.Status, "reason", want.Reason, "message", want.Message)
	return nil
}

// NextStatus returns cur with its Accepted condition set to want (keeping
// other conditions and the transition time when the status did not flip),
// and whether that differs from cur.
func NextStatus(cur securityv1alpha1.PolicyStatus, want metav1.Condition) (securityv1alpha1.PolicyStatus, bool) {
	old := apimeta.FindStatusCondition(cur.Conditions, want.Type)
	if old != nil && old.Status == want.Status && old.Reason == want.Reason && old.Message == want.Message &&
		old.ObservedGeneration == want.ObservedGeneration && cur.ObservedGeneration == want.ObservedGeneration {
		return cur, false
	}
	next := *cur.DeepCopy()
	want.LastTransitionTime = metav1.Now()
	apimeta.SetStatusCondition(&next.Conditions, want)
	next.ObservedGeneration = want.ObservedGeneration
	return next, true
}
