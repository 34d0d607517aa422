package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonConflict is the reason of the Accepted condition (False) of a
// PeerAuthentication without selector that is not enforced because an older
// one sets the mode for the same namespace (or, in the root namespace, for
// the mesh).
const ReasonConflict = "Conflict"

// MessageAccepted is the message of the Accepted condition of a valid
// object.
const MessageAccepted = "compiled for ztunnel (L4)"

// maxProblems is how many problems a condition message lists before it only
// counts the rest (metav1.Condition messages are limited to 32768 bytes).
const maxProblems = 16

// Kind of source object.
type Kind uint8

const (
	// KindAuthorizationPolicy is a security.ambit.dev AuthorizationPolicy.
	KindAuthorizationPolicy Kind = iota
	// KindPeerAuthentication is a security.ambit.dev PeerAuthentication.
	KindPeerAuthentication
)

// String returns the Kubernetes kind name.
func (k Kind) String() string {
	switch k {
	case KindAuthorizationPolicy:
		return "AuthorizationPolicy"
	case KindPeerAuthentication:
		return "PeerAuthentication"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Ref names a source object.
type Ref struct {
	Kind            Kind
	Namespace, Name string
}

// String returns "<Kind> <namespace>/<name>".
func (r Ref) String() string { return r.Kind.String() + " " + r.Namespace + "/" + r.Name }

// Compiled is one policy object compiled for ztunnels.
type Compiled struct {
	// Ref names the source object.
	Ref Ref
	// ResourceName is the xDS resource name: "<ns>/<name>" for an
	// AuthorizationPolicy, "<ns>/peerauthentication:<name>" for a
	// PeerAuthentication.
	ResourceName string
	// Scope is GLOBAL, NAMESPACE or WORKLOAD_SELECTOR (see the package
	// comment).
	Scope workloadv1alpha1.Scope
	// Selector is the matchLabels of a WORKLOAD_SELECTOR policy (an empty
	// map selects every pod the policy can see); nil for other scopes.
	Selector map[string]string
	// AllNamespaces is true for a WORKLOAD_SELECTOR policy in the root
	// namespace: it selects matching pods of every namespace.
	AllNamespaces bool
	// Authorization is what to send; nil when nothing is sent (an invalid
	// AUDIT policy).
	Authorization *workloadv1alpha1.Authorization
	// Created orders PeerAuthentications for conflict resolution
	// (metadata.creationTimestamp).
	Created time.Time
	// Condition is the Accepted condition of the object alone (Index.Condition
	// adds conflicts). LastTransitionTime is left zero for the status writer.
	Condition metav1.Condition
}

// Selects reports whether a WORKLOAD_SELECTOR policy applies to a pod with
// these labels in this namespace. It is false for other scopes: they apply
// by scope alone and are not listed on workloads.
func (c *Compiled) Selects(namespace string, podLabels map[string]string) bool {
	if c.Scope != workloadv1alpha1.Scope_WORKLOAD_SELECTOR {
		return false
	}
	if !c.AllNamespaces && namespace != c.Ref.Namespace {
		return false
	}
	for k, v := range c.Selector {
		if got, ok := podLabels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// scope derives scope, selector and AllNamespaces from an object's selector
// and namespace.
func scope(sel *securityv1alpha1.WorkloadSelector, namespace, rootNamespace string) (workloadv1alpha1.Scope, map[string]string, bool) {
	switch {
	case sel != nil:
		labels := maps.Clone(sel.MatchLabels)
		if labels == nil {
			labels = map[string]string{}
		}
		return workloadv1alpha1.Scope_WORKLOAD_SELECTOR, labels, namespace == rootNamespace
	case namespace == rootNamespace:
		return workloadv1alpha1.Scope_GLOBAL, nil, false
	default:
		return workloadv1alpha1.Scope_NAMESPACE, nil, false
	}
}

// condition builds an Accepted condition.
func condition(generation int64, reason, message string) metav1.Condition {
	status := metav1.ConditionFalse
	if reason == securityv1alpha1.ReasonAccepted {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{
		Type:               securityv1alpha1.ConditionAccepted,
		Status:             status,
		ObservedGeneration: generation,
		Reason:             reason,
		Message:            message,
	}
}

// joinProblems lists problems for a condition message.
func joinProblems(problems []string) string {
	if len(problems) > maxProblems {
		rest := len(problems) - maxProblems
		problems = append(slices.Clip(problems[:maxProblems]), fmt.Sprintf("and %d more", rest))
	}
	return strings.Join(problems, "; ")
}

// denyAll is the fail-closed Authorization for a policy that cannot be
// compiled as written: it denies every connection in its scope.
func denyAll(name, namespace string, sc workloadv1alpha1.Scope) *workloadv1alpha1.Authorization {
	return &workloadv1alpha1.Authorization{
		Name:      name,
		Namespace: namespace,
		Scope:     sc,
		Action:    workloadv1alpha1.Action_DENY,
		Rules:     []*workloadv1alpha1.Rule{{}},
	}
}

// CompileAuthorizationPolicy compiles p (see the package comment).
// rootNamespace is the mesh's root namespace.
func CompileAuthorizationPolicy(p *securityv1alpha1.AuthorizationPolicy, rootNamespace string) Compiled {
	c := Compiled{
		Ref:          Ref{Kind: KindAuthorizationPolicy, Namespace: p.Namespace, Name: p.Name},
		ResourceName: workloadv1alpha1.AuthorizationResourceName(p.Namespace, p.Name),
		Created:      p.CreationTimestamp.Time,
	}
	c.Scope, c.Selector, c.AllNamespaces = scope(p.Spec.Selector, p.Namespace, rootNamespace)
	auth := &workloadv1alpha1.Authorization{Name: p.Name, Namespace: p.Namespace, Scope: c.Scope}

	var problems []string
	audit := false
	switch p.Spec.Action {
	case "", securityv1alpha1.ActionAllow:
		auth.Action = workloadv1alpha1.Action_ALLOW
	case securityv1alpha1.ActionDeny:
		auth.Action = workloadv1alpha1.Action_DENY
	case securityv1alpha1.ActionAudit:
		auth.Action = workloadv1alpha1.Action_AUDIT
		audit = true
	default:
		problems = append(problems, fmt.Sprintf("action: %q is not one of ALLOW, DENY, AUDIT", p.Spec.Action))
	}

	var (
		l7      []string // operations that use HTTP fields
		l7Rules []string // rules dropped from an AUDIT policy
	)
	for i := range p.Spec.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		rule, probs, http := compileRule(path, &p.Spec.Rules[i])
		problems = append(problems, probs...)
		if len(http) > 0 {
			l7 = append(l7, http...)
			l7Rules = append(l7Rules, path)
			continue
		}
		auth.Rules = append(auth.Rules, rule)
	}

	const needWaypoint = ": HTTP fields need a waypoint, which the selected workloads do not have"
	for i := range l7 {
		l7[i] += needWaypoint
	}
	gen := p.Generation
	switch {
	case len(problems) > 0 && audit:
		c.Condition = condition(gen, securityv1alpha1.ReasonInvalid,
			joinProblems(append(problems, l7...))+"; nothing is audited until this is fixed")
	case len(problems) > 0:
		c.Authorization = denyAll(p.Name, p.Namespace, c.Scope)
		c.Condition = condition(gen, securityv1alpha1.ReasonInvalid,
			joinProblems(append(problems, l7...))+"; ztunnel denies every connection to the selected workloads until this is fixed")
	case len(l7) > 0 && audit:
		c.Authorization = auth
		c.Condition = condition(gen, securityv1alpha1.ReasonUnsupportedL7,
			joinProblems(l7)+"; these rules are not audited (the others are): "+strings.Join(l7Rules, ", "))
	case len(l7) > 0:
		c.Authorization = denyAll(p.Name, p.Namespace, c.Scope)
		c.Condition = condition(gen, securityv1alpha1.ReasonUnsupportedL7,
			joinProblems(l7)+"; ztunnel denies every connection to them until the fields are removed")
	default:
		c.Authorization = auth
		c.Condition = condition(gen, securityv1alpha1.ReasonAccepted, MessageAccepted)
	}
	return c
}

// compileRule compiles one spec rule. It returns the problems found and, for
// each operation that uses HTTP fields, a description of it; the rule is
// only usable when both are empty.
func compileRule(path string, r *securityv1alpha1.Rule) (rule *workloadv1alpha1.Rule, problems, http []string) {
	rule = &workloadv1alpha1.Rule{}
	// `when` conditions are evaluated by waypoints only: ztunnel must not
	// drop them (that would widen an ALLOW).
	for j := range r.When {
		http = append(http, fmt.Sprintf("%s.when[%d] (key %s)", path, j, r.When[j].Key))
	}
	if len(r.From) > 0 {
		cl := &workloadv1alpha1.Clause{}
		for j := range r.From {
			m, probs := compileSource(fmt.Sprintf("%s.from[%d].source", path, j), &r.From[j].Source)
			problems = append(problems, probs...)
			cl.Matches = append(cl.Matches, m)
		}
		rule.Clauses = append(rule.Clauses, cl)
	}
	if len(r.To) > 0 {
		cl := &workloadv1alpha1.Clause{}
		for j := range r.To {
			op := &r.To[j].Operation
			opPath := fmt.Sprintf("%s.to[%d].operation", path, j)
			fields := op.HTTPFields()
			if len(fields) > 0 {
				http = append(http, opPath+" sets "+strings.Join(fields, ", "))
			}
			if len(fields) == 0 && len(op.Ports) == 0 && len(op.NotPorts) == 0 {
				problems = append(problems, opPath+": must set at least one field (ports, notPorts, or an HTTP field)")
			}
			m := &workloadv1alpha1.Match{}
			m.DestinationPorts, problems = compilePorts(opPath+".ports", op.Ports, problems)
			m.NotDestinationPorts, problems = compilePorts(opPath+".notPorts", op.NotPorts, problems)
			cl.Matches = append(cl.Matches, m)
		}
		rule.Clauses = append(rule.Clauses, cl)
	}
	return rule, problems, http
}

// compileSource compiles one source into a Match.
func compileSource(path string, s *securityv1alpha1.Source) (*workloadv1alpha1.Match, []string) {
	var problems []string
	if len(s.Principals)+len(s.NotPrincipals)+len(s.Namespaces)+len(s.NotNamespaces)+len(s.IPBlocks)+len(s.NotIPBlocks) == 0 {
		problems = append(problems, path+": must set at least one field (principals, notPrincipals, namespaces, notNamespaces, ipBlocks, notIpBlocks)")
	}
	m := &workloadv1alpha1.Match{}
	m.Principals, problems = compileStrings(path+".principals", s.Principals, true, problems)
	m.NotPrincipals, problems = compileStrings(path+".notPrincipals", s.NotPrincipals, true, problems)
	m.Namespaces, problems = compileStrings(path+".namespaces", s.Namespaces, false, problems)
	m.NotNamespaces, problems = compileStrings(path+".notNamespaces", s.NotNamespaces, false, problems)
	m.SourceIps, problems = compileIPBlocks(path+".ipBlocks", s.IPBlocks, problems)
	m.NotSourceIps, problems = compileIPBlocks(path+".notIpBlocks", s.NotIPBlocks, problems)
	return m, problems
}

// compileStrings compiles principals or namespaces, appending problems.
func compileStrings(path string, in []string, principal bool, problems []string) ([]*workloadv1alpha1.StringMatch, []string) {
	var out []*workloadv1alpha1.StringMatch
	for i, v := range in {
		sm, problem := stringMatch(v, principal)
		if problem != "" {
			problems = append(problems, fmt.Sprintf("%s[%d]: %s", path, i, problem))
			continue
		}
		out = append(out, sm)
	}
	return out, problems
}

// stringMatch compiles one principal or namespace pattern: "*" is presence,
// "*x" a suffix, "x*" a prefix, anything else exact. It returns a problem
// description instead when v is not a valid pattern.
func stringMatch(v string, principal bool) (*workloadv1alpha1.StringMatch, string) {
	if v == "" {
		return nil, "must not be empty"
	}
	if principal && strings.HasPrefix(v, "spiffe://") {
		return nil, fmt.Sprintf("%q: write principals without the spiffe:// scheme, e.g. %q", v, strings.TrimPrefix(v, "spiffe://"))
	}
	switch n := strings.Count(v, "*"); {
	case v == "*":
		return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Presence{Presence: &workloadv1alpha1.Presence{}}}, ""
	case n == 0:
		return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Exact{Exact: v}}, ""
	case n == 1 && v[0] == '*':
		return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Suffix{Suffix: v[1:]}}, ""
	case n == 1 && v[len(v)-1] == '*':
		return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Prefix{Prefix: v[:len(v)-1]}}, ""
	}
	return nil, fmt.Sprintf("%q: use at most one '*', only at the start or the end", v)
}

