// Package httproute compiles Gateway API HTTPRoutes and GRPCRoutes
// attached to Services (GAMMA: a parentRef of kind Service) into the
// waypoint route input of internal/waypointxds (XDS.md §7.1, §7.2; a
// GRPCRoute is compiled as the HTTPRoute it means), with the status conditions each
// parent gets. It is pure: the caller passes the route and a lookup of the
// Services it names, and gets back what to send to waypoints and what to
// write in the route's status.
package httproute

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/waypointxds"
)

// ControllerName is what Ambit writes as controllerName in the parent
// statuses it owns (the waypoint GatewayClass's controller).
const ControllerName = "ambit.dev/waypoint-controller"

// ReasonWaypointRequired is the reason of Accepted=False for a parent
// Service whose traffic is not bound to a waypoint: nothing applies the
// route until one is.
const ReasonWaypointRequired = "WaypointRequired"

// Kind is the kind of a route.
type Kind string

// The route kinds compiled here.
const (
	KindHTTPRoute Kind = "" // the zero Kind
	KindGRPCRoute Kind = "GRPCRoute"
)

// String returns the kind's name ("HTTPRoute" for the zero Kind).
func (k Kind) String() string {
	if k == KindHTTPRoute {
		return "HTTPRoute"
	}
	return string(k)
}

// Ref names a route: an HTTPRoute, or a GRPCRoute (compiled as the
// HTTPRoute it means). The zero Kind is an HTTPRoute.
type Ref struct {
	Kind            Kind
	Namespace, Name string
}

// Key is the namespace/name cache key of the route.
func (r Ref) Key() string { return r.Namespace + "/" + r.Name }

func (r Ref) String() string {
	if r.Kind == KindGRPCRoute {
		return "grpcroute " + r.Key()
	}
	return r.Key()
}

// ServiceRef names a Service.
type ServiceRef struct{ Namespace, Name string }

func (r ServiceRef) String() string { return r.Namespace + "/" + r.Name }

// Service is what compiling needs to know of a Service the route names.
type Service struct {
	// Hostname is its DNS name (<name>.<namespace>.svc.<domain>).
	Hostname string
	// Ports are its TCP ports with their protocols.
	Ports []Port
	// Waypoint is the Gateway "<namespace>/<name>" its traffic is bound
	// to; empty when none (only read for parents).
	Waypoint string
}

// Port is one service port.
type Port struct {
	Port     uint16
	Protocol waypointxds.Protocol
}

func (s Service) port(p uint16) (Port, bool) {
	i := slices.IndexFunc(s.Ports, func(q Port) bool { return q.Port == p })
	if i < 0 {
		return Port{}, false
	}
	return s.Ports[i], true
}

// Lookup returns a Service by reference; ok is false when it does not
// exist.
type Lookup func(ServiceRef) (Service, bool)

// FaultRef names an HTTPFault (networking.ambit.dev).
type FaultRef struct{ Namespace, Name string }

func (r FaultRef) String() string { return r.Namespace + "/" + r.Name }

// FaultLookup returns the fault of an HTTPFault; ok is false when it does
// not exist. A nil FaultLookup finds none.
type FaultLookup func(FaultRef) (f waypointxds.Fault, ok bool)

// The ExtensionRef filter kinds Ambit resolves.
const (
	ExtensionGroup = "networking.ambit.dev"
	KindHTTPFault  = "HTTPFault"
)

// Reasons of ResolvedRefs=False for an ExtensionRef filter that cannot
// be applied: its rule answers 500 (Gateway API: such a filter is never
// skipped).
const (
	ReasonFilterNotFound = "FilterNotFound"
	ReasonInvalidFilter  = "InvalidFilter"
)

// Compiled is one HTTPRoute, compiled.
type Compiled struct {
	Ref        Ref
	Generation int64
	Created    time.Time
	// Parents are its parentRefs of kind Service, in spec order.
	Parents []Parent
}

