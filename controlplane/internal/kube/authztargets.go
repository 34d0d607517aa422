package kube

import (
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/policy"
	"ambit.dev/controlplane/internal/waypointxds"
)

// This file resolves AuthorizationPolicies with spec.targetRefs: what each
// target is (policy.CompileTargeted decides ztunnel's part and the
// status), and the policies each waypoint enforces (XDS.md §12).

// resolveTargets resolves the targetRefs of ap from the caches. Caller
// holds c.mu.
func (c *Controller) resolveTargets(ap *securityv1alpha1.AuthorizationPolicy) []policy.Target {
	var out []policy.Target
	for _, r := range ap.Spec.TargetRefs {
		t := policy.Target{Ref: r}
		ref := model.ObjectRef{Namespace: ap.Namespace, Name: r.Name}
		switch {
		case !policy.IsTargetRef(r):
		case r.Kind == securityv1alpha1.TargetKindService:
			if svc, err := c.svcLister.Services(ref.Namespace).Get(ref.Name); err == nil {
				t.Found = true
				if wp := c.svcWaypoint[ref]; wp.Name != "" {
					t.Waypoint = wp.String()
				} else {
					t.Selector = maps.Clone(svc.Spec.Selector)
				}
			}
		default:
			if _, ok := c.waypoints[ref]; ok {
				t.Found, t.Waypoint = true, ref.String()
			} else if c.gateways != nil {
				_, t.Found, _ = c.gateways.GetIndexer().GetByKey(ref.String())
			}
		}
		out = append(out, t)
	}
	return out
}

// noteTargetState records what a policy target Service resolves to and,
// when that changed, recompiles the AuthorizationPolicies with targetRefs
// in its namespace in the same batch (so that ztunnel's part never lags
// the binding). Caller holds c.mu.
func (c *Controller) noteTargetState(ref model.ObjectRef, state string, b *batch) {
	if old, ok := c.svcTargetState[ref]; ok && old == state {
		return
	}
	if state == "" {
		delete(c.svcTargetState, ref)
	} else {
		c.svcTargetState[ref] = state
	}
	c.recompileTargeting(ref.Namespace, b)
}

// recompileTargeting recompiles every AuthorizationPolicy of namespace ns
// that has targetRefs; one that fails is queued for a retry. Caller holds
// c.mu.
func (c *Controller) recompileTargeting(ns string, b *batch) {
	if !c.policiesLoaded {
		return // resyncAll loads them after the Services
	}
	for _, r := range c.targetingPolicies(ns) {
		if err := c.reconcilePolicy(policy.Ref{Kind: policy.KindAuthorizationPolicy, Namespace: r.Namespace, Name: r.Name}, b); err != nil {
			c.queue.Add(key{kind: kindAuthorizationPolicy, namespace: r.Namespace, name: r.Name})
		}
	}
}

// targetingPolicies lists the AuthorizationPolicies of ns with targetRefs.
func (c *Controller) targetingPolicies(ns string) []model.ObjectRef {
	var out []model.ObjectRef
	objs, err := c.authzPolicies.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return nil
	}
	for _, o := range objs {
		if m, err := metaOf(o); err == nil && hasTargetRefs(o) {
			out = append(out, model.ObjectRef{Namespace: m.GetNamespace(), Name: m.GetName()})
		}
	}
	return out
}

// requeueTargeting queues every AuthorizationPolicy of namespace ns that
// has targetRefs.
func (c *Controller) requeueTargeting(ns string) {
	objs, err := c.authzPolicies.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
	if err != nil {
		return
	}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		if refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs"); len(refs) > 0 {
			c.queue.Add(key{kind: kindAuthorizationPolicy, namespace: u.GetNamespace(), name: u.GetName()})
		}
	}
}