// compileIPBlocks compiles ipBlocks or notIpBlocks, appending problems.
func compileIPBlocks(path string, in []string, problems []string) ([]*workloadv1alpha1.IPPrefix, []string) {
	var out []*workloadv1alpha1.IPPrefix
	for i, v := range in {
		pfx, problem := ipBlock(v)
		if problem != "" {
			problems = append(problems, fmt.Sprintf("%s[%d]: %s", path, i, problem))
			continue
		}
		out = append(out, &workloadv1alpha1.IPPrefix{Address: pfx.Addr().AsSlice(), Length: uint32(pfx.Bits())})
	}
	return out, problems
}

// ipBlock parses an address or CIDR block into a masked prefix in the form
// ztunnel compares (IPv4-mapped blocks unmapped).
func ipBlock(v string) (netip.Prefix, string) {
	var pfx netip.Prefix
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("%q is not an IP address or CIDR block", v)
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("%q is not an IP address or CIDR block", v)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Sprintf("%q: an IP block cannot have a zone", v)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if a := pfx.Addr(); a.Is4In6() {
		if pfx.Bits() < 96 {
			return netip.Prefix{}, fmt.Sprintf("%q: an IPv4-mapped IPv6 block shorter than /96 is not an IPv4 block; write IPv4 blocks in IPv4 form", v)
		}
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), ""
}