// Parent is one Service parentRef of a route.
type Parent struct {
	// ParentRef is the reference as written (status.parents[].parentRef).
	ParentRef gwapiv1.ParentReference
	// Service is the parent Service; Port the parentRef port (0: every
	// HTTP port).
	Service ServiceRef
	Port    uint16
	// Waypoint is the parent's waypoint (empty: none).
	Waypoint string
	// Rules are the routes of this parent, one per (rule, match), in spec
	// order; empty unless Accepted is True. Ports lists the service ports
	// they attach to.
	Rules []Rule
	Ports []uint16
	// Backends are the Services the rules send to.
	Backends []waypointxds.Backend
	// BackendServices are the Services the rules name (existing or not),
	// so that a change of one re-compiles the route.
	BackendServices []ServiceRef
	// Faults are the HTTPFaults the rules name (existing or not), so that
	// a change of one re-compiles the route.
	Faults []FaultRef
	// Accepted and ResolvedRefs are the parent's conditions.
	Accepted, ResolvedRefs metav1.Condition
}

// Rule is one Envoy route with what orders it.
type Rule struct {
	waypointxds.Route
	key sortKey
}

type sortKey struct {
	pathKind  int // 0 exact, 1 regex, 2 prefix
	pathLen   int
	method    bool
	headers   int
	queries   int
	created   time.Time
	route     string
	rule, idx int
}

