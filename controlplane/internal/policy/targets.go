package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

// Target is what the control plane found for one spec.targetRefs entry of
// an AuthorizationPolicy (internal/kube resolves it; see
// CompileTargeted).
type Target struct {
	// Ref is the entry as written.
	Ref securityv1alpha1.PolicyTargetReference
	// Found is false when no such Service or waypoint Gateway exists.
	Found bool
	// Waypoint is "<namespace>/<name>" of the waypoint that enforces the
	// policy for this target: the Gateway itself, or the waypoint the
	// Service's traffic is bound to. Empty: none (ztunnel enforces).
	Waypoint string
	// Selector is the Service's spec.selector (Services without a
	// waypoint): the pods ztunnel enforces the policy on. Empty: the
	// Service selects no pods.
	Selector map[string]string
}

// TargetKey returns "<Kind>/<name>" of a target reference (group
// normalised), the key kube resolves targets by.
func TargetKey(r securityv1alpha1.PolicyTargetReference) string {
	return r.Kind + "/" + r.Name
}

// IsTargetRef reports whether r names a kind a policy can target: a core
// Service or a gateway.networking.k8s.io Gateway.
func IsTargetRef(r securityv1alpha1.PolicyTargetReference) bool {
	g := r.Group
	return (r.Kind == securityv1alpha1.TargetKindService && (g == "" || g == "core")) ||
		(r.Kind == securityv1alpha1.TargetKindGateway && g == securityv1alpha1.GatewayGroup)
}

// MessageWaypoint starts the Accepted message of a policy enforced by
// waypoints.
const MessageWaypoint = "enforced by waypoint "

