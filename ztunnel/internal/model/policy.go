package model

import "net/netip"

// MTLSDisable is a peer-authentication mode: plaintext is accepted, like
// MTLSPermissive on inbound (authorization.proto).
const MTLSDisable MTLSMode = "DISABLE"

// MTLSUnset is a peer-authentication mode that inherits from the next
// broader scope.
const MTLSUnset MTLSMode = ""

// Scope says which workloads a Policy applies to (authorization.proto).
type Scope string

// Scopes.
const (
	// ScopeGlobal: every workload of the mesh.
	ScopeGlobal Scope = "GLOBAL"
	// ScopeNamespace: the workloads of the policy's namespace.
	ScopeNamespace Scope = "NAMESPACE"
	// ScopeWorkloadSelector: the workloads that list the policy's key in
	// Workload.AuthorizationPolicies.
	ScopeWorkloadSelector Scope = "WORKLOAD_SELECTOR"
)

// Action is what a matching access policy does.
type Action string

// Actions.
const (
	ActionAllow Action = "ALLOW"
	ActionDeny  Action = "DENY"
	ActionAudit Action = "AUDIT"
)

// Policy is one Authorization resource: an access policy (PeerAuth nil)
// or a peer-authentication policy (PeerAuth set, no rules). The semantics
// are those of api/proto/ambit/workload/v1alpha1/authorization.proto.
type Policy struct {
	// Name is the source object's name ("peerauthentication:<name>" for a
	// peer-authentication policy).
	Name      string
	Namespace string
	Scope     Scope
	Action    Action
	// Rules are OR'ed; an access policy without rules matches nothing.
	Rules    []Rule
	PeerAuth *PeerAuthentication
}

// Key is the policy's resource name, "<namespace>/<name>", as workloads
// list it in Workload.AuthorizationPolicies.
func (p Policy) Key() string { return PolicyKey(p.Namespace, p.Name) }

// PolicyKey builds the key of a policy.
func PolicyKey(namespace, name string) string { return namespace + "/" + name }

// PeerAuthentication is the mTLS part of a peer-authentication policy.
type PeerAuthentication struct {
	// Mode applies to the ports not in PortLevel; MTLSUnset inherits.
	Mode MTLSMode
	// PortLevel overrides Mode per destination (target) port; only used
	// on ScopeWorkloadSelector policies.
	PortLevel map[uint16]MTLSMode
}

// Rule matches when all of its clauses match; no clauses match everything.
type Rule struct {
	Clauses []Clause
}

// Clause matches when any of its matches matches (never empty once
// validated).
type Clause struct {
	Matches []Match
}

// Match tests the attributes of a connection: every non-empty field must
// be satisfied; a positive field when any value matches, a Not field when
// none does.
type Match struct {
	Principals, NotPrincipals []StringMatch
	Namespaces, NotNamespaces []StringMatch
	// SourceIPs are masked prefixes (Prefix.Masked()).
	SourceIPs, NotSourceIPs               []netip.Prefix
	DestinationPorts, NotDestinationPorts []uint16
}

// StringMatchKind is how a StringMatch compares.
type StringMatchKind string

// StringMatch kinds.
const (
	MatchExact    StringMatchKind = "exact"
	MatchPrefix   StringMatchKind = "prefix"
	MatchSuffix   StringMatchKind = "suffix"
	MatchPresence StringMatchKind = "presence"
)

// StringMatch compares a string attribute.
type StringMatch struct {
	Kind  StringMatchKind
	Value string // unused for MatchPresence
}
