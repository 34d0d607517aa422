package securityv1alpha1

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AuthorizationPolicy allows, denies or audits inbound connections to the
// workloads it selects (Istio's security.istio.io AuthorizationPolicy,
// restricted to what ztunnel can enforce at L4 plus the HTTP fields users
// write, which only a waypoint could enforce).
//
// Scope: with spec.selector, the pods in the policy's namespace whose labels
// match; without, every workload in the namespace; in the mesh's root
// namespace without a selector, every workload of the mesh.
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired policy.
	Spec AuthorizationPolicySpec `json:"spec"`
	// Status says whether the control plane accepted and enforces the
	// policy.
	Status PolicyStatus `json:"status,omitempty"`
}

// AuthorizationPolicySpec is the body of an AuthorizationPolicy.
type AuthorizationPolicySpec struct {
	// Selector picks the workloads (pods) in the policy's namespace the
	// policy applies to. Unset: every workload in the namespace.
	// Mutually exclusive with TargetRefs.
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// TargetRefs attach the policy to Services (core group, kind Service)
	// or waypoints (gateway.networking.k8s.io, kind Gateway) of the
	// policy's namespace instead of selecting pods. A policy on a Service
	// served by a waypoint, or on the waypoint itself, is enforced by the
	// waypoint, HTTP fields and `when` included; on a Service without a
	// waypoint, ztunnel enforces it when it has only L4 fields.
	// Mutually exclusive with Selector.
	TargetRefs []PolicyTargetReference `json:"targetRefs,omitempty"`
	// Action is what a matching rule does. Empty means ALLOW.
	Action Action `json:"action,omitempty"`
	// Rules are OR'ed: the policy matches a connection when any rule
	// matches. An ALLOW policy without rules matches nothing and so denies
	// every connection to the workloads it applies to ("allow nothing"); a
	// DENY or AUDIT policy without rules matches nothing.
	Rules []Rule `json:"rules,omitempty"`
}

// Action is what an AuthorizationPolicy does with the connections its rules
// match.
type Action string

const (
	// ActionAllow allows matching connections. Once any ALLOW policy
	// applies to a workload, connections that match no ALLOW policy are
	// denied.
	ActionAllow Action = "ALLOW"
	// ActionDeny denies matching connections; DENY wins over ALLOW.
	ActionDeny Action = "DENY"
	// ActionAudit logs matching connections and does not change the
	// decision.
	ActionAudit Action = "AUDIT"
)

// Rule matches a connection when all of its non-empty parts match: any entry
// of From and any entry of To. A rule with neither matches every connection.
type Rule struct {
	// From lists the sources; OR'ed. Unset: any source.
	From []RuleFrom `json:"from,omitempty"`
	// To lists the operations (destination side); OR'ed. Unset: any
	// operation.
	To []RuleTo `json:"to,omitempty"`
	// When lists further conditions, AND'ed (L7: only a waypoint
	// enforces them).
	When []Condition `json:"when,omitempty"`
}

// PolicyTargetReference names the object a policy attaches to, in the
// policy's namespace.
type PolicyTargetReference struct {
	// Group is "" (core) for a Service, gateway.networking.k8s.io for a
	// Gateway.
	Group string `json:"group"`
	// Kind is Service or Gateway.
	Kind string `json:"kind"`
	// Name of the object.
	Name string `json:"name"`
}

// Target kinds and groups of PolicyTargetReference.
const (
	TargetKindService = "Service"
	TargetKindGateway = "Gateway"
	GatewayGroup      = "gateway.networking.k8s.io"
)

// Condition is one `when` entry: the value of Key must be one of Values (if
// set) and none of NotValues (if set).
//
// Keys: request.headers[<name>] (an HTTP request header), source.principal,
// source.namespace, source.ip (an IP or CIDR), destination.port.
type Condition struct {
	// Key names the attribute.
	Key string `json:"key"`
	// Values: the attribute must match one of them.
	Values []string `json:"values,omitempty"`
	// NotValues: the attribute must match none of them.
	NotValues []string `json:"notValues,omitempty"`
}

