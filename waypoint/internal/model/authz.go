package model

import (
	"net/http"
	"net/netip"
	"regexp"
	"strings"
)

// This file is L7 authorization (XDS.md §12): the RBAC filters of a chain
// and Authorize, which evaluates them as Envoy does.

// RBACAction is the action of an RBAC filter's rules.
type RBACAction uint8

// The RBAC actions the waypoint evaluates.
const (
	RBACAllow RBACAction = iota
	RBACDeny
	// RBACLog is AUDIT: matches are logged, the decision is unchanged.
	RBACLog
)

// RBAC is one envoy.filters.http.rbac or envoy.filters.network.rbac
// filter. Shadow filters (shadow_rules) only record what matched.
type RBAC struct {
	Action RBACAction
	Shadow bool
	// Policies in name order.
	Policies []RBACPolicy
}

// RBACPolicy is one named policy: any permission and any principal must
// match.
type RBACPolicy struct {
	Name        string
	Permissions []Permission
	Principals  []Principal
}

// Permission is an RBAC permission (the destination side). Exactly one
// of its fields is set.
type Permission struct {
	Any  bool
	And  []Permission
	Or   []Permission
	Not  *Permission
	Port uint16
	// Header matches a request header (":method", ":authority", ...).
	Header *RBACHeader
	// URLPath matches the path without query.
	URLPath *ValueMatch
}

// Principal is an RBAC principal (the source side). Exactly one of its
// fields is set.
type Principal struct {
	Any bool
	And []Principal
	Or  []Principal
	Not *Principal
	// PeerPrincipal matches the filter state io.istio.peer_principal: the
	// source's SPIFFE ID from its HBONE client certificate.
	PeerPrincipal *ValueMatch
	// RemoteIP is direct_remote_ip: the source address of the CONNECT.
	RemoteIP *netip.Prefix
	Header   *RBACHeader
}

// RBACHeader matches a header: present, or its value by Value.
type RBACHeader struct {
	// Name is lower case; ":method", ":authority" and ":path" are the
	// pseudo-headers.
	Name    string
	Present bool
	Value   *ValueMatch
}

// ValueKind is how a ValueMatch compares.
type ValueKind uint8

// The value matches of StringMatcher.
const (
	ValueExact ValueKind = iota
	ValuePrefix
	ValueSuffix
	ValueContains
	ValueRegex
)

// ValueMatch is Envoy's StringMatcher.
type ValueMatch struct {
	Kind       ValueKind
	Value      string
	IgnoreCase bool
	// Regex is the anchored safe_regex of ValueRegex.
	Regex *regexp.Regexp
}

// Matches reports whether v matches.
func (m *ValueMatch) Matches(v string) bool {
	if m.Kind == ValueRegex {
		return m.Regex.MatchString(v)
	}
	want := m.Value
	if m.IgnoreCase {
		v, want = strings.ToLower(v), strings.ToLower(want)
	}
	switch m.Kind {
	case ValuePrefix:
		return strings.HasPrefix(v, want)
	case ValueSuffix:
		return strings.HasSuffix(v, want)
	case ValueContains:
		return strings.Contains(v, want)
	}
	return v == want
}

// Attributes are what authorization sees of a request or connection.
type Attributes struct {
	// HTTP is false on a TCP chain: Method, Host, Path and Header are
	// empty.
	HTTP   bool
	Method string
	Host   string
	// Path is the path without query.
	Path   string
	Header http.Header
	// Port is the destination (service) port.
	Port uint16
	// Principal is the source's SPIFFE ID (spiffe://...), "" without one.
	Principal string
	// SourceIP is the source address of the CONNECT.
	SourceIP netip.Addr
}

// AuthzDecision is the result of a chain's RBAC filters.
type AuthzDecision struct {
	Allowed bool
	// Policy is the policy that decided a denial: the matched DENY
	// policy, or "none" when ALLOW policies exist and none matched. ""
	// when allowed.
	Policy string
	// Allow is the ALLOW policy that matched last ("" if none applied).
	Allow string
	// Audited are the AUDIT (shadow) policies that matched.
	Audited []string
}

// ResponseCodeDetails is Envoy's response_code_details of a denial:
// rbac_access_denied_matched_policy[<policy>].
func (d AuthzDecision) ResponseCodeDetails() string {
	return "rbac_access_denied_matched_policy[" + d.Policy + "]"
}