// waypointPolicies returns the AuthorizationPolicies waypoint wp enforces
// for Service svc: those whose targetRefs name the Service (in its
// namespace) or the waypoint's Gateway (in the Gateway's namespace),
// sorted. An invalid ALLOW or DENY policy is replaced by one that denies
// every request (fail closed); an invalid AUDIT policy is left out.
// Caller holds c.mu.
func (c *Controller) waypointPolicies(wp, svc model.ObjectRef) []waypointxds.Policy {
	var out []waypointxds.Policy
	for _, ns := range slices.Compact([]string{svc.Namespace, wp.Namespace}) {
		objs, err := c.authzPolicies.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
		if err != nil {
			continue
		}
		for _, o := range objs {
			u, ok := o.(*unstructured.Unstructured)
			if !ok || u.GetDeletionTimestamp() != nil {
				continue
			}
			var ap securityv1alpha1.AuthorizationPolicy
			if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ap) != nil || ap.Spec.Selector != nil {
				continue
			}
			if !slices.ContainsFunc(ap.Spec.TargetRefs, func(r securityv1alpha1.PolicyTargetReference) bool {
				if !policy.IsTargetRef(r) {
					return false
				}
				if r.Kind == securityv1alpha1.TargetKindService {
					return ap.Namespace == svc.Namespace && r.Name == svc.Name
				}
				return ap.Namespace == wp.Namespace && r.Name == wp.Name
			}) {
				continue
			}
			if p, ok := WaypointPolicy(&ap, c.rootNamespace); ok && !slices.ContainsFunc(out, func(q waypointxds.Policy) bool {
				return q.Namespace == p.Namespace && q.Name == p.Name
			}) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, func(a, b waypointxds.Policy) int {
		return compareRefs(model.ObjectRef{Namespace: a.Namespace, Name: a.Name}, model.ObjectRef{Namespace: b.Namespace, Name: b.Name})
	})
	return out
}

// WaypointPolicy converts an AuthorizationPolicy for a waypoint. A policy
// with problems (policy.CompileAuthorizationPolicy's or
// waypointxds.ValidatePolicy's) becomes a deny-all DENY policy of the same
// name, except AUDIT, which is left out (ok false).
func WaypointPolicy(ap *securityv1alpha1.AuthorizationPolicy, rootNamespace string) (waypointxds.Policy, bool) {
	p := toWaypointPolicy(ap)
	base := policy.CompileAuthorizationPolicy(ap, rootNamespace)
	if base.Condition.Reason != securityv1alpha1.ReasonInvalid && len(waypointxds.ValidatePolicy(p)) == 0 {
		return p, true
	}
	if p.Action == waypointxds.PolicyAudit {
		return waypointxds.Policy{}, false
	}
	return waypointxds.Policy{Namespace: ap.Namespace, Name: ap.Name, Action: waypointxds.PolicyDeny, Rules: []waypointxds.PolicyRule{{}}}, true
}

// toWaypointPolicy converts ap's spec as written.
func toWaypointPolicy(ap *securityv1alpha1.AuthorizationPolicy) waypointxds.Policy {
	p := waypointxds.Policy{Namespace: ap.Namespace, Name: ap.Name, Action: waypointxds.PolicyAction(ap.Spec.Action)}
	if p.Action == "" {
		p.Action = waypointxds.PolicyAllow
	}
	for _, r := range ap.Spec.Rules {
		var pr waypointxds.PolicyRule
		for _, f := range r.From {
			s := f.Source
			pr.From = append(pr.From, waypointxds.PolicySource{
				Principals: s.Principals, NotPrincipals: s.NotPrincipals, Namespaces: s.Namespaces, NotNamespaces: s.NotNamespaces,
				IPBlocks: s.IPBlocks, NotIPBlocks: s.NotIPBlocks,
			})
		}
		for _, t := range r.To {
			o := t.Operation
			pr.To = append(pr.To, waypointxds.PolicyOperation{
				Ports: o.Ports, NotPorts: o.NotPorts, Methods: o.Methods, NotMethods: o.NotMethods,
				Paths: o.Paths, NotPaths: o.NotPaths, Hosts: o.Hosts, NotHosts: o.NotHosts,
			})
		}
		for _, w := range r.When {
			pr.When = append(pr.When, waypointxds.PolicyCondition{Key: w.Key, Values: w.Values, NotValues: w.NotValues})
		}
		p.Rules = append(p.Rules, pr)
	}
	return p
}
