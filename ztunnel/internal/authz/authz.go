// Package authz decides L4 authorization and the inbound mTLS mode of a
// destination workload from the Authorization policies that apply to it,
// exactly as api/proto/ambit/workload/v1alpha1/authorization.proto
// defines them. Everything here is pure: no state, no I/O.
package authz

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"ambit.dev/ztunnel/internal/model"
)

// Conn is one inbound connection as policies see it.
type Conn struct {
	// Principal is the verified source identity without the scheme,
	// "<trust-domain>/ns/<namespace>/sa/<service-account>"; empty for
	// plaintext.
	Principal string
	// SourceIP is the connection's source address as this ztunnel sees it.
	SourceIP netip.Addr
	// DestinationPort is the target port on the workload.
	DestinationPort uint16
}

// Namespace is the <namespace> part of the principal; ok is false when the
// connection has no principal or the principal has no such part.
func (c Conn) Namespace() (string, bool) {
	return PrincipalNamespace(c.Principal)
}

// PrincipalNamespace returns the namespace of "<td>/ns/<ns>/sa/<sa>".
func PrincipalNamespace(principal string) (string, bool) {
	parts := strings.Split(principal, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" {
		return "", false
	}
	return parts[2], true
}

// Decision is the outcome of Evaluate.
type Decision struct {
	// Allow says whether the connection may proceed.
	Allow bool
	// Policy is the key ("<namespace>/<name>") of the policy that decided:
	// the matching DENY policy, or the matching ALLOW policy. It is empty
	// when no policy decided (no access policy applies, only AUDIT ones
	// do, or ALLOW policies apply and none matched).
	Policy string
	// Action is the action that decided: ActionDeny or ActionAllow (also
	// when the connection is denied because no applicable ALLOW policy
	// matched); empty when no ALLOW or DENY policy applies.
	Action model.Action
	// Audits are the keys of the AUDIT policies that matched, in the order
	// given; they never change Allow.
	Audits []string
}

// Applies reports whether p applies to the destination workload w:
// GLOBAL to every workload, NAMESPACE to the workloads of p's namespace,
// WORKLOAD_SELECTOR to the workloads that list p's key.
func Applies(p model.Policy, w model.Workload) bool {
	switch p.Scope {
	case model.ScopeGlobal:
		return true
	case model.ScopeNamespace:
		return p.Namespace == w.Namespace
	case model.ScopeWorkloadSelector:
		return slices.Contains(w.AuthorizationPolicies, p.Key())
	}
	return false
}