// CompileTargeted compiles an AuthorizationPolicy with spec.targetRefs,
// given what each target resolved to (same order as the refs):
//
//   - a target served by a waypoint (a waypoint Gateway, or a Service
//     bound to one) is enforced by that waypoint, HTTP fields and `when`
//     included (XDS.md §12); nothing is sent to ztunnel for it, and
//     ztunnel only admits the waypoint to the Service's ports anyway;
//   - a Service without a waypoint: ztunnel enforces the policy on the
//     Service's pods (scope WORKLOAD_SELECTOR with the Service's selector)
//     when every rule is L4; with HTTP fields or `when`, Accepted is False
//     with reason WaypointRequired and ztunnel denies every connection to
//     those pods (fail closed, as for a selector policy); at most one such
//     Service per policy (more: reason Invalid, the first is enforced);
//   - a target that does not exist: reason TargetNotFound (the found
//     targets are still enforced).
//
// Invalid rules (the problems CompileAuthorizationPolicy finds) fail
// closed as there: Invalid, and deny-all on the ztunnel side; the waypoint
// side replaces the policy by a deny-all too (WaypointPolicy).
//
// l7Problems are what the waypoint side finds invalid in the rules (e.g. a
// `when` key or value); they make the policy Invalid like the others.
func CompileTargeted(p *securityv1alpha1.AuthorizationPolicy, rootNamespace string, targets []Target, l7Problems []string) Compiled {
	base := CompileAuthorizationPolicy(p, rootNamespace)
	if len(l7Problems) > 0 && base.Condition.Reason != securityv1alpha1.ReasonInvalid {
		base.Condition = condition(p.Generation, securityv1alpha1.ReasonInvalid, joinProblems(l7Problems)+"; every request to the targets is denied until this is fixed")
	}
	c := Compiled{Ref: base.Ref, ResourceName: base.ResourceName, Created: base.Created, Scope: workloadv1alpha1.Scope_WORKLOAD_SELECTOR}
	gen := p.Generation
	invalid := base.Condition.Reason == securityv1alpha1.ReasonInvalid || len(l7Problems) > 0
	var (
		waypoints []string
		missing   []string
		l4        []Target
		problems  []string
	)
	for i, t := range targets {
		switch {
		case !IsTargetRef(t.Ref):
			problems = append(problems, fmt.Sprintf("targetRefs[%d]: %s %q of group %q cannot be targeted (a Service, or a gateway.networking.k8s.io Gateway)", i, t.Ref.Kind, t.Ref.Name, t.Ref.Group))
		case !t.Found:
			missing = append(missing, fmt.Sprintf("targetRefs[%d]: %s %s/%s", i, t.Ref.Kind, p.Namespace, t.Ref.Name))
		case t.Waypoint != "":
			if !slices.Contains(waypoints, t.Waypoint) {
				waypoints = append(waypoints, t.Waypoint)
			}
		case t.Ref.Kind == securityv1alpha1.TargetKindGateway:
			missing = append(missing, fmt.Sprintf("targetRefs[%d]: Gateway %s/%s is not a waypoint (class ambit-waypoint)", i, p.Namespace, t.Ref.Name))
		default:
			l4 = append(l4, t)
		}
	}
	var http []string
	for i := range p.Spec.Rules {
		for _, f := range p.Spec.Rules[i].HTTPFields() {
			http = append(http, fmt.Sprintf("rules[%d] sets %s", i, f))
		}
	}
	audit := p.Spec.Action == securityv1alpha1.ActionAudit
	if len(l4) > 1 {
		problems = append(problems, fmt.Sprintf("%d targetRefs Services have no waypoint; ztunnel enforces a policy for at most one Service without a waypoint (give them a waypoint, or split the policy); only Service %s is enforced", len(l4), l4[0].Ref.Name))
	}
	if len(l4) > 0 {
		t := l4[0]
		c.Selector = maps.Clone(t.Selector)
		switch {
		case len(t.Selector) == 0:
			// Selects no pods: nothing to enforce.
		case invalid && audit:
		case invalid || (len(http) > 0 && !audit):
			c.Authorization = denyAll(p.Name, p.Namespace, c.Scope)
		case len(http) > 0:
			// AUDIT: the L4 rules are audited.
			c.Authorization = base.Authorization
			c.Authorization.Scope = c.Scope
		default:
			c.Authorization = base.Authorization
			c.Authorization.Scope = c.Scope
		}
	}
	switch {
	case invalid && audit:
		c.Condition = base.Condition
	case invalid:
		c.Condition = base.Condition
		c.Condition.Message = strings.Replace(c.Condition.Message, "ztunnel denies every connection to the selected workloads", "every request to the targets is denied", 1)
	case len(problems) > 0:
		c.Condition = condition(gen, securityv1alpha1.ReasonInvalid, joinProblems(problems))
	case len(missing) > 0:
		c.Condition = condition(gen, securityv1alpha1.ReasonTargetNotFound, joinProblems(missing)+" not found")
	case len(l4) > 0 && len(http) > 0:
		c.Condition = condition(gen, securityv1alpha1.ReasonWaypointRequired, fmt.Sprintf(
			"Service %s/%s has no waypoint: %s need one; %s until the Service is bound to a waypoint (label istio.io/use-waypoint)",
			p.Namespace, l4[0].Ref.Name, strings.Join(http, ", "), map[bool]string{true: "these rules are not audited", false: "ztunnel denies every connection to its pods"}[audit]))
	case len(waypoints) > 0 && len(l4) > 0:
		c.Condition = condition(gen, securityv1alpha1.ReasonAccepted, MessageWaypoint+strings.Join(waypoints, ", ")+"; "+MessageAccepted+" for Service "+l4[0].Ref.Name)
	case len(waypoints) > 0:
		c.Condition = condition(gen, securityv1alpha1.ReasonAccepted, MessageWaypoint+strings.Join(waypoints, ", "))
	default:
		c.Condition = condition(gen, securityv1alpha1.ReasonAccepted, MessageAccepted+" on the pods of Service "+firstName(l4))
	}
	return c
}

func firstName(ts []Target) string {
	if len(ts) == 0 {
		return ""
	}
	return ts[0].Ref.Name
}
