// Package identity holds Ambit's workload identities: SPIFFE IDs of the form
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>, the keys and
// CSRs that request X.509-SVIDs for them, an in-process CA (LocalCA) for tests
// and stand-alone mode, and the certificate Manager that fetches, caches and
// rotates SVIDs for the identities a ztunnel or waypoint serves.
package identity

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain used when none is configured.
const DefaultTrustDomain = "cluster.local"

// ID is a workload identity: a SPIFFE ID with the path /ns/<ns>/sa/<sa>.
// The zero ID is not a valid identity; construct IDs with New or Parse.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// New returns the identity of service account sa in namespace ns of trust
// domain td, or an error naming the part that is not valid.
func New(td, ns, sa string) (ID, error) {
	id := ID{TrustDomain: td, Namespace: ns, ServiceAccount: sa}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}

// Parse parses and validates a SPIFFE ID of the form
// spiffe://<td>/ns/<ns>/sa/<sa>.
func Parse(s string) (ID, error) {
	sid, err := spiffeid.FromString(s)
	if err != nil {
		return ID{}, fmt.Errorf("identity: %q is not a valid SPIFFE ID: %w", s, err)
	}
	return FromSPIFFEID(sid)
}

// FromSPIFFEID converts a parsed go-spiffe ID into an ID; the path must be
// exactly /ns/<ns>/sa/<sa>.
func FromSPIFFEID(sid spiffeid.ID) (ID, error) {
	if sid.IsZero() {
		return ID{}, errors.New("identity: empty SPIFFE ID")
	}
	segs := strings.Split(strings.TrimPrefix(sid.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return ID{}, fmt.Errorf("identity: SPIFFE ID %q does not have the path /ns/<namespace>/sa/<serviceaccount>", sid.String())
	}
	return New(sid.TrustDomain().Name(), segs[1], segs[3])
}

// Validate reports whether all three parts of the ID are present and valid.
func (id ID) Validate() error {
	if id.TrustDomain == "" {
		return errors.New("identity: empty trust domain")
	}
	td, err := spiffeid.TrustDomainFromString(id.TrustDomain)
	if err != nil {
		return fmt.Errorf("identity: bad trust domain %q: %w", id.TrustDomain, err)
	}
	if td.Name() != id.TrustDomain {
		return fmt.Errorf("identity: trust domain %q must be a bare lower-case name like %q", id.TrustDomain, DefaultTrustDomain)
	}
	if err := validName("namespace", id.Namespace); err != nil {
		return err
	}
	return validName("service account", id.ServiceAccount)
}

// validName checks a namespace or service account name: non-empty, a valid
// SPIFFE path segment, and at most 253 characters (the Kubernetes limit).
func validName(what, v string) error {
	if v == "" {
		return fmt.Errorf("identity: empty %s", what)
	}
	if len(v) > 253 {
		return fmt.Errorf("identity: %s %q is longer than 253 characters", what, v)
	}
	if err := spiffeid.ValidatePathSegment(v); err != nil {
		return fmt.Errorf("identity: bad %s %q: %w", what, v, err)
	}
	return nil
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// String returns spiffe://<td>/ns/<ns>/sa/<sa>. It does not validate.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the ID as a URL, as it appears in a certificate URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// SPIFFEID returns the go-spiffe form of a valid id.
func (id ID) SPIFFEID() (spiffeid.ID, error) {
	if err := id.Validate(); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromString(id.String())
}