// Applicable returns the policies of all that apply to w, sorted by key.
func Applicable(all []model.Policy, w model.Workload) []model.Policy {
	var out []model.Policy
	for _, p := range all {
		if Applies(p, w) {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b model.Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

// Evaluate decides connection c against the policies that apply to its
// destination workload (peer-authentication policies among them are
// ignored): a matching DENY policy denies; AUDIT policies are only
// reported; with no ALLOW policy the connection is allowed, otherwise it
// must match one. When several policies could decide, the first in the
// given order is reported (pass them sorted by key for stable reports).
func Evaluate(policies []model.Policy, c Conn) Decision {
	var (
		d           Decision
		deny, allow = -1, -1
		anyAllow    bool
	)
	for i, p := range policies {
		if p.PeerAuth != nil {
			continue
		}
		switch p.Action {
		case model.ActionDeny:
			if deny < 0 && matches(p, c) {
				deny = i
			}
		case model.ActionAudit:
			if matches(p, c) {
				d.Audits = append(d.Audits, p.Key())
			}
		case model.ActionAllow:
			anyAllow = true
			if allow < 0 && matches(p, c) {
				allow = i
			}
		}
	}
	switch {
	case deny >= 0:
		d.Policy, d.Action = policies[deny].Key(), model.ActionDeny
	case !anyAllow:
		d.Allow = true
	case allow >= 0:
		d.Allow, d.Policy, d.Action = true, policies[allow].Key(), model.ActionAllow
	default:
		d.Action = model.ActionAllow
	}
	return d
}

// matches: any rule matches (no rules: nothing matches).
func matches(p model.Policy, c Conn) bool {
	ns, hasNS := c.Namespace()
	for _, r := range p.Rules {
		if ruleMatches(r, c, ns, hasNS) {
			return true
		}
	}
	return false
}

// ruleMatches: all clauses match (no clauses: everything matches).
func ruleMatches(r model.Rule, c Conn, ns string, hasNS bool) bool {
	for _, cl := range r.Clauses {
		if !slices.ContainsFunc(cl.Matches, func(m model.Match) bool { return matchMatches(m, c, ns, hasNS) }) {
			return false
		}
	}
	return true
}

// matchMatches: every non-empty field is satisfied.
func matchMatches(m model.Match, c Conn, ns string, hasNS bool) bool {
	principal := func(sm model.StringMatch) bool { return stringMatches(sm, c.Principal, c.Principal != "") }
	namespace := func(sm model.StringMatch) bool { return stringMatches(sm, ns, hasNS) }
	ip := c.SourceIP.Unmap()
	inPrefix := func(p netip.Prefix) bool { return ip.IsValid() && p.Contains(ip) }
	port := func(p uint16) bool { return p == c.DestinationPort }
	return positive(m.Principals, principal) && negative(m.NotPrincipals, principal) &&
		positive(m.Namespaces, namespace) && negative(m.NotNamespaces, namespace) &&
		positive(m.SourceIPs, inPrefix) && negative(m.NotSourceIPs, inPrefix) &&
		positive(m.DestinationPorts, port) && negative(m.NotDestinationPorts, port)
}

// positive is satisfied by an empty list or when any value matches.
func positive[T any](vs []T, f func(T) bool) bool {
	return len(vs) == 0 || slices.ContainsFunc(vs, f)
}

// negative is satisfied when no value matches (an empty list included).
func negative[T any](vs []T, f func(T) bool) bool {
	return !slices.ContainsFunc(vs, f)
}

// stringMatches compares attribute value (present says whether the
// connection has it at all: an absent attribute matches nothing).
func stringMatches(sm model.StringMatch, value string, present bool) bool {
	if !present {
		return false
	}
	switch sm.Kind {
	case model.MatchExact:
		return value == sm.Value
	case model.MatchPrefix:
		return strings.HasPrefix(value, sm.Value)
	case model.MatchSuffix:
		return strings.HasSuffix(value, sm.Value)
	case model.MatchPresence:
		return true
	}
	return false
}

// MTLSMode is the inbound mTLS mode for destination port of the workload
// the policies apply to (authorization.proto, "mTLS mode"): the first set
// value of the port-level override of a WORKLOAD_SELECTOR policy, the mode
// of a WORKLOAD_SELECTOR, then a NAMESPACE, then a GLOBAL
// peer-authentication policy (the smallest key wins within a step), else
// fallback (model.MTLSPermissive when fallback is unset). Access policies
// are ignored.
func MTLSMode(policies []model.Policy, port uint16, fallback model.MTLSMode) model.MTLSMode {
	sorted := slices.Clone(policies)
	slices.SortStableFunc(sorted, func(a, b model.Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	var steps [4]model.MTLSMode
	set := func(step int, m model.MTLSMode) {
		if m != model.MTLSUnset && steps[step] == model.MTLSUnset {
			steps[step] = m
		}
	}
	for _, p := range sorted {
		if p.PeerAuth == nil {
			continue
		}
		switch p.Scope {
		case model.ScopeWorkloadSelector:
			set(0, p.PeerAuth.PortLevel[port])
			set(1, p.PeerAuth.Mode)
		case model.ScopeNamespace:
			set(2, p.PeerAuth.Mode)
		case model.ScopeGlobal:
			set(3, p.PeerAuth.Mode)
		}
	}
	for _, m := range steps {
		if m != model.MTLSUnset {
			return m
		}
	}
	if fallback == model.MTLSUnset {
		return model.MTLSPermissive
	}
	return fallback
}

// PlaintextAllowed reports whether mode accepts plaintext inbound: every
// mode but STRICT (DISABLE is PERMISSIVE on inbound).
func PlaintextAllowed(mode model.MTLSMode) bool { return mode != model.MTLSStrict }