// HTTPFields returns, for each rule field only a waypoint can enforce
// (HTTP operation fields, `when`), its name, or nil when r is L4 only.
func (r *Rule) HTTPFields() []string {
	var out []string
	for i := range r.To {
		for _, f := range r.To[i].Operation.HTTPFields() {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	if len(r.When) > 0 {
		out = append(out, "when")
	}
	return out
}

// RuleFrom is one entry of Rule.From.
type RuleFrom struct {
	// Source describes the peer. It must set at least one field.
	Source Source `json:"source"`
}

// RuleTo is one entry of Rule.To.
type RuleTo struct {
	// Operation describes the destination side. It must set at least one
	// field.
	Operation Operation `json:"operation"`
}

// Source matches the peer of a connection. Its non-empty fields are AND'ed;
// a positive field matches when any value matches, a not- field when no
// value matches.
//
// Principals and namespaces match exactly, or with one '*' at the start
// (suffix match) or at the end (prefix match); "*" alone matches any
// connection that has an identity (mTLS), which plaintext connections do
// not.
type Source struct {
	// Principals are peer identities written as in Istio, without the
	// spiffe:// scheme: "<trust-domain>/ns/<namespace>/sa/<service
	// account>", e.g. "cluster.local/ns/shop/sa/frontend".
	Principals []string `json:"principals,omitempty"`
	// NotPrincipals are the negation of Principals.
	NotPrincipals []string `json:"notPrincipals,omitempty"`
	// Namespaces are the peer's namespace, taken from its identity.
	Namespaces []string `json:"namespaces,omitempty"`
	// NotNamespaces are the negation of Namespaces.
	NotNamespaces []string `json:"notNamespaces,omitempty"`
	// IPBlocks are source IP addresses or CIDR blocks, IPv4 or IPv6, e.g.
	// "10.0.0.0/16", "10.0.0.7", "fd00::/64". An address stands for its
	// /32 or /128.
	IPBlocks []string `json:"ipBlocks,omitempty"`
	// NotIPBlocks are the negation of IPBlocks.
	NotIPBlocks []string `json:"notIpBlocks,omitempty"`
}

// Operation matches the destination side of a connection. Its non-empty
// fields are AND'ed; a positive field matches when any value matches, a not-
// field when no value matches.
//
// Only Ports and NotPorts are enforced by ztunnel (L4). The HTTP fields
// (Methods, Paths, Hosts and their negations) are accepted because users
// write them, but ztunnel cannot see HTTP: the control plane marks policies
// that use them in status (see Operation.HTTPFields) instead of enforcing
// them at L4.
type Operation struct {
	// Ports are destination ports on the workload (the target port, not
	// the Service port), as decimal strings, e.g. "8080".
	Ports []string `json:"ports,omitempty"`
	// NotPorts are the negation of Ports.
	NotPorts []string `json:"notPorts,omitempty"`
	// Methods are HTTP methods, e.g. "GET" (L7; not enforced by ztunnel).
	Methods []string `json:"methods,omitempty"`
	// NotMethods are the negation of Methods (L7).
	NotMethods []string `json:"notMethods,omitempty"`
	// Paths are HTTP request paths, exact or with a '*' prefix/suffix
	// wildcard (L7; not enforced by ztunnel).
	Paths []string `json:"paths,omitempty"`
	// NotPaths are the negation of Paths (L7).
	NotPaths []string `json:"notPaths,omitempty"`
	// Hosts are HTTP Host/:authority values (L7; not enforced by ztunnel).
	Hosts []string `json:"hosts,omitempty"`
	// NotHosts are the negation of Hosts (L7).
	NotHosts []string `json:"notHosts,omitempty"`
}

// HTTPFields returns the JSON names of the HTTP-level (L7) fields that o
// sets, in field order, or nil when o uses only L4 fields. ztunnel cannot
// enforce a rule that uses any of them.
func (o *Operation) HTTPFields() []string {
	var fields []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"methods", len(o.Methods) > 0},
		{"notMethods", len(o.NotMethods) > 0},
		{"paths", len(o.Paths) > 0},
		{"notPaths", len(o.NotPaths) > 0},
		{"hosts", len(o.Hosts) > 0},
		{"notHosts", len(o.NotHosts) > 0},
	} {
		if f.set {
			fields = append(fields, f.name)
		}
	}
	return fields
}