// Order sorts the rules of every route attached to one service port by
// Gateway API precedence (XDS.md §7.1).
func Order(rules []Rule) {
	slices.SortStableFunc(rules, func(a, b Rule) int {
		x, y := a.key, b.key
		if c := cmp.Compare(x.pathKind, y.pathKind); c != 0 {
			return c
		}
		if c := cmp.Compare(y.pathLen, x.pathLen); c != 0 {
			return c
		}
		if x.method != y.method {
			if x.method {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(y.headers, x.headers); c != 0 {
			return c
		}
		if c := cmp.Compare(y.queries, x.queries); c != 0 {
			return c
		}
		if c := x.created.Compare(y.created); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(x.route, y.route), cmp.Compare(x.rule, y.rule), cmp.Compare(x.idx, y.idx))
	})
}

// Routes returns the waypoint routes of rules, in their order.
func Routes(rules []Rule) []waypointxds.Route {
	if len(rules) == 0 {
		return nil
	}
	out := make([]waypointxds.Route, len(rules))
	for i, r := range rules {
		out[i] = r.Route
	}
	return out
}

// Compile compiles rt, resolving Services with lookup and HTTPFault
// ExtensionRef filters with faults. Parent refs that are not Services
// (Gateways) are left out: they are not Ambit's to program or report on.
func Compile(rt *gwapiv1.HTTPRoute, lookup Lookup, faults FaultLookup) Compiled {
	c := Compiled{
		Ref:        Ref{Namespace: rt.Namespace, Name: rt.Name},
		Generation: rt.Generation,
		Created:    rt.CreationTimestamp.Time,
	}
	for _, pr := range rt.Spec.ParentRefs {
		if !isService(pr.Group, pr.Kind) {
			continue
		}
		c.Parents = append(c.Parents, compileParent(rt, pr, lookup, faults))
	}
	return c
}

func isService(g *gwapiv1.Group, k *gwapiv1.Kind) bool {
	return g != nil && (*g == "" || *g == "core") && k != nil && *k == "Service"
}

func condition(t gwapiv1.RouteConditionType, ok bool, reason gwapiv1.RouteConditionReason, gen int64, msg string, args ...any) metav1.Condition {
	s := metav1.ConditionTrue
	if !ok {
		s = metav1.ConditionFalse
	}
	return metav1.Condition{Type: string(t), Status: s, Reason: string(reason), ObservedGeneration: gen, Message: fmt.Sprintf(msg, args...)}
}

func compileParent(rt *gwapiv1.HTTPRoute, pr gwapiv1.ParentReference, lookup Lookup, faults FaultLookup) Parent {
	gen := rt.Generation
	p := Parent{ParentRef: pr, Service: ServiceRef{cmp.Or(nsOf(pr.Namespace), rt.Namespace), string(pr.Name)}}
	if pr.Port != nil {
		p.Port = uint16(*pr.Port)
	}
	resolved := condition(gwapiv1.RouteConditionResolvedRefs, true, gwapiv1.RouteReasonResolvedRefs, gen, "all backend references resolve")
	reject := func(reason gwapiv1.RouteConditionReason, msg string, args ...any) Parent {
		p.Accepted = condition(gwapiv1.RouteConditionAccepted, false, reason, gen, msg, args...)
		if p.ResolvedRefs.Type == "" {
			p.ResolvedRefs = resolved
		}
		p.Rules, p.Ports, p.Backends = nil, nil, nil
		return p
	}
	if p.Service.Namespace != rt.Namespace {
		return reject(gwapiv1.RouteReasonUnsupportedValue, "parentRef Service %s is in another namespace: consumer routes are not supported yet; create the HTTPRoute in namespace %s", p.Service, p.Service.Namespace)
	}
	if pr.SectionName != nil {
		return reject(gwapiv1.RouteReasonUnsupportedValue, "parentRef sectionName is not supported for a Service parent; use port")
	}
	svc, ok := lookup(p.Service)
	if !ok {
		return reject(gwapiv1.RouteReasonNoMatchingParent, "Service %s does not exist", p.Service)
	}
	p.Waypoint = svc.Waypoint
	for _, sp := range svc.Ports {
		if p.Port != 0 && sp.Port != p.Port {
			continue
		}
		if sp.Protocol.IsHTTP() {
			p.Ports = append(p.Ports, sp.Port)
		}
	}
	if len(p.Ports) == 0 {
		if p.Port != 0 {
			if _, exists := svc.port(p.Port); !exists {
				return reject(gwapiv1.RouteReasonNoMatchingParent, "Service %s has no port %d", p.Service, p.Port)
			}
			return reject(gwapiv1.RouteReasonUnsupportedProtocol, "port %d of Service %s is not an HTTP port: name it http or http-*, or set appProtocol: http (or http2, grpc)", p.Port, p.Service)
		}
		return reject(gwapiv1.RouteReasonUnsupportedProtocol, "Service %s has no HTTP port: name a port http or http-*, or set appProtocol: http (or http2, grpc)", p.Service)
	}

	var invalid, badFilters []string
	filterReason := ReasonInvalidFilter
	seen := map[ServiceRef]bool{}
	for ri, rule := range rt.Spec.Rules {
		fault, problem, missing, err := ruleFault(rt, ri, rule, faults, &p)
		if err != nil {
			return reject(gwapiv1.RouteReasonUnsupportedValue, "rule %d: %v", ri, err)
		}
		rules, bad, err := compileRule(rt, ri, rule, lookup, &p, seen)
		if err != nil {
			return reject(gwapiv1.RouteReasonUnsupportedValue, "rule %d: %v", ri, err)
		}
		if problem != "" {
			// Never skipped: the rule's requests get 500.
			badFilters = append(badFilters, problem)
			if missing {
				filterReason = ReasonFilterNotFound
			}
			for i := range rules {
				r := &rules[i].Route
				r.Backends, r.Redirect, r.Rewrite, r.Retry, r.Timeout, r.DirectStatus = nil, nil, nil, nil, 0, 500
			}
		} else {
			for i := range rules {
				rules[i].Route.Fault = fault
			}
		}
		invalid = append(invalid, bad...)
		p.Rules = append(p.Rules, rules...)
	}
	if len(badFilters) > 0 {
		p.ResolvedRefs = condition(gwapiv1.RouteConditionResolvedRefs, false, gwapiv1.RouteConditionReason(filterReason), gen,
			"%s; requests matching those rules get 500", strings.Join(append(badFilters, invalid...), "; "))
	} else if len(invalid) > 0 {
		reason := gwapiv1.RouteReasonBackendNotFound
		for _, s := range invalid {
			switch {
			case strings.Contains(s, "another namespace"):
				reason = gwapiv1.RouteReasonRefNotPermitted
			case strings.Contains(s, "kind"):
				reason = gwapiv1.RouteReasonInvalidKind
			}
		}
		p.ResolvedRefs = condition(gwapiv1.RouteConditionResolvedRefs, false, reason, gen, "%s; requests for them get 500", strings.Join(invalid, "; "))
	} else {
		p.ResolvedRefs = resolved
	}
	if p.Waypoint == "" {
		return reject(ReasonWaypointRequired, "Service %s is not bound to a waypoint, so nothing applies this route: label it (or its namespace) ambit.dev/use-waypoint=<gateway>", p.Service)
	}
	p.Accepted = condition(gwapiv1.RouteConditionAccepted, true, gwapiv1.RouteReasonAccepted, gen, "applied by waypoint %s to port(s) %s of Service %s", p.Waypoint, joinPorts(p.Ports), p.Service)
	return p
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

func nsOf(n *gwapiv1.Namespace) string {
	if n == nil {
		return ""
	}
	return string(*n)
}

// ruleFault resolves the HTTPFault ExtensionRef filter of a rule (at
// most one). problem says why a named HTTPFault cannot be applied
// (missing: it does not exist); err is a filter the waypoint cannot apply
// at all (another extension kind, two HTTPFaults).
func ruleFault(rt *gwapiv1.HTTPRoute, ri int, rule gwapiv1.HTTPRouteRule, faults FaultLookup, p *Parent) (fault *waypointxds.Fault, problem string, missing bool, err error) {
	found := false
	for fi, f := range rule.Filters {
		if f.Type != gwapiv1.HTTPRouteFilterExtensionRef {
			continue
		}
		ext := f.ExtensionRef
		if ext == nil {
			return nil, "", false, fmt.Errorf("filter %d: extensionRef is missing", fi)
		}
		if ext.Group != ExtensionGroup || ext.Kind != KindHTTPFault {
			return nil, "", false, fmt.Errorf("filter %d: ExtensionRef %s.%s is not supported (only %s.%s)", fi, ext.Kind, ext.Group, KindHTTPFault, ExtensionGroup)
		}
		if found {
			return nil, "", false, fmt.Errorf("filter %d: a rule may have one %s filter", fi, KindHTTPFault)
		}
		found = true
		ref := FaultRef{Namespace: rt.Namespace, Name: string(ext.Name)}
		if !slices.Contains(p.Faults, ref) {
			p.Faults = append(p.Faults, ref)
		}
		var got waypointxds.Fault
		ok := false
		if faults != nil {
			got, ok = faults(ref)
		}
		if !ok {
			problem, missing = fmt.Sprintf("rule %d filter %d: %s %s does not exist", ri, fi, KindHTTPFault, ref), true
			continue
		}
		if err := waypointxds.CheckFault(&got); err != nil {
			problem = fmt.Sprintf("rule %d filter %d: %s %s: %v", ri, fi, KindHTTPFault, ref, err)
			continue
		}
		fault = &got
	}
	return fault, problem, missing, nil
}

// compileRule compiles one rule into one Rule per match. bad lists the
// backendRefs that do not resolve (the rule still applies, without them);
// err is a feature the waypoint cannot apply (the route is rejected).
func compileRule(rt *gwapiv1.HTTPRoute, ri int, rule gwapiv1.HTTPRouteRule, lookup Lookup, p *Parent, seen map[ServiceRef]bool) (out []Rule, bad []string, err error) {
	if rule.SessionPersistence != nil {
		return nil, nil, fmt.Errorf("sessionPersistence is not supported yet")
	}
	var base waypointxds.Route
	for fi, f := range rule.Filters {
		if f.Type == gwapiv1.HTTPRouteFilterExtensionRef {
			continue // ruleFault
		}
		if err := applyFilter(&base, f); err != nil {
			return nil, nil, fmt.Errorf("filter %d: %w", fi, err)
		}
	}
	if t := rule.Timeouts; t != nil {
		if base.Timeout, err = duration(t.Request, "timeouts.request"); err != nil {
			return nil, nil, err
		}
		per, err := duration(t.BackendRequest, "timeouts.backendRequest")
		if err != nil {
			return nil, nil, err
		}
		if per > 0 {
			// A per-try timeout needs a retry policy to live in: the
			// default one's attempts and 503, with the timeout (XDS.md §7.1).
			base.Retry = &waypointxds.Retry{Attempts: 2, Codes: []int{503}, PerTryTimeout: per}
		}
	}
	if r := rule.Retry; r != nil {
		keep := time.Duration(0)
		if base.Retry != nil {
			keep = base.Retry.PerTryTimeout
		}
		base.Retry = &waypointxds.Retry{Attempts: 2, PerTryTimeout: keep}
		if r.Attempts != nil {
			if *r.Attempts < 0 {
				return nil, nil, fmt.Errorf("retry.attempts %d is negative", *r.Attempts)
			}
			base.Retry.Attempts = *r.Attempts
		}
		for _, c := range r.Codes {
			base.Retry.Codes = append(base.Retry.Codes, int(c))
		}
		if base.Retry.Backoff, err = duration(r.Backoff, "retry.backoff"); err != nil {
			return nil, nil, err
		}
	}
	if base.Redirect == nil {
		for bi, br := range rule.BackendRefs {
			if len(br.Filters) > 0 {
				return nil, nil, fmt.Errorf("backendRef %d: per-backend filters are not supported yet", bi)
			}
			b, ref, problem := backend(rt.Namespace, br.BackendRef, lookup)
			if ref.Name != "" && !seen[ref] {
				seen[ref] = true
				p.BackendServices = append(p.BackendServices, ref)
			}
			if problem != "" {
				bad = append(bad, fmt.Sprintf("rule %d backendRef %d: %s", ri, bi, problem))
				continue
			}
			if b.Weight == 0 {
				continue
			}
			base.Backends = append(base.Backends, b)
			if !slices.Contains(p.Backends, waypointxds.Backend{Hostname: b.Hostname, Port: b.Port}) {
				p.Backends = append(p.Backends, waypointxds.Backend{Hostname: b.Hostname, Port: b.Port})
			}
		}
		if len(base.Backends) == 0 {
			// No backendRefs (or none usable): Gateway API answers 500.
			base.DirectStatus = 500
		}
	}
	matches := rule.Matches
	if len(matches) == 0 {
		matches = []gwapiv1.HTTPRouteMatch{{}}
	}
	for mi, m := range matches {
		r := base
		r.Name = fmt.Sprintf("%s.%s.%d.%d", rt.Namespace, rt.Name, ri, mi)
		key := sortKey{created: rt.CreationTimestamp.Time, route: rt.Namespace + "/" + rt.Name, rule: ri, idx: mi}
		if r.Match, key, err = compileMatch(m, key); err != nil {
			return nil, nil, fmt.Errorf("match %d: %w", mi, err)
		}
		if err := checkPrefixModifiers(r); err != nil {
			return nil, nil, fmt.Errorf("match %d: %w", mi, err)
		}
		out = append(out, Rule{Route: r, key: key})
	}
	return out, bad, nil
}

// checkPrefixModifiers rejects ReplacePrefixMatch without a PathPrefix
// match (Gateway API requires one).
func checkPrefixModifiers(r waypointxds.Route) error {
	usesPrefix := (r.Redirect != nil && r.Redirect.Path != nil && r.Redirect.Path.PrefixMatch != nil) ||
		(r.Rewrite != nil && r.Rewrite.Path != nil && r.Rewrite.Path.PrefixMatch != nil)
	if usesPrefix && r.Match.PathType != waypointxds.PathPrefix && r.Match.PathType != "" {
		return fmt.Errorf("ReplacePrefixMatch needs a PathPrefix path match, not %s", r.Match.PathType)
	}
	return nil
}

func duration(d *gwapiv1.Duration, field string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s %q is not a duration such as 500ms or 10s", field, *d)
	}
	return v, nil
}

// backend resolves a backendRef of a route in namespace ns: a port of a
// Service of the same namespace. problem says why it does not resolve.
func backend(ns string, br gwapiv1.BackendRef, lookup Lookup) (b waypointxds.Backend, ref ServiceRef, problem string) {
	ref = ServiceRef{cmp.Or(nsOf(br.Namespace), ns), string(br.Name)}
	if g := br.Group; g != nil && *g != "" && *g != "core" {
		return b, ServiceRef{}, fmt.Sprintf("kind %s.%s is not supported (only Service)", kindOf(br.Kind), *g)
	}
	if k := br.Kind; k != nil && *k != "Service" {
		return b, ServiceRef{}, fmt.Sprintf("kind %s is not supported (only Service)", *k)
	}
	if ref.Namespace != ns {
		return b, ref, fmt.Sprintf("Service %s is in another namespace (ReferenceGrant is not supported yet)", ref)
	}
	if br.Port == nil {
		return b, ref, fmt.Sprintf("Service %s: port is required", ref)
	}
	svc, ok := lookup(ref)
	if !ok {
		return b, ref, fmt.Sprintf("Service %s does not exist", ref)
	}
	port := uint16(*br.Port)
	if _, ok := svc.port(port); !ok {
		return b, ref, fmt.Sprintf("Service %s has no port %d", ref, port)
	}
	w := uint32(1)
	if br.Weight != nil {
		if *br.Weight < 0 {
			return b, ref, fmt.Sprintf("Service %s: weight %d is negative", ref, *br.Weight)
		}
		w = uint32(*br.Weight)
	}
	return waypointxds.Backend{Hostname: svc.Hostname, Port: port, Weight: w}, ref, ""
}

func kindOf(k *gwapiv1.Kind) string {
	if k == nil {
		return "Service"
	}
	return string(*k)
}

func applyFilter(r *waypointxds.Route, f gwapiv1.HTTPRouteFilter) error {
	switch f.Type {
	case gwapiv1.HTTPRouteFilterRequestHeaderModifier:
		if f.RequestHeaderModifier == nil {
			return fmt.Errorf("requestHeaderModifier is missing")
		}
		m, err := headerModifier(*f.RequestHeaderModifier)
		if err != nil {
			return err
		}
		r.RequestHeaders = m
	case gwapiv1.HTTPRouteFilterResponseHeaderModifier:
		if f.ResponseHeaderModifier == nil {
			return fmt.Errorf("responseHeaderModifier is missing")
		}
		m, err := headerModifier(*f.ResponseHeaderModifier)
		if err != nil {
			return err
		}
		r.ResponseHeaders = m
	case gwapiv1.HTTPRouteFilterRequestRedirect:
		rr := f.RequestRedirect
		if rr == nil {
			return fmt.Errorf("requestRedirect is missing")
		}
		if r.Rewrite != nil {
			return fmt.Errorf("RequestRedirect and URLRewrite cannot be combined")
		}
		red := &waypointxds.Redirect{StatusCode: 302}
		if rr.Scheme != nil {
			red.Scheme = *rr.Scheme
		}
		if rr.Hostname != nil {
			red.Hostname = string(*rr.Hostname)
		}
		if rr.Port != nil {
			red.Port = uint16(*rr.Port)
		}
		if rr.StatusCode != nil {
			red.StatusCode = *rr.StatusCode
		}
		switch red.StatusCode {
		case 301, 302, 303, 307, 308:
		default:
			return fmt.Errorf("redirect statusCode %d is not one of 301, 302, 303, 307, 308", red.StatusCode)
		}
		pm, err := pathModifier(rr.Path)
		if err != nil {
			return err
		}
		red.Path = pm
		r.Redirect = red
	case gwapiv1.HTTPRouteFilterURLRewrite:
		u := f.URLRewrite
		if u == nil {
			return fmt.Errorf("urlRewrite is missing")
		}
		if r.Redirect != nil {
			return fmt.Errorf("RequestRedirect and URLRewrite cannot be combined")
		}
		rw := &waypointxds.Rewrite{}
		if u.Hostname != nil {
			rw.Hostname = string(*u.Hostname)
		}
		pm, err := pathModifier(u.Path)
		if err != nil {
			return err
		}
		rw.Path = pm
		r.Rewrite = rw
	default:
		return fmt.Errorf("filter type %s is not supported yet (supported: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, ExtensionRef to %s.%s)", f.Type, KindHTTPFault, ExtensionGroup)
	}
	return nil
}

// headerModifier converts a header filter. Like Envoy, it refuses to
// modify host and pseudo-headers (use URLRewrite for the host).
func headerModifier(h gwapiv1.HTTPHeaderFilter) (waypointxds.HeaderModifier, error) {
	var m waypointxds.HeaderModifier
	names := []string{}
	for _, s := range h.Set {
		names = append(names, string(s.Name))
	}
	for _, a := range h.Add {
		names = append(names, string(a.Name))
	}
	names = append(names, h.Remove...)
	for _, n := range names {
		if l := strings.ToLower(n); l == "host" || strings.HasPrefix(l, ":") {
			return m, fmt.Errorf("header %q cannot be modified (use URLRewrite hostname for the host)", n)
		}
	}
	for _, s := range h.Set {
		m.Set = append(m.Set, waypointxds.Header{Name: strings.ToLower(string(s.Name)), Value: s.Value})
	}
	for _, a := range h.Add {
		m.Add = append(m.Add, waypointxds.Header{Name: strings.ToLower(string(a.Name)), Value: a.Value})
	}
	for _, n := range h.Remove {
		m.Remove = append(m.Remove, strings.ToLower(n))
	}
	return m, nil
}

func pathModifier(p *gwapiv1.HTTPPathModifier) (*waypointxds.PathModifier, error) {
	if p == nil {
		return nil, nil
	}
	switch p.Type {
	case gwapiv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			return nil, fmt.Errorf("path type ReplaceFullPath needs replaceFullPath")
		}
		v := *p.ReplaceFullPath
		return &waypointxds.PathModifier{FullPath: &v}, nil
	case gwapiv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, fmt.Errorf("path type ReplacePrefixMatch needs replacePrefixMatch")
		}
		v := *p.ReplacePrefixMatch
		return &waypointxds.PathModifier{PrefixMatch: &v}, nil
	}
	return nil, fmt.Errorf("path modifier type %q is not ReplaceFullPath or ReplacePrefixMatch", p.Type)
}

