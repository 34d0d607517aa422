package ca

import (
	"errors"
	"fmt"
	"slices"

	"ambit.dev/pkg/identity"
)

// ErrPermissionDenied is wrapped by every refusal of Authorize (and of the
// caller's node lookup): the caller is authenticated but may not obtain the
// identity it asked for. The server maps it to PERMISSION_DENIED.
var ErrPermissionDenied = errors.New("permission denied")

// Caller is an authenticated client of the CA, from its ServiceAccount
// token (see authn.go) and, for pod-bound tokens, the pod's node.
type Caller struct {
	// Namespace and ServiceAccount the token was issued for.
	Namespace      string
	ServiceAccount string
	// PodName and PodUID the token is bound to; empty for a token that is
	// not bound to a pod.
	PodName string
	PodUID  string
	// NodeName is where the caller's pod runs; empty when unknown.
	NodeName string
}

// String describes the caller for error messages and logs.
func (c Caller) String() string {
	s := "service account " + c.Namespace + "/" + c.ServiceAccount
	if c.PodName != "" {
		s += " (pod " + c.Namespace + "/" + c.PodName
		if c.NodeName != "" {
			s += " on node " + c.NodeName
		}
		s += ")"
	}
	return s
}

// Policy is what Authorize decides with.
type Policy struct {
	// TrustDomain is the only trust domain the CA signs for.
	TrustDomain string
	// NodeProxies may request identities of the pods on their node.
	NodeProxies []ServiceAccountRef
}

// IsNodeProxy reports whether c runs as one of the node proxy
// ServiceAccounts.
func (p Policy) IsNodeProxy(c Caller) bool {
	return slices.Contains(p.NodeProxies, ServiceAccountRef{Namespace: c.Namespace, Name: c.ServiceAccount})
}

// Authorize decides whether caller c may obtain a certificate for id.
// podsOnNode are the pods scheduled on c.NodeName (ignored when the caller
// is not a node proxy). The rules (api/proto/ambit/ca/v1alpha1/ca.proto):
//
//   - id must be in the CA's trust domain (else an error wrapping
//     identity.ErrCSRRejected: the request itself is wrong);
//   - a caller may always obtain its own identity;
//   - a node proxy (ztunnel) may obtain the identity ns/N/sa/S only if a
//     pod running as S in N is scheduled on the proxy's own node;
//   - anything else is refused with an error wrapping ErrPermissionDenied
//     that says what to check.
func Authorize(p Policy, c Caller, id identity.ID, podsOnNode []PodRef) error {
	if id.TrustDomain != p.TrustDomain {
		return fmt.Errorf("%w: identity %s is in trust domain %q; this CA signs only for %q",
			identity.ErrCSRRejected, id, id.TrustDomain, p.TrustDomain)
	}
	if c.Namespace == id.Namespace && c.ServiceAccount == id.ServiceAccount {
		return nil
	}
	if !p.IsNodeProxy(c) {
		return fmt.Errorf("%w: %s may only obtain its own identity spiffe://%s/ns/%s/sa/%s, not %s; only node proxies (%s) may request other identities",
			ErrPermissionDenied, c, p.TrustDomain, c.Namespace, c.ServiceAccount, id, proxyList(p.NodeProxies))
	}
	if c.NodeName == "" {
		return fmt.Errorf("%w: the node of %s is unknown, so it may not request %s; the node proxy must send a pod-bound projected ServiceAccount token (audience %q)",
			ErrPermissionDenied, c, id, tokenAudience)
	}
	for _, pod := range podsOnNode {
		if pod.NodeName == c.NodeName && pod.Namespace == id.Namespace && pod.ServiceAccount == id.ServiceAccount {
			return nil
		}
	}
	return fmt.Errorf("%w: no pod with service account %s in namespace %s runs on node %s (requested %s by %s); check that such a pod is scheduled on that node and that the control plane has seen it",
		ErrPermissionDenied, id.ServiceAccount, id.Namespace, c.NodeName, id, c)
}

func proxyList(refs []ServiceAccountRef) string {
	if len(refs) == 0 {
		return "none configured"
	}
	s := ""
	for i, r := range refs {
		if i > 0 {
			s += ", "
		}
		s += r.String()
	}
	return s
}
