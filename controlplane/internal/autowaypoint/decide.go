package autowaypoint

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"ambit.dev/controlplane/internal/model"
)

// This file holds the controller's decision, as a pure function of one
// namespace's objects (Decide).

// Names the controller writes.
const (
	// GatewayName is the name of the waypoint Gateway the controller
	// creates in a namespace.
	GatewayName = "ambit-auto-waypoint"
	// LabelAutoProvisioned marks a Gateway the controller created (value
	// "true"). Only such Gateways are ever deleted by it.
	LabelAutoProvisioned = "ambit.dev/auto-provisioned"
	// AnnotationAutoWaypoint marks a Service the controller bound to its
	// Gateway (value: the Gateway's name), next to the
	// model.LabelUseWaypoint label it set. Both are owned by FieldManager,
	// so removing them leaves the Service's other labels alone.
	AnnotationAutoWaypoint = "ambit.dev/auto-waypoint"
	// AnnotationReason on the Gateway lists the L7 objects that need it.
	AnnotationReason = "ambit.dev/auto-waypoint-reason"
	// LabelNamespaceAutoWaypoint on a Namespace set to
	// NamespaceOptOut turns auto-provisioning off there (and removes what
	// the controller made).
	LabelNamespaceAutoWaypoint = "ambit.dev/auto-waypoint"
	// NamespaceOptOut is the LabelNamespaceAutoWaypoint value that opts a
	// namespace out.
	NamespaceOptOut = "disabled"
)

// Namespace is one namespace as the decision sees it.
type Namespace struct {
	Name   string
	Labels map[string]string
	// Services of the namespace, by name.
	Services map[string]Service
	// Needs maps a Service name to the L7 objects that need a waypoint for
	// it ("HTTPRoute shop/canary"). A Service missing from Services is
	// ignored.
	Needs map[string][]string
	// Gateway is the Gateway named GatewayName in the namespace, if any.
	Gateway *Gateway
}

// Service is a Service's labels and annotations.
type Service struct {
	Labels      map[string]string
	Annotations map[string]string
}

// Gateway is the Gateway named GatewayName.
type Gateway struct {
	// Ours is true when it carries LabelAutoProvisioned=true.
	Ours bool
	// Class is its spec.gatewayClassName.
	Class string
	// Programmed is true once the waypoint controller deployed it.
	Programmed bool
	// Reason is its AnnotationReason.
	Reason string
}

// Plan is what the controller does in a namespace.
type Plan struct {
	// EnsureGateway: apply the Gateway (create it, or update its reason).
	EnsureGateway bool
	// Reason is the Gateway's AnnotationReason.
	Reason string
	// DeleteGateway: delete the controller's Gateway.
	DeleteGateway bool
	// Bind are the Services to label with the Gateway; Unbind those whose
	// label and annotation the controller removes. Sorted.
	Bind, Unbind []string
	// Skipped explains, per Service that needs L7 and is not bound by the
	// controller, why (its own label or its namespace's decides).
	Skipped map[string]string
	// Conflict, when set, says why no Gateway is created although one is
	// needed.
	Conflict string
}

// Empty reports whether p changes nothing.
func (p Plan) Empty() bool {
	return !p.EnsureGateway && !p.DeleteGateway && len(p.Bind) == 0 && len(p.Unbind) == 0
}

// boundByUs reports whether the controller bound s: its annotation names
// the Gateway and its label still does.
func boundByUs(s Service) bool {
	return s.Annotations[AnnotationAutoWaypoint] == GatewayName && s.Labels[model.LabelUseWaypoint] == GatewayName
}

// Decide returns the plan for ns:
//
//   - A Service needs the controller's waypoint when an L7 object needs it
//     (ns.Needs) and nothing else decides its waypoint: no
//     model.LabelUseWaypoint of its own (other than the one the controller
//     set) and none on the namespace (a user's choice, "none" included,
//     always wins), and the namespace has not opted out
//     (LabelNamespaceAutoWaypoint=disabled).
//   - If any Service needs it, the Gateway is ensured; Services are bound
//     only once it is Programmed (before, a binding would be unusable and
//     the traffic would go without a waypoint anyway).
//   - A Gateway of that name the controller did not create is never
//     touched: nothing is bound to it and the conflict is reported.
//   - Services the controller bound that no longer need it are unbound
//     (a Service whose label a user changed keeps the user's label; only
//     the annotation goes). The Gateway is deleted once nothing needs it
//     and no Service is bound to it by the controller any more.
func Decide(ns Namespace) Plan {
	p := Plan{Skipped: map[string]string{}}
	optedOut := ns.Labels[LabelNamespaceAutoWaypoint] == NamespaceOptOut
	nsLabel := ns.Labels[model.LabelUseWaypoint]

	var need []string
	var reasons []string
	for _, name := range slices.Sorted(maps.Keys(ns.Needs)) {
		s, ok := ns.Services[name]
		if !ok || len(ns.Needs[name]) == 0 {
			continue
		}
		own := s.Labels[model.LabelUseWaypoint]
		switch {
		case optedOut:
			p.Skipped[name] = fmt.Sprintf("namespace %s opts out of auto-provisioning (%s=%s)", ns.Name, LabelNamespaceAutoWaypoint, NamespaceOptOut)
		case own != "" && !boundByUs(s):
			p.Skipped[name] = fmt.Sprintf("Service %s/%s chooses its waypoint itself (%s=%s)", ns.Name, name, model.LabelUseWaypoint, own)
		case own == "" && nsLabel != "":
			p.Skipped[name] = fmt.Sprintf("namespace %s chooses the waypoint of its Services (%s=%s)", ns.Name, model.LabelUseWaypoint, nsLabel)
		default:
			need = append(need, name)
			objs := slices.Clone(ns.Needs[name])
			sort.Strings(objs)
			reasons = append(reasons, name+": "+strings.Join(slices.Compact(objs), ", "))
		}
	}

	gw := ns.Gateway
	usable := gw != nil && gw.Ours && gw.Class == model.WaypointClass
	if len(need) > 0 {
		switch {
		case gw != nil && !usable:
			p.Conflict = fmt.Sprintf("a Gateway %s/%s that Ambit did not auto-provision exists: rename it, or bind the Services to a waypoint yourself (%s)", ns.Name, GatewayName, model.LabelUseWaypoint)
			need = nil
		default:
			p.Reason = strings.Join(reasons, "; ")
			if gw == nil || gw.Reason != p.Reason {
				p.EnsureGateway = true
			}
		}
	}
	needSet := map[string]bool{}
	for _, n := range need {
		needSet[n] = true
	}
	if usable && gw.Programmed {
		for _, n := range need {
			if !boundByUs(ns.Services[n]) {
				p.Bind = append(p.Bind, n)
			}
		}
	}
	stillBound := false
	for _, name := range slices.Sorted(maps.Keys(ns.Services)) {
		s := ns.Services[name]
		if s.Annotations[AnnotationAutoWaypoint] == "" {
			continue
		}
		if boundByUs(s) && needSet[name] {
			continue
		}
		p.Unbind = append(p.Unbind, name)
		if boundByUs(s) {
			stillBound = true
		}
	}
	if usable && len(need) == 0 && !stillBound {
		p.DeleteGateway = true
	}
	return p
}
