package identity

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Signer is what the certificate Manager needs from a CA: signing CSRs and
// the current trust bundle. The control plane's gRPC CA client and LocalCA
// implement it.
type Signer interface {
	// CreateCertificate signs a PEM CSR for a certificate valid for ttl and
	// returns the chain, leaf first, without the root.
	CreateCertificate(ctx context.Context, csrPEM []byte, ttl time.Duration) ([]*x509.Certificate, error)
	// TrustBundle returns the mesh trust anchors (roots).
	TrustBundle(ctx context.Context) ([]*x509.Certificate, error)
}

// Defaults of LocalCA.
const (
	DefaultMaxTTL       = 30 * 24 * time.Hour
	DefaultRootValidity = 10 * 365 * 24 * time.Hour
	// certBackdate is subtracted from NotBefore so a peer whose clock is a
	// little behind still accepts a freshly issued certificate.
	certBackdate = time.Minute
)

// LocalCAConfig configures an in-process CA. With no PEM material it
// generates a fresh ECDSA P-256 root. Otherwise it uses the Istio plug-in
// layout: SigningCertPEM/SigningKeyPEM (ca-cert.pem, ca-key.pem) sign leaves;
// CertChainPEM (cert-chain.pem) lists the signing cert and any intermediates;
// RootCertPEM (root-cert.pem) holds the trust anchors.
type LocalCAConfig struct {
	// TrustDomain is the only trust domain the CA signs for
	// (default DefaultTrustDomain).
	TrustDomain    string
	SigningCertPEM []byte
	SigningKeyPEM  []byte
	CertChainPEM   []byte
	RootCertPEM    []byte
	// MaxTTL caps the requested lifetime (default DefaultMaxTTL).
	MaxTTL time.Duration
	// Clock is the CA's notion of now (default time.Now). Tests set it in
	// the past to issue certificates that are already expired.
	Clock func() time.Time
}

// LocalCA is an in-process CA that issues X.509-SVIDs: for tests, the
// stand-alone mode, and as the signing core of the control plane CA.
type LocalCA struct {
	td           spiffeid.TrustDomain
	signCert     *x509.Certificate
	signKey      crypto.Signer
	intermediate []*x509.Certificate // between leaf and root, nearest first
	roots        []*x509.Certificate
	maxTTL       time.Duration
	now          func() time.Time
}

var _ Signer = (*LocalCA)(nil)

// NewLocalCA validates cfg and returns a CA; it generates a root when cfg has
// no PEM material.
func NewLocalCA(cfg LocalCAConfig) (*LocalCA, error) {
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil || td.Name() != cfg.TrustDomain {
		return nil, fmt.Errorf("identity: bad CA trust domain %q: %v", cfg.TrustDomain, err)
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	ca := &LocalCA{td: td, maxTTL: cfg.MaxTTL, now: cfg.Clock}

	if len(cfg.SigningCertPEM) == 0 && len(cfg.SigningKeyPEM) == 0 {
		certPEM, keyPEM, err := GenerateRoot(cfg.TrustDomain, cfg.Clock(), DefaultRootValidity)
		if err != nil {
			return nil, err
		}
		cfg.SigningCertPEM, cfg.SigningKeyPEM = certPEM, keyPEM
	}
	certs, err := ParseCertsPEM(cfg.SigningCertPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: CA signing certificate (ca-cert.pem): %w", err)
	}
	ca.signCert = certs[0]
	if !ca.signCert.IsCA || ca.signCert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("identity: CA signing certificate (ca-cert.pem) is not a CA certificate with the keyCertSign usage")
	}
	if ca.signKey, err = ParsePrivateKeyPEM(cfg.SigningKeyPEM); err != nil {
		return nil, fmt.Errorf("identity: CA signing key (ca-key.pem): %w", err)
	}
	pub, ok := ca.signKey.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.signCert.PublicKey) {
		return nil, errors.New("identity: CA signing key (ca-key.pem) does not match the signing certificate (ca-cert.pem)")
	}

	selfSigned := func(c *x509.Certificate) bool { return c.CheckSignatureFrom(c) == nil }
	if len(cfg.RootCertPEM) > 0 {
		if ca.roots, err = ParseCertsPEM(cfg.RootCertPEM); err != nil {
			return nil, fmt.Errorf("identity: CA roots (root-cert.pem): %w", err)
		}
	} else if selfSigned(ca.signCert) {
		ca.roots = []*x509.Certificate{ca.signCert}
	} else {
		return nil, errors.New("identity: the CA signing certificate is an intermediate but no root-cert.pem was given")
	}
	chain := []*x509.Certificate{ca.signCert}
	if len(cfg.CertChainPEM) > 0 {
		if chain, err = ParseCertsPEM(cfg.CertChainPEM); err != nil {
			return nil, fmt.Errorf("identity: CA chain (cert-chain.pem): %w", err)
		}
	}
	for _, c := range chain {
		if !selfSigned(c) {
			ca.intermediate = append(ca.intermediate, c)
		}
	}
	// The signing certificate must chain to the roots.
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range ca.roots {
		rootPool.AddCert(r)
	}
	for _, c := range ca.intermediate {
		interPool.AddCert(c)
	}
	if _, err := ca.signCert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: interPool, CurrentTime: cfg.Clock(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("identity: CA signing certificate does not chain to root-cert.pem (check cert-chain.pem): %w", err)
	}
	return ca, nil
}

