// Package backendpolicy resolves BackendPolicies (networking.ambit.dev)
// into the cluster settings of each Service port (internal/waypointxds
// BackendSettings, XDS.md §14) and the status each policy gets per target,
// in the shape of Gateway API policy attachment (status.ancestors with an
// Accepted condition). It is pure: the caller passes every policy and a
// lookup of Services, and gets back what to send to waypoints and what to
// write in status.
//
// Which policy applies to a Service port: of the policies whose targets
// cover the port, one naming the port (sectionName) wins over one naming
// the whole Service; between equals the oldest wins, then the first by
// name. A policy that loses a port to an equal is Conflicted on that
// target; one naming the whole Service that a port-specific policy
// overrides is not (it still applies to the Service's other ports).
package backendpolicy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	networkingv1alpha1 "ambit.dev/api/networking/v1alpha1"
	"ambit.dev/controlplane/internal/waypointxds"
)

// ControllerName is what Ambit writes as controllerName in the ancestor
// statuses it owns (the waypoint GatewayClass's controller; the same as
// internal/httproute's).
const ControllerName = "ambit.dev/waypoint-controller"

// Ref names a BackendPolicy.
type Ref struct{ Namespace, Name string }

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// ServiceRef names a Service.
type ServiceRef struct{ Namespace, Name string }

func (r ServiceRef) String() string { return r.Namespace + "/" + r.Name }

// ServicePort is one port of a Service, by number.
type ServicePort struct {
	Service ServiceRef
	Port    uint16
}

// Service is what resolving needs to know of a targeted Service.
type Service struct {
	// Ports are its TCP ports.
	Ports []Port
	// Waypoint is the Gateway "<namespace>/<name>" its traffic is bound
	// to; empty when none.
	Waypoint string
}

// Port is one TCP port of a Service.
type Port struct {
	Name string
	Port uint16
}

// Lookup returns the Service ref names, false when there is none.
type Lookup func(ServiceRef) (Service, bool)

// Ancestor is the status of a policy for one of its targets.
type Ancestor struct {
	Ref      networkingv1alpha1.BackendPolicyAncestorRef
	Accepted metav1.Condition
}

// Result is the outcome of Resolve.
type Result struct {
	// Settings are the settings of each Service port an accepted policy
	// applies to.
	Settings map[ServicePort]*waypointxds.BackendSettings
	// Status holds, for every policy, one Ancestor per targetRef, in the
	// order of spec.targetRefs.
	Status map[Ref][]Ancestor
	// Services are, per policy, the Services its targets name (found or
	// not), sorted.
	Services map[Ref][]ServiceRef
}

// claim is one target of a valid policy that names an existing Service:
// the ports it covers.
type claim struct {
	policy   *networkingv1alpha1.BackendPolicy
	target   int
	specific bool // names a port (sectionName)
	settings *waypointxds.BackendSettings
}