// Authorize evaluates filters in order, as Envoy's RBAC filters run: a
// shadow filter records its matches; a DENY filter denies on the first
// matching policy; an ALLOW filter denies when no policy matches. No
// filters: allowed.
func Authorize(filters []RBAC, a Attributes) AuthzDecision {
	d := AuthzDecision{Allowed: true}
	for _, f := range filters {
		if f.Shadow || f.Action == RBACLog {
			for i := range f.Policies {
				if f.Policies[i].matches(a) {
					d.Audited = append(d.Audited, f.Policies[i].Name)
				}
			}
			continue
		}
		matched := ""
		for i := range f.Policies {
			if f.Policies[i].matches(a) {
				matched = f.Policies[i].Name
				break
			}
		}
		switch {
		case f.Action == RBACDeny && matched != "":
			return AuthzDecision{Policy: matched, Audited: d.Audited}
		case f.Action == RBACAllow && matched == "":
			return AuthzDecision{Policy: "none", Audited: d.Audited}
		case f.Action == RBACAllow:
			d.Allow = matched
		}
	}
	return d
}

func (p *RBACPolicy) matches(a Attributes) bool {
	return anyMatch(p.Permissions, func(q *Permission) bool { return q.matches(a) }) &&
		anyMatch(p.Principals, func(q *Principal) bool { return q.matches(a) })
}

// allMatch reports whether m holds for every element of xs.
func allMatch[T any](xs []T, m func(*T) bool) bool {
	for i := range xs {
		if !m(&xs[i]) {
			return false
		}
	}
	return true
}

// anyMatch reports whether m holds for some element of xs.
func anyMatch[T any](xs []T, m func(*T) bool) bool {
	for i := range xs {
		if m(&xs[i]) {
			return true
		}
	}
	return false
}

func (p *Permission) matches(a Attributes) bool {
	switch {
	case p.Any:
		return true
	case p.And != nil:
		return allMatch(p.And, func(q *Permission) bool { return q.matches(a) })
	case p.Or != nil:
		return anyMatch(p.Or, func(q *Permission) bool { return q.matches(a) })
	case p.Not != nil:
		return !p.Not.matches(a)
	case p.Port != 0:
		return a.Port == p.Port
	case p.Header != nil:
		return p.Header.matches(a)
	case p.URLPath != nil:
		return a.HTTP && p.URLPath.Matches(a.Path)
	}
	return false
}

func (p *Principal) matches(a Attributes) bool {
	switch {
	case p.Any:
		return true
	case p.And != nil:
		return allMatch(p.And, func(q *Principal) bool { return q.matches(a) })
	case p.Or != nil:
		return anyMatch(p.Or, func(q *Principal) bool { return q.matches(a) })
	case p.Not != nil:
		return !p.Not.matches(a)
	case p.PeerPrincipal != nil:
		return a.Principal != "" && p.PeerPrincipal.Matches(a.Principal)
	case p.RemoteIP != nil:
		return a.SourceIP.IsValid() && p.RemoteIP.Contains(a.SourceIP.Unmap())
	case p.Header != nil:
		return p.Header.matches(a)
	}
	return false
}

// matches looks the header up (pseudo-headers from the request line) and
// compares it. Several values of one header are joined with "," as Envoy
// does. A TCP connection has no headers.
func (h *RBACHeader) matches(a Attributes) bool {
	if !a.HTTP {
		return false
	}
	var v string
	var ok bool
	switch h.Name {
	case ":method":
		v, ok = a.Method, true
	case ":authority", "host":
		v, ok = a.Host, true
	case ":path":
		v, ok = a.Path, true
	default:
		vs := a.Header.Values(h.Name)
		v, ok = strings.Join(vs, ","), len(vs) > 0
	}
	if !ok {
		return false
	}
	if h.Present || h.Value == nil {
		return true
	}
	return h.Value.Matches(v)
}

// AccessLog is an HCM's file access log (XDS.md §13).
type AccessLog struct {
	// Path is /dev/stdout (the only path the Go waypoint writes).
	Path string
	// Fields are the JSON fields: name → format (command operators and
	// literals), in name order.
	Fields []LogField
	// Sampled is the percentage (0-100) of requests logged when the
	// response is below MinStatus; 100 with no filter.
	Sampled uint32
	// MinStatus: responses with at least this status are always logged
	// (0: no such filter; then Sampled alone decides).
	MinStatus int
}

// LogField is one JSON field of an access log line.
type LogField struct {
	Name   string
	Format string
}

// Logs reports whether a response with this status is logged, given a
// uniform random number r in [0, 100).
func (l *AccessLog) Logs(status int, r uint32) bool {
	if l == nil {
		return false
	}
	if l.MinStatus > 0 && status >= l.MinStatus {
		return true
	}
	return r < l.Sampled
}