func compileMatch(m gwapiv1.HTTPRouteMatch, key sortKey) (waypointxds.RouteMatch, sortKey, error) {
	out := waypointxds.RouteMatch{PathType: waypointxds.PathPrefix, Path: "/"}
	if p := m.Path; p != nil {
		if p.Type != nil {
			out.PathType = waypointxds.PathMatchType(*p.Type)
		}
		if p.Value != nil {
			out.Path = *p.Value
		}
	}
	switch out.PathType {
	case waypointxds.PathExact:
		key.pathKind = 0
	case waypointxds.PathRegex:
		key.pathKind = 1
		if _, err := regexp.Compile(out.Path); err != nil {
			return out, key, fmt.Errorf("path regular expression %q: %w", out.Path, err)
		}
	case waypointxds.PathPrefix:
		key.pathKind = 2
		if out.Path != "/" {
			out.Path = strings.TrimSuffix(out.Path, "/")
		}
	default:
		return out, key, fmt.Errorf("path type %q is not Exact, PathPrefix or RegularExpression", out.PathType)
	}
	if !strings.HasPrefix(out.Path, "/") && out.PathType != waypointxds.PathRegex {
		return out, key, fmt.Errorf("path %q must start with /", out.Path)
	}
	key.pathLen = len(out.Path)
	if m.Method != nil {
		out.Method = string(*m.Method)
		key.method = true
	}
	for _, h := range m.Headers {
		v, err := valueMatch(strings.ToLower(string(h.Name)), h.Value, (*string)(h.Type), "header")
		if err != nil {
			return out, key, err
		}
		out.Headers = append(out.Headers, v)
	}
	for _, q := range m.QueryParams {
		v, err := valueMatch(string(q.Name), q.Value, (*string)(q.Type), "query parameter")
		if err != nil {
			return out, key, err
		}
		out.QueryParams = append(out.QueryParams, v)
	}
	key.headers, key.queries = len(out.Headers), len(out.QueryParams)
	return out, key, nil
}

func valueMatch(name, value string, typ *string, what string) (waypointxds.ValueMatch, error) {
	v := waypointxds.ValueMatch{Name: name, Value: value}
	t := "Exact"
	if typ != nil {
		t = *typ
	}
	switch t {
	case "Exact":
	case "RegularExpression":
		if _, err := regexp.Compile(value); err != nil {
			return v, fmt.Errorf("%s %s regular expression %q: %w", what, name, value, err)
		}
		v.Regex = true
	default:
		return v, fmt.Errorf("%s %s match type %q is not Exact or RegularExpression", what, name, t)
	}
	return v, nil
}