// Resolve decides, for every port of the Services the policies target,
// which policy applies (see the package comment), and the status of every
// policy.
func Resolve(policies []*networkingv1alpha1.BackendPolicy, lookup Lookup) Result {
	res := Result{
		Settings: map[ServicePort]*waypointxds.BackendSettings{},
		Status:   map[Ref][]Ancestor{},
		Services: map[Ref][]ServiceRef{},
	}
	type targetKey struct {
		policy Ref
		target int
	}
	// Per target of a valid policy naming an existing Service: the
	// Service, and the ports it lost and to whom.
	lost := map[targetKey][]string{}
	services := map[targetKey]Service{}
	claims := map[ServicePort][]claim{}
	for _, p := range policies {
		ref := Ref{Namespace: p.Namespace, Name: p.Name}
		ancestors := make([]Ancestor, len(p.Spec.TargetRefs))
		for i, t := range p.Spec.TargetRefs {
			ancestors[i].Ref = networkingv1alpha1.BackendPolicyAncestorRef{
				Group: t.Group, Kind: t.Kind, Namespace: p.Namespace, Name: t.Name, SectionName: t.SectionName,
			}
			if t.Kind == "Service" && t.Group == "" && t.Name != "" {
				res.Services[ref] = append(res.Services[ref], ServiceRef{Namespace: p.Namespace, Name: t.Name})
			}
		}
		slices.SortFunc(res.Services[ref], func(a, b ServiceRef) int { return cmp.Compare(a.Name, b.Name) })
		res.Services[ref] = slices.Compact(res.Services[ref])
		res.Status[ref] = ancestors

		settings, err := Settings(p.Spec)
		if err != nil {
			for i := range ancestors {
				ancestors[i].Accepted = condition(p, false, networkingv1alpha1.ReasonInvalid, "%v", err)
			}
			continue
		}
		for i, t := range p.Spec.TargetRefs {
			if t.Group != "" || t.Kind != "Service" {
				ancestors[i].Accepted = condition(p, false, networkingv1alpha1.ReasonInvalid,
					"targetRefs[%d] is %s %q: only Services (group \"\", kind Service) can be targeted", i, strings.TrimPrefix(t.Group+"/"+t.Kind, "/"), t.Name)
				continue
			}
			sref := ServiceRef{Namespace: p.Namespace, Name: t.Name}
			svc, ok := lookup(sref)
			if !ok {
				ancestors[i].Accepted = condition(p, false, networkingv1alpha1.ReasonTargetNotFound, "Service %s not found", sref)
				continue
			}
			var ports []uint16
			for _, sp := range svc.Ports {
				if t.SectionName == "" || sp.Name == t.SectionName {
					ports = append(ports, sp.Port)
				}
			}
			if len(ports) == 0 {
				if t.SectionName != "" {
					ancestors[i].Accepted = condition(p, false, networkingv1alpha1.ReasonTargetNotFound, "Service %s has no TCP port named %q", sref, t.SectionName)
				} else {
					ancestors[i].Accepted = condition(p, false, networkingv1alpha1.ReasonTargetNotFound, "Service %s has no TCP port", sref)
				}
				continue
			}
			services[targetKey{ref, i}] = svc
			for _, port := range ports {
				sp := ServicePort{Service: sref, Port: port}
				claims[sp] = append(claims[sp], claim{policy: p, target: i, specific: t.SectionName != "", settings: settings})
			}
		}
	}

	for sp, cs := range claims {
		slices.SortFunc(cs, compareClaims)
		win := cs[0]
		winRef := Ref{Namespace: win.policy.Namespace, Name: win.policy.Name}
		for _, c := range cs[1:] {
			cref := Ref{Namespace: c.policy.Namespace, Name: c.policy.Name}
			if c.specific != win.specific || cref == winRef {
				continue // overridden by a more specific target, or by itself
			}
			k := targetKey{cref, c.target}
			lost[k] = append(lost[k], fmt.Sprintf("port %d to BackendPolicy %s", sp.Port, win.policy.Name))
		}
		if services[targetKey{winRef, win.target}].Waypoint != "" {
			res.Settings[sp] = win.settings
		}
	}

	for _, p := range policies {
		ref := Ref{Namespace: p.Namespace, Name: p.Name}
		for i := range res.Status[ref] {
			a := &res.Status[ref][i]
			if a.Accepted.Type != "" {
				continue
			}
			k := targetKey{ref, i}
			svc := services[k]
			switch {
			case len(lost[k]) > 0:
				l := lost[k]
				slices.Sort(l)
				a.Accepted = condition(p, false, networkingv1alpha1.ReasonConflicted,
					"another policy targets the same Service port and wins (the one naming the port, then the oldest, then the first by name): lost %s", strings.Join(l, ", "))
			case svc.Waypoint == "":
				a.Accepted = condition(p, false, networkingv1alpha1.ReasonWaypointRequired,
					"Service %s/%s is not bound to a waypoint, which is what applies a BackendPolicy: label it (or its namespace) ambit.dev/use-waypoint=<gateway>", p.Namespace, p.Spec.TargetRefs[i].Name)
			default:
				a.Accepted = condition(p, true, networkingv1alpha1.ReasonAccepted, "applied by waypoint %s", svc.Waypoint)
			}
		}
	}
	return res
}

// compareClaims orders the claims on one port: the winner first.
func compareClaims(a, b claim) int {
	if a.specific != b.specific {
		if a.specific {
			return -1
		}
		return 1
	}
	return cmp.Or(
		a.policy.CreationTimestamp.Time.Compare(b.policy.CreationTimestamp.Time),
		cmp.Compare(a.policy.Namespace, b.policy.Namespace),
		cmp.Compare(a.policy.Name, b.policy.Name),
		cmp.Compare(a.target, b.target),
	)
}