// compilePorts compiles ports or notPorts, appending problems.
func compilePorts(path string, in []string, problems []string) ([]uint32, []string) {
	var out []uint32
	for i, v := range in {
		p, ok := parsePort(v)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s[%d]: %q is not a port number 1-65535", path, i, v))
			continue
		}
		out = append(out, p)
	}
	return out, problems
}

// parsePort parses a decimal port number 1..65535 (digits only, as the CRD
// requires).
func parsePort(v string) (uint32, bool) {
	if len(v) == 0 || len(v) > 5 {
		return 0, false
	}
	for _, r := range v {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return uint32(n), true
}

// CompilePeerAuthentication compiles p (see the package comment).
// rootNamespace is the mesh's root namespace.
func CompilePeerAuthentication(p *securityv1alpha1.PeerAuthentication, rootNamespace string) Compiled {
	name := workloadv1alpha1.PeerAuthenticationName(p.Name)
	c := Compiled{
		Ref:          Ref{Kind: KindPeerAuthentication, Namespace: p.Namespace, Name: p.Name},
		ResourceName: workloadv1alpha1.AuthorizationResourceName(p.Namespace, name),
		Created:      p.CreationTimestamp.Time,
	}
	c.Scope, c.Selector, c.AllNamespaces = scope(p.Spec.Selector, p.Namespace, rootNamespace)
	pa := &workloadv1alpha1.PeerAuthentication{}
	var problems []string
	if p.Spec.MTLS != nil {
		m, ok := mtlsMode(p.Spec.MTLS.Mode)
		if !ok {
			problems = append(problems, fmt.Sprintf("mtls.mode: %q is not one of %s; sent as UNSET (the workloads inherit the broader scope's mode)", p.Spec.MTLS.Mode, modeNames))
		}
		pa.Mode = m
	}
	if len(p.Spec.PortLevelMTLS) > 0 {
		if p.Spec.Selector == nil {
			problems = append(problems, "portLevelMtls needs a selector: port overrides apply to selected workloads only; the ports are ignored, mtls.mode still applies")
		} else {
			for _, port := range slices.Sorted(maps.Keys(p.Spec.PortLevelMTLS)) {
				if port < 1 || port > 65535 {
					problems = append(problems, fmt.Sprintf("portLevelMtls[%d]: port is not in 1-65535; the entry is ignored", port))
					continue
				}
				v := p.Spec.PortLevelMTLS[port]
				m, ok := mtlsMode(v.Mode)
				if !ok {
					problems = append(problems, fmt.Sprintf("portLevelMtls[%d].mode: %q is not one of %s; the entry is ignored (the port inherits mtls.mode)", port, v.Mode, modeNames))
					continue
				}
				if pa.PortLevelMtls == nil {
					pa.PortLevelMtls = map[uint32]workloadv1alpha1.MTLSMode{}
				}
				pa.PortLevelMtls[port] = m
			}
		}
	}
	c.Authorization = &workloadv1alpha1.Authorization{
		Name:               name,
		Namespace:          p.Namespace,
		Scope:              c.Scope,
		PeerAuthentication: pa,
	}
	if len(problems) > 0 {
		c.Condition = condition(p.Generation, securityv1alpha1.ReasonInvalid, joinProblems(problems))
	} else {
		c.Condition = condition(p.Generation, securityv1alpha1.ReasonAccepted, MessageAccepted)
	}
	return c
}

const modeNames = "UNSET, STRICT, PERMISSIVE, DISABLE"

// mtlsMode maps a CRD mode to the proto mode; ok is false (and the mode
// UNSET) for an unknown value.
func mtlsMode(m securityv1alpha1.MTLSMode) (mode workloadv1alpha1.MTLSMode, ok bool) {
	switch m {
	case "", securityv1alpha1.MTLSModeUnset:
		return workloadv1alpha1.MTLSMode_UNSET, true
	case securityv1alpha1.MTLSModeStrict:
		return workloadv1alpha1.MTLSMode_STRICT, true
	case securityv1alpha1.MTLSModePermissive:
		return workloadv1alpha1.MTLSMode_PERMISSIVE, true
	case securityv1alpha1.MTLSModeDisable:
		return workloadv1alpha1.MTLSMode_DISABLE, true
	}
	return workloadv1alpha1.MTLSMode_UNSET, false
}
