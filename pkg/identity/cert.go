package identity

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Certificate is an X.509-SVID with its private key, ready for TLS.
// A Certificate is immutable once built; rotation replaces it.
type Certificate struct {
	// ID is the identity the certificate was issued for.
	ID ID
	// TLS holds the chain (leaf first, without the root), the private key
	// and the parsed leaf, for tls.Config.GetCertificate and friends.
	TLS *tls.Certificate
	// Leaf is the parsed leaf (also TLS.Leaf).
	Leaf *x509.Certificate
	// Chain is the leaf followed by any intermediates, without the root.
	Chain []*x509.Certificate
	// Roots are the trust anchors of the mesh at the time of issue.
	Roots []*x509.Certificate
}

// NewCertificate assembles a Certificate and checks that it is a well-formed
// X.509-SVID for id: the leaf matches key, has exactly one URI SAN equal to
// id, is not a CA, and (when roots are given) chains to roots.
func NewCertificate(id ID, key crypto.Signer, chain, roots []*x509.Certificate) (*Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("identity: empty certificate chain")
	}
	leaf := chain[0]
	got, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("identity: leaf certificate for %s is not an X.509-SVID: %w", id, err)
	}
	if got.String() != id.String() {
		return nil, fmt.Errorf("identity: certificate was issued for %s, want %s", got, id)
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("identity: certificate for %s is a CA certificate; a leaf SVID must not be", id)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("identity: certificate for %s lacks the digitalSignature key usage", id)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("identity: certificate for %s does not match the private key that requested it", id)
	}
	if len(roots) > 0 {
		if err := chainsTo(chain, roots); err != nil {
			return nil, fmt.Errorf("identity: certificate for %s does not chain to the trust bundle: %w", id, err)
		}
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return &Certificate{
		ID:    id,
		TLS:   tc,
		Leaf:  leaf,
		Chain: append([]*x509.Certificate(nil), chain...),
		Roots: append([]*x509.Certificate(nil), roots...),
	}, nil
}

// ValidAt reports whether t is inside the leaf's validity period.
func (c *Certificate) ValidAt(t time.Time) bool {
	return !t.Before(c.Leaf.NotBefore) && !t.After(c.Leaf.NotAfter)
}

// RenewAt is when the certificate should be replaced: half-way through its
// lifetime.
func (c *Certificate) RenewAt() time.Time {
	return c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
}

// Serial returns the leaf serial number in lower-case hex.
func (c *Certificate) Serial() string { return c.Leaf.SerialNumber.Text(16) }

// ChainPEM returns the chain (leaf first) as concatenated PEM blocks.
func (c *Certificate) ChainPEM() []byte { return EncodeCertsPEM(c.Chain) }

// RootsPEM returns the trust anchors as concatenated PEM blocks.
func (c *Certificate) RootsPEM() []byte { return EncodeCertsPEM(c.Roots) }

// EncodeCertsPEM encodes certificates as concatenated CERTIFICATE blocks.
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// ParseCertsPEM parses every CERTIFICATE block in data; other blocks are an
// error. It fails if there is none.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("identity: unexpected PEM block %q, want CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("identity: parsing certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("identity: no CERTIFICATE PEM block found")
	}
	return out, nil
}

// chainsTo checks that chain (leaf first) links by signature to one of
// roots. Validity periods are not checked: whether a certificate is current
// is the caller's question, whether it belongs to this mesh is ours.
func chainsTo(chain, roots []*x509.Certificate) error {
	for i, c := range chain {
		for _, r := range roots {
			if c.Equal(r) || c.CheckSignatureFrom(r) == nil {
				return nil
			}
		}
		if i+1 < len(chain) {
			if err := c.CheckSignatureFrom(chain[i+1]); err != nil {
				return fmt.Errorf("certificate %d of the chain is not signed by the next: %w", i, err)
			}
		}
	}
	return errors.New("no certificate of the chain is signed by a root")
}