func condition(p *networkingv1alpha1.BackendPolicy, ok bool, reason, format string, args ...any) metav1.Condition {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{
		Type: networkingv1alpha1.ConditionAccepted, Status: status, Reason: reason,
		Message: fmt.Sprintf(format, args...), ObservedGeneration: p.Generation,
	}
}

// Settings converts the spec of a BackendPolicy into cluster settings. It
// checks what the CRD's validation checks (an API server without CEL, or
// an object stored before, lets bad values through), naming the field.
func Settings(spec networkingv1alpha1.BackendPolicySpec) (*waypointxds.BackendSettings, error) {
	var errs []error
	count := func(field string, v *int32, min int32) uint32 {
		if v == nil {
			return 0
		}
		if *v < min {
			errs = append(errs, fmt.Errorf("%s is %d; it must be at least %d", field, *v, min))
			return 0
		}
		return uint32(*v)
	}
	dur := func(field string, d *networkingv1alpha1.Duration) time.Duration {
		if d == nil {
			return 0
		}
		v, err := time.ParseDuration(string(*d))
		if err != nil || v <= 0 {
			errs = append(errs, fmt.Errorf("%s is %q; it must be a positive duration such as \"1s\" or \"500ms\"", field, *d))
			return 0
		}
		return v
	}
	out := &waypointxds.BackendSettings{}
	if spec.ConnectionPool == nil && spec.OutlierDetection == nil && spec.LoadBalancer == nil {
		errs = append(errs, errors.New("set at least one of connectionPool, outlierDetection and loadBalancer"))
	}
	if cp := spec.ConnectionPool; cp != nil {
		if t := cp.TCP; t != nil {
			out.MaxConnections = count("connectionPool.tcp.maxConnections", t.MaxConnections, 1)
			out.ConnectTimeout = dur("connectionPool.tcp.connectTimeout", t.ConnectTimeout)
		}
		if h := cp.HTTP; h != nil {
			out.MaxPendingRequests = count("connectionPool.http.maxPendingRequests", h.MaxPendingRequests, 1)
			out.MaxRequests = count("connectionPool.http.maxRequests", h.MaxRequests, 1)
			out.MaxRequestsPerConnection = count("connectionPool.http.maxRequestsPerConnection", h.MaxRequestsPerConnection, 1)
		}
	}
	if od := spec.OutlierDetection; od != nil {
		o := &waypointxds.OutlierDetection{
			Consecutive5xx:           count("outlierDetection.consecutive5xxErrors", od.Consecutive5xxErrors, 1),
			ConsecutiveGatewayErrors: count("outlierDetection.consecutiveGatewayErrors", od.ConsecutiveGatewayErrors, 1),
			Interval:                 dur("outlierDetection.interval", od.Interval),
			BaseEjectionTime:         dur("outlierDetection.baseEjectionTime", od.BaseEjectionTime),
		}
		if od.Consecutive5xxErrors == nil && od.ConsecutiveGatewayErrors == nil {
			errs = append(errs, errors.New("outlierDetection must set consecutive5xxErrors or consecutiveGatewayErrors"))
		}
		if m := od.MaxEjectionPercent; m != nil {
			if *m < 0 || *m > 100 {
				errs = append(errs, fmt.Errorf("outlierDetection.maxEjectionPercent is %d; it must be 0-100", *m))
			} else {
				o.MaxEjectionPercent = new(uint32(*m))
			}
		}
		out.Outlier = o
	}
	if lb := spec.LoadBalancer; lb != nil {
		switch lb.Algorithm {
		case "", networkingv1alpha1.LBRoundRobin:
			out.LB = waypointxds.LBRoundRobin
		case networkingv1alpha1.LBLeastRequest:
			out.LB = waypointxds.LBLeastRequest
		case networkingv1alpha1.LBEWMA:
			out.LB = waypointxds.LBEWMA
		default:
			errs = append(errs, fmt.Errorf("loadBalancer.algorithm %q is unknown: use RoundRobin, LeastRequest or EWMA", lb.Algorithm))
		}
		out.ChoiceCount = count("loadBalancer.choiceCount", lb.ChoiceCount, 2)
		if lb.ChoiceCount != nil && out.LB != waypointxds.LBLeastRequest && out.LB != waypointxds.LBEWMA {
			errs = append(errs, errors.New("loadBalancer.choiceCount applies only to algorithm LeastRequest or EWMA"))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