// WorkloadSelector selects pods by label, as Istio's selector does.
type WorkloadSelector struct {
	// MatchLabels are labels a pod must all have, with these values. Empty
	// selects every pod in the namespace.
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// PolicyStatus is the status of AuthorizationPolicy and PeerAuthentication.
type PolicyStatus struct {
	// Conditions say whether the control plane accepted the object and, if
	// not or only partly, why. See ConditionAccepted.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the metadata.generation the conditions were
	// computed for.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Condition types and reasons the control plane writes in
// PolicyStatus.Conditions.
const (
	// ConditionAccepted is True when the object is valid and fully
	// enforced, False when it is invalid or only partly enforceable (the
	// reason says which).
	ConditionAccepted = "Accepted"

	// ReasonAccepted: the object is valid and enforced as written.
	ReasonAccepted = "Accepted"
	// ReasonInvalid: the object cannot be compiled (the message says
	// which field and why).
	ReasonInvalid = "Invalid"
	// ReasonUnsupportedL7: a rule uses HTTP fields that ztunnel cannot
	// enforce (the message names the rules and fields).
	ReasonUnsupportedL7 = "UnsupportedL7"
	// ReasonWaypointRequired: a targetRefs Service has no waypoint and a
	// rule uses HTTP fields; ztunnel denies every connection to the
	// Service's workloads meanwhile.
	ReasonWaypointRequired = "WaypointRequired"
	// ReasonTargetNotFound: a targetRefs entry names no existing Service
	// or waypoint Gateway.
	ReasonTargetNotFound = "TargetNotFound"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// AuthorizationPolicyList is a list of AuthorizationPolicy.
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the policies.
	Items []AuthorizationPolicy `json:"items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// PeerAuthentication sets the inbound mTLS mode of the workloads it selects
// (Istio's security.istio.io PeerAuthentication).
//
// Scope: as AuthorizationPolicy. The mode of a workload and port is the
// first that is not UNSET of: the selector policy's portLevelMtls entry for
// the port, the selector policy's mtls.mode, the namespace policy's, the
// mesh (root namespace) policy's, and PERMISSIVE.
type PeerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired mTLS mode.
	Spec PeerAuthenticationSpec `json:"spec"`
	// Status says whether the control plane accepted the object.
	Status PolicyStatus `json:"status,omitempty"`
}

// PeerAuthenticationSpec is the body of a PeerAuthentication.
type PeerAuthenticationSpec struct {
	// Selector picks the workloads (pods) in the namespace it applies to.
	// Unset: every workload in the namespace.
	Selector *WorkloadSelector `json:"selector,omitempty"`
	// MTLS is the mode for every port not in PortLevelMTLS. Unset: UNSET
	// (inherit).
	MTLS *MutualTLS `json:"mtls,omitempty"`
	// PortLevelMTLS overrides the mode per destination (target) port of
	// the workload. Only allowed with a selector.
	PortLevelMTLS map[uint32]MutualTLS `json:"portLevelMtls,omitempty"`
}

// MutualTLS holds an mTLS mode.
type MutualTLS struct {
	// Mode is the mTLS mode. Empty means UNSET.
	Mode MTLSMode `json:"mode,omitempty"`
}

// MTLSMode is an inbound mTLS requirement.
type MTLSMode string

const (
	// MTLSModeUnset inherits the mode from the next broader scope.
	MTLSModeUnset MTLSMode = "UNSET"
	// MTLSModeStrict accepts only mTLS (HBONE); inbound plaintext is
	// refused.
	MTLSModeStrict MTLSMode = "STRICT"
	// MTLSModePermissive accepts mTLS and plaintext. The default.
	MTLSModePermissive MTLSMode = "PERMISSIVE"
	// MTLSModeDisable accepts plaintext; ztunnel treats it as PERMISSIVE
	// on inbound.
	MTLSModeDisable MTLSMode = "DISABLE"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// PeerAuthenticationList is a list of PeerAuthentication.
type PeerAuthenticationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the policies.
	Items []PeerAuthentication `json:"items"`
}
