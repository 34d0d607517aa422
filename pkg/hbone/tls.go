package hbone

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"ambit.dev/pkg/identity"
)

// ALPN is the only application protocol HBONE negotiates.
const ALPN = "h2"

// Errors wrapped by peer verification failures, so callers can count them.
var (
	ErrNoPeerCertificate = errors.New("no peer certificate")
	ErrNotSVID           = errors.New("peer certificate is not a workload X.509-SVID")
	ErrWrongTrustDomain  = errors.New("wrong trust domain")
	ErrUnknownAuthority  = errors.New("unknown authority")
	ErrExpired           = errors.New("certificate expired or not yet valid")
	ErrWrongIdentity     = errors.New("wrong identity")
)

// RootsFunc returns the current mesh trust anchors. It is called on every
// handshake so root rotation takes effect without new configs.
type RootsFunc func() []*x509.Certificate

// ServerTLS returns the TLS config of an HBONE server: TLS 1.3 only, ALPN
// h2, the certificate from getCert (no SNI is expected, so getCert serves
// the identity of the listener), and a required client certificate that
// must be an X.509-SVID of trustDomain chaining to roots.
func ServerTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), roots RootsFunc, trustDomain string) (*tls.Config, error) {
	if getCert == nil || roots == nil {
		return nil, errors.New("hbone: ServerTLS needs getCert and roots")
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil || td.Name() != trustDomain {
		return nil, fmt.Errorf("hbone: bad trust domain %q: %v", trustDomain, err)
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		NextProtos:             []string{ALPN},
		GetCertificate:         getCert,
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true, // every connection verifies a fresh peer chain
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := VerifyPeer(cs.PeerCertificates, roots(), td.Name(), nil, time.Now())
			if err != nil {
				return fmt.Errorf("client certificate rejected: %w", err)
			}
			return nil
		},
	}, nil
}

// ClientTLS returns the TLS config of an HBONE client presenting cert: TLS
// 1.3 only, ALPN h2, no SNI and no host name check. The server's chain
// must lead to roots and its one URI SAN must equal expectedServer.
func ClientTLS(cert *tls.Certificate, roots []*x509.Certificate, expectedServer identity.ID) *tls.Config {
	want := expectedServer
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPN},
		Certificates:       []tls.Certificate{*cert},
		InsecureSkipVerify: true, // no host name; VerifyConnection checks the SVID
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := VerifyPeer(cs.PeerCertificates, roots, want.TrustDomain, &want, time.Now())
			if err != nil {
				return fmt.Errorf("server certificate rejected: %w", err)
			}
			return nil
		},
	}
}

// VerifyPeer verifies a peer chain (leaf first) as an X.509-SVID of
// trustDomain issued under roots and valid at now, and, if want is not nil,
// that it names exactly *want. The error wraps one of the Err* values above
// and says what to check.
func VerifyPeer(chain []*x509.Certificate, roots []*x509.Certificate, trustDomain string, want *identity.ID, now time.Time) (identity.ID, error) {
	if len(chain) == 0 {
		return identity.ID{}, fmt.Errorf("hbone: %w", ErrNoPeerCertificate)
	}
	leaf := chain[0]
	sid, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return identity.ID{}, fmt.Errorf("hbone: %w: %w", ErrNotSVID, err)
	}
	id, err := identity.FromSPIFFEID(sid)
	if err != nil {
		return identity.ID{}, fmt.Errorf("hbone: %w: %w", ErrNotSVID, err)
	}
	if id.TrustDomain != trustDomain {
		return id, fmt.Errorf("hbone: %w: peer %s is in trust domain %q, want %q (peers must share this mesh's trust domain)", ErrWrongTrustDomain, id, id.TrustDomain, trustDomain)
	}
	td, _ := spiffeid.TrustDomainFromString(trustDomain)
	_, _, err = x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots), x509svid.WithTime(now))
	if err != nil {
		var ua x509.UnknownAuthorityError
		var inv x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return id, fmt.Errorf("hbone: %w: certificate of %s is not signed by the mesh roots (do both sides share one root of trust?): %w", ErrUnknownAuthority, id, err)
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			return id, fmt.Errorf("hbone: %w: certificate of %s is valid %s..%s, now is %s (check clocks and certificate rotation): %w",
				ErrExpired, id, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), err)
		default:
			return id, fmt.Errorf("hbone: verifying certificate of %s: %w", id, err)
		}
	}
	if want != nil && id != *want {
		return id, fmt.Errorf("hbone: %w: peer presented %s, want %s", ErrWrongIdentity, id, *want)
	}
	return id, nil
}

// PeerIdentity returns the identity in the verified peer leaf of a
// connection that completed a handshake with ServerTLS or ClientTLS.
func PeerIdentity(cs tls.ConnectionState) (identity.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return identity.ID{}, fmt.Errorf("hbone: %w", ErrNoPeerCertificate)
	}
	sid, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return identity.ID{}, fmt.Errorf("hbone: %w: %w", ErrNotSVID, err)
	}
	return identity.FromSPIFFEID(sid)
}
