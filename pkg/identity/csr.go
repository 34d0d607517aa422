package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
)

// ErrCSRRejected is wrapped by every error that rejects a CSR because of its
// content (as opposed to a CA failure), so a CA server can map it to
// "invalid argument".
var ErrCSRRejected = errors.New("CSR rejected")

// GenerateKey returns a new ECDSA P-256 private key, the key type Ambit uses
// for every workload certificate.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generating ECDSA P-256 key: %w", err)
	}
	return k, nil
}

// NewCSR returns a PEM-encoded PKCS#10 certificate request for id, signed by
// key, whose only subject alternative name is the URI SAN id.String().
func NewCSR(id ID, key crypto.Signer) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("identity: creating CSR for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR decodes a PEM CSR, checks its self-signature and that it asks for
// exactly one identity (one URI SAN, no DNS, IP or e-mail SANs) with an
// acceptable key (ECDSA P-256/P-384 or RSA of at least 2048 bits). Every
// rejection wraps ErrCSRRejected.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, ID, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, ID{}, fmt.Errorf("%w: no PEM block of type CERTIFICATE REQUEST", ErrCSRRejected)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, ID{}, fmt.Errorf("%w: parsing: %w", ErrCSRRejected, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, ID{}, fmt.Errorf("%w: bad signature (the CSR was not signed by the key it carries): %w", ErrCSRRejected, err)
	}
	switch {
	case len(csr.DNSNames) > 0:
		return nil, ID{}, fmt.Errorf("%w: it has DNS SANs %q; an X.509-SVID carries only its SPIFFE ID", ErrCSRRejected, csr.DNSNames)
	case len(csr.IPAddresses) > 0:
		return nil, ID{}, fmt.Errorf("%w: it has IP SANs %v; an X.509-SVID carries only its SPIFFE ID", ErrCSRRejected, csr.IPAddresses)
	case len(csr.EmailAddresses) > 0:
		return nil, ID{}, fmt.Errorf("%w: it has e-mail SANs %q; an X.509-SVID carries only its SPIFFE ID", ErrCSRRejected, csr.EmailAddresses)
	case len(csr.URIs) == 0:
		return nil, ID{}, fmt.Errorf("%w: it has no URI SAN; put the SPIFFE ID in a URI SAN", ErrCSRRejected)
	case len(csr.URIs) > 1:
		return nil, ID{}, fmt.Errorf("%w: it has %d URI SANs; an X.509-SVID has exactly one", ErrCSRRejected, len(csr.URIs))
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, ID{}, fmt.Errorf("%w: %w", ErrCSRRejected, err)
	}
	id, err := Parse(csr.URIs[0].String())
	if err != nil {
		return nil, ID{}, fmt.Errorf("%w: %w", ErrCSRRejected, err)
	}
	return csr, id, nil
}

func checkKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s is not allowed; use P-256", k.Curve.Params().Name)
		}
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small; use ECDSA P-256", k.N.BitLen())
		}
		return nil
	default:
		return fmt.Errorf("key type %T is not allowed; use ECDSA P-256", pub)
	}
}