// GenerateRoot creates a self-signed ECDSA P-256 root for trust domain td,
// valid from now for validity, and returns it and its key as PEM.
func GenerateRoot(td string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{td}, CommonName: "Ambit root CA"},
		NotBefore:             now.Add(-certBackdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: creating root certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: encoding root key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// ParsePrivateKeyPEM parses a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) private key.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q, want a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	return s, nil
}

// TrustDomain returns the trust domain the CA signs for.
func (ca *LocalCA) TrustDomain() string { return ca.td.Name() }

// Roots returns the CA's trust anchors.
func (ca *LocalCA) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.roots...)
}

// RootsPEM returns the trust anchors as PEM (root-cert.pem).
func (ca *LocalCA) RootsPEM() []byte { return EncodeCertsPEM(ca.roots) }

// TrustBundle implements Signer.
func (ca *LocalCA) TrustBundle(context.Context) ([]*x509.Certificate, error) {
	return ca.Roots(), nil
}

// CreateCertificate implements Signer: it validates the CSR (see ParseCSR),
// refuses identities outside the CA's trust domain, and issues a leaf valid
// from now (minus a minute of clock-skew allowance) for ttl, never beyond
// the signing certificate's own expiry.
func (ca *LocalCA) CreateCertificate(ctx context.Context, csrPEM []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("identity: requested TTL %s must be positive", ttl)
	}
	if ttl > ca.maxTTL {
		return nil, fmt.Errorf("identity: requested TTL %s exceeds the CA maximum %s", ttl, ca.maxTTL)
	}
	csr, id, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if id.TrustDomain != ca.td.Name() {
		return nil, fmt.Errorf("%w: identity %s is in trust domain %q; this CA signs only for %q", ErrCSRRejected, id, id.TrustDomain, ca.td.Name())
	}
	now := ca.now()
	return ca.sign(id, csr.PublicKey, now.Add(-certBackdate), now.Add(ttl))
}

// Issue generates a key and returns a certificate for id valid for ttl from
// the CA's clock: a shortcut for tests and the stand-alone mode.
func (ca *LocalCA) Issue(id ID, ttl time.Duration) (*Certificate, error) {
	now := ca.now()
	return ca.IssueWithValidity(id, now.Add(-certBackdate), now.Add(ttl))
}

// IssueWithValidity issues a certificate for id with exactly the given
// validity period, which may lie in the past (expired certificates for
// tests). It applies the same trust-domain rule as CreateCertificate.
func (ca *LocalCA) IssueWithValidity(id ID, notBefore, notAfter time.Time) (*Certificate, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if id.TrustDomain != ca.td.Name() {
		return nil, fmt.Errorf("identity: identity %s is in trust domain %q; this CA signs only for %q", id, id.TrustDomain, ca.td.Name())
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	chain, err := ca.sign(id, key.Public(), notBefore, notAfter)
	if err != nil {
		return nil, err
	}
	return NewCertificate(id, key, chain, ca.roots)
}

func (ca *LocalCA) sign(id ID, pub crypto.PublicKey, notBefore, notAfter time.Time) ([]*x509.Certificate, error) {
	if notAfter.After(ca.signCert.NotAfter) {
		notAfter = ca.signCert.NotAfter
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("identity: empty validity period %s..%s (has the CA certificate expired?)", notBefore, notAfter)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.signCert, pub, ca.signKey)
	if err != nil {
		return nil, fmt.Errorf("identity: signing certificate for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: parsing issued certificate: %w", err)
	}
	return append([]*x509.Certificate{leaf}, ca.intermediate...), nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("identity: generating serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
