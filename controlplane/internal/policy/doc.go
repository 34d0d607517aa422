// Package policy compiles the security.ambit.dev AuthorizationPolicy and
// PeerAuthentication objects into the Authorization resources that ztunnels
// enforce (api/proto/ambit/workload/v1alpha1/authorization.proto), and
// decides what each object's Accepted condition says. It does no I/O and has
// no Kubernetes client: internal/kube feeds it objects and writes status.
//
// This comment is the reference for how a policy is read. In short: what
// ztunnel can enforce at L4 is compiled as written; anything else fails
// closed, and the Accepted condition says which field and why.
//
// # Scope
//
//   - No spec.selector, in the mesh's root namespace: scope GLOBAL, every
//     workload of the mesh.
//   - No spec.selector elsewhere: scope NAMESPACE, every workload in the
//     object's namespace.
//   - A spec.selector, even with empty matchLabels: scope WORKLOAD_SELECTOR,
//     the pods of the object's namespace whose labels include every
//     matchLabels entry (empty matchLabels: every pod of the namespace).
//     A selector object in the root namespace selects matching pods of
//     EVERY namespace, as Istio does for AuthorizationPolicy; Ambit does the
//     same for PeerAuthentication. The control plane evaluates selectors
//     (Index.ForWorkload) and lists the selected policies on each Workload;
//     ztunnel never sees a selector.
//
// The resource name is "<namespace>/<name>" for an AuthorizationPolicy and
// "<namespace>/peerauthentication:<name>" for a PeerAuthentication.
//
// # AuthorizationPolicy
//
// spec.action "" and ALLOW compile to ALLOW; DENY and AUDIT to themselves.
// Each spec rule becomes one Rule (rules are OR'ed). Within a rule:
//
//   - from, when set, becomes one Clause with one Match per from[].source:
//     the rule needs ANY of the sources to match;
//   - to, when set, becomes one Clause with one Match per to[].operation
//     (ports and notPorts only, see "HTTP fields");
//   - the clauses are AND'ed; a rule with neither from nor to has no clauses
//     and matches every connection.
//
// Within a source or operation the set fields are AND'ed, a positive field
// is satisfied by any listed value and a not- field by none. A source or an
// operation that sets no field is invalid ("must set at least one field").
//
// principals, notPrincipals, namespaces, notNamespaces: "*" alone matches
// any connection that has an identity (mTLS; plaintext has none), "*x"
// matches values ending in "x", "x*" values starting with "x", anything else
// matches exactly. A '*' elsewhere, more than one '*', or an empty string is
// invalid. Principals are written without the scheme
// ("cluster.local/ns/shop/sa/frontend"); one starting with "spiffe://" is
// invalid (the message says to drop the scheme) rather than silently
// rewritten.
//
// ipBlocks, notIpBlocks: an IPv4 or IPv6 address (standing for its /32 or
// /128) or a CIDR block; bits past the prefix length are ignored
// ("10.0.0.7/24" is 10.0.0.0/24). An IPv4-mapped IPv6 block of length 96 or
// more ("::ffff:10.0.0.0/120") is sent as the IPv4 block it denotes
// (10.0.0.0/24), because ztunnel compares IPv4 sources with IPv4 blocks; a
// shorter one, an address with a zone, or anything unparsable is invalid.
//
// ports, notPorts: decimal port numbers 1 to 65535 ("8080"); the port on
// the workload (target port), not the Service port. Anything else is
// invalid.
//
// An empty spec (spec: {}) is an ALLOW policy without rules: it allows
// nothing, so every connection to the workloads it applies to is denied. It
// is valid and Accepted.
//
// # HTTP fields
//
// methods, paths, hosts and their not- forms, and rules[].when, need a
// waypoint (an HTTP proxy: see targetRefs); ztunnel only sees TCP. A
// selector policy that uses them is never compiled as if they were absent,
// since that would widen an ALLOW or narrow a DENY:
//
//   - ALLOW and DENY: the policy compiles to a deny-all Authorization (action
//     DENY, one rule without clauses, same name, namespace and scope), so
//     every connection to the workloads it applies to is refused until the
//     fields are removed. Accepted is False, reason UnsupportedL7, and the
//     message names each operation and field.
//   - AUDIT: the rules that use HTTP fields are dropped and the others are
//     audited. Accepted is False, reason UnsupportedL7, and the message says
//     which rules are not audited.
//
// # targetRefs
//
// An AuthorizationPolicy with spec.targetRefs (exclusive with selector; the
// CRD refuses both) attaches to Services or waypoint Gateways of its
// namespace instead of selecting pods. internal/kube resolves each target
// (Target) and CompileTargeted decides: a target served by a waypoint is
// enforced there (XDS.md §12, all fields including `when`), and nothing is
// sent to ztunnel for it; a Service without a waypoint is enforced by
// ztunnel on the Service's pods (WORKLOAD_SELECTOR with the Service's
// selector) when every rule is L4, and fails closed with reason
// WaypointRequired otherwise; a missing target is TargetNotFound. The
// policy is recompiled when a target Service appears, goes, changes its
// selector or its waypoint.
//
// # Invalid policies (fail closed)
//
// Every problem found is listed in the condition message with its field
// path, e.g. `rules[1].from[0].source.ipBlocks[2]: "10.0.0.0/33" is not an IP
// address or CIDR block` (the first 16 problems, then a count). Then:
//
//   - ALLOW, DENY, or an unknown action: the deny-all Authorization above is
//     sent (a broken ALLOW must not open access, a broken DENY must not stop
//     denying). Accepted is False, reason Invalid.
//   - AUDIT: nothing is sent (auditing never changes a decision, so sending
//     nothing is safe). Accepted is False, reason Invalid.
//
// A valid policy has Accepted True, reason Accepted, message "compiled for
// ztunnel (L4)". Compilation reads only the object itself; the deny-all
// fallback never depends on other objects.
//
// # PeerAuthentication
//
// A PeerAuthentication compiles to an Authorization named
// "peerauthentication:<name>" with the same scope rules, no access rules,
// and peer_authentication set: mtls.mode (unset, "" or UNSET: UNSET, i.e.
// inherit; STRICT, PERMISSIVE, DISABLE) and, for selector objects only,
// portLevelMtls keyed by target port.
//
// Problems are reported as reason Invalid, and the object still sends what
// can be read without guessing; nothing is ever guessed stronger or weaker
// than written:
//
//   - an unknown mtls.mode is sent as UNSET (the workloads inherit the
//     broader scope's mode);
//   - a portLevelMtls entry whose port is not 1..65535 or whose mode is
//     unknown is dropped (the port inherits mtls.mode);
//   - portLevelMtls without a selector is dropped (ztunnel ignores port
//     overrides outside WORKLOAD_SELECTOR scope); mtls.mode still applies.
//
// # Conflicts between PeerAuthentications
//
// A workload gets at most one mode per scope. Index resolves conflicts as
// Istio does, the oldest object (metadata.creationTimestamp, then namespace,
// then name) winning:
//
//   - several PeerAuthentications without selector in one namespace (or in
//     the root namespace, for GLOBAL): only the oldest is served; the others
//     get Accepted False, reason Conflict, with a message naming the winner;
//   - several selector PeerAuthentications that select one pod: only the
//     oldest is listed on that pod's Workload. Which pods are affected
//     depends on pod labels, so such objects are not marked Conflict.
//
// AuthorizationPolicies never conflict: every applicable one is enforced
// (DENY first, then ALLOW, see authorization.proto).
package policy
