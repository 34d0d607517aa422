package kube

import (
	"cmp"
	"context"
	"maps"
	"reflect"
	"slices"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	networkingv1alpha1 "ambit.dev/api/networking/v1alpha1"
	"ambit.dev/controlplane/internal/backendpolicy"
	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/waypointxds"
)

// BackendPoliciesResource is the resource of BackendPolicies: they set the
// waypoint cluster settings of the Services they target (XDS.md §14).
var BackendPoliciesResource = networkingv1alpha1.SchemeGroupVersion.WithResource("backendpolicies")

// This file keeps the resolved BackendPolicies. Policies compete for
// Service ports, so every change of a policy, or of a Service's ports or
// waypoint binding, resolves all of them again (internal/backendpolicy;
// policies are few). The waypoints of the Services whose settings changed
// (bound to them, or reaching them as a route's backend) are marked, and
// the policies whose status changed are queued for the status writer.

// resolveBackendPolicies resolves every cached BackendPolicy. Caller holds
// c.mu.
func (c *Controller) resolveBackendPolicies(b *batch) {
	if c.backendPolicies == nil {
		return
	}
	var policies []*networkingv1alpha1.BackendPolicy
	for _, obj := range c.backendPolicies.GetStore().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var p networkingv1alpha1.BackendPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			// The API server validated it against the CRD: a mismatch means
			// another version of the CRD.
			c.log.Warn("ignoring a BackendPolicy that does not match the networking.ambit.dev/v1alpha1 schema",
				"policy", u.GetNamespace()+"/"+u.GetName(), "error", err)
			continue
		}
		policies = append(policies, &p)
	}
	res := backendpolicy.Resolve(policies, c.backendPolicyLookup)
	old := c.bpResult
	c.bpResult = res
	for sp := range mergeSettingsKeys(old.Settings, res.Settings) {
		if reflect.DeepEqual(old.Settings[sp], res.Settings[sp]) {
			continue
		}
		ref := model.ObjectRef{Namespace: sp.Service.Namespace, Name: sp.Service.Name}
		b.markWaypoint(c.svcWaypoint[ref])
		for _, r := range c.routesOf(ref) {
			c.markRouteWaypoints(c.routes[r], b)
		}
	}
	var changed []backendpolicy.Ref
	for ref, st := range res.Status {
		if !reflect.DeepEqual(old.Status[ref], st) {
			changed = append(changed, ref)
		}
	}
	c.enqueueBackendPolicyStatus(changed...)
}

func mergeSettingsKeys(a, b map[backendpolicy.ServicePort]*waypointxds.BackendSettings) map[backendpolicy.ServicePort]bool {
	out := map[backendpolicy.ServicePort]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// backendPolicyLookup is the Service lookup of backendpolicy.Resolve.
// Caller holds c.mu.
func (c *Controller) backendPolicyLookup(r backendpolicy.ServiceRef) (backendpolicy.Service, bool) {
	svc, err := c.svcLister.Services(r.Namespace).Get(r.Name)
	if err != nil {
		return backendpolicy.Service{}, false
	}
	var out backendpolicy.Service
	for _, p := range WaypointPorts(svc) {
		out.Ports = append(out.Ports, backendpolicy.Port{Name: p.Name, Port: p.Port})
	}
	if wp := c.svcWaypoint[model.ObjectRef{Namespace: r.Namespace, Name: r.Name}]; wp.Name != "" {
		out.Waypoint = wp.String()
	}
	return out, true
}

// addBackendSettings sets the BackendPolicy settings of the ports of s.
// Caller holds c.mu.
func (c *Controller) addBackendSettings(s *waypointxds.Service) {
	for i := range s.Ports {
		s.Ports[i].Backend = c.bpResult.Settings[backendpolicy.ServicePort{
			Service: backendpolicy.ServiceRef{Namespace: s.Namespace, Name: s.Name}, Port: s.Ports[i].Port,
		}]
	}
}

// --- status ---

// enqueueBackendPolicyStatus queues the status of policies refs if the
// status writer runs. Safe with or without c.mu held.
func (c *Controller) enqueueBackendPolicyStatus(refs ...backendpolicy.Ref) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.statusQueue == nil {
		return
	}
	for _, r := range refs {
		c.statusQueue.Add(statusItem{backendPolicy: r})
	}
}

// backendPolicyRefs returns every resolved policy, sorted. Caller holds
// c.mu.
func (c *Controller) backendPolicyRefs() []backendpolicy.Ref {
	return slices.SortedFunc(maps.Keys(c.bpResult.Status), func(a, b backendpolicy.Ref) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

// writeBackendPolicyStatus makes the ancestor statuses Ambit owns on
// policy r say what the last resolution said.
func (c *Controller) writeBackendPolicyStatus(ctx context.Context, r backendpolicy.Ref) error {
	c.mu.Lock()
	want, known := c.bpResult.Status[r]
	inf := c.backendPolicies
	c.mu.Unlock()
	var cur networkingv1alpha1.BackendPolicyStatus
	u, err := cachedWithStatus(inf, r.String(), &cur)
	if err != nil || !known || u == nil {
		return err
	}
	next, changed := NextBackendPolicyStatus(cur, want)
	if !changed {
		return nil
	}
	if written, err := c.putStatus(ctx, BackendPoliciesResource, u, &next); err != nil || !written {
		return err
	}
	for _, a := range want {
		c.log.Info("BackendPolicy status updated", "policy", r.String(), "target", a.Ref.Name, "sectionName", a.Ref.SectionName,
			"accepted", a.Accepted.Status, "reason", a.Accepted.Reason, "message", a.Accepted.Message)
	}
	return nil
}

// NextBackendPolicyStatus returns cur with the ancestor statuses of
// Ambit's controller replaced by want, in its order (other controllers'
// entries are kept first; a condition that did not change keeps its
// transition time), and whether that differs from cur.
func NextBackendPolicyStatus(cur networkingv1alpha1.BackendPolicyStatus, want []backendpolicy.Ancestor) (networkingv1alpha1.BackendPolicyStatus, bool) {
	var next networkingv1alpha1.BackendPolicyStatus
	ours := map[networkingv1alpha1.BackendPolicyAncestorRef]networkingv1alpha1.BackendPolicyAncestorStatus{}
	var order, wantOrder []networkingv1alpha1.BackendPolicyAncestorRef
	for _, a := range cur.Ancestors {
		if a.ControllerName == backendpolicy.ControllerName {
			ours[a.AncestorRef] = a
			order = append(order, a.AncestorRef)
			continue
		}
		next.Ancestors = append(next.Ancestors, *a.DeepCopy())
	}
	for _, w := range want {
		wantOrder = append(wantOrder, w.Ref)
	}
	changed := !slices.Equal(order, wantOrder)
	for _, w := range want {
		old, had := ours[w.Ref]
		a := networkingv1alpha1.BackendPolicyAncestorStatus{AncestorRef: w.Ref, ControllerName: backendpolicy.ControllerName}
		if had {
			a.Conditions = slices.Clone(old.Conditions)
		}
		o := apimeta.FindStatusCondition(a.Conditions, w.Accepted.Type)
		if o == nil || o.Status != w.Accepted.Status || o.Reason != w.Accepted.Reason || o.Message != w.Accepted.Message ||
			o.ObservedGeneration != w.Accepted.ObservedGeneration {
			changed = true
			c := w.Accepted
			c.LastTransitionTime = metav1.Now()
			apimeta.SetStatusCondition(&a.Conditions, c)
		}
		next.Ancestors = append(next.Ancestors, a)
	}
	return next, changed
}
