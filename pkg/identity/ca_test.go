package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func mustID(t testing.TB, s string) ID {
	t.Helper()
	id, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newCA(t testing.TB, cfg LocalCAConfig) *LocalCA {
	t.Helper()
	ca, err := NewLocalCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// rawCSR builds a CSR from an arbitrary template (for the negative cases).
func rawCSR(t *testing.T, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestLocalCAIssuesSVID(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca := newCA(t, LocalCAConfig{TrustDomain: "cluster.local", Clock: func() time.Time { return now }})
	id := mustID(t, "spiffe://cluster.local/ns/shop/sa/cart")
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.CreateCertificate(context.Background(), csr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain has %d certificates, want 1 (leaf signed by the root)", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has non-URI SANs")
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("leaf IsCA=%v BasicConstraintsValid=%v, want false/true", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ExtKeyUsage = %v, want server+client auth", leaf.ExtKeyUsage)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %s is not a positive 128-bit number", leaf.SerialNumber)
	}
	if !leaf.NotAfter.Equal(now.Add(time.Hour)) || !leaf.NotBefore.Equal(now.Add(-certBackdate)) {
		t.Errorf("validity %s..%s, want %s..%s", leaf.NotBefore, leaf.NotAfter, now.Add(-certBackdate), now.Add(time.Hour))
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	got, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, ca.Roots()), x509svid.WithTime(now))
	if err != nil || got.String() != id.String() {
		t.Fatalf("x509svid.Verify = %v, %v", got, err)
	}
	// Serials are random.
	chain2, err := ca.CreateCertificate(context.Background(), csr, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if chain2[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two certificates got the same serial")
	}
}

func TestLocalCARejects(t *testing.T) {
	ca := newCA(t, LocalCAConfig{TrustDomain: "cluster.local"})
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	good := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
	other := mustID(t, "spiffe://other.td/ns/a/sa/b")
	u := func(s string) *url.URL {
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badSig := func() []byte {
		block, _ := pem.Decode(rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}}, key))
		block.Bytes[len(block.Bytes)-1] ^= 0xff
		return pem.EncodeToMemory(block)
	}()
	goodCSR := rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}}, key)

	tests := []struct {
		name     string
		csr      []byte
		ttl      time.Duration
		wantErr  string
		rejected bool // wraps ErrCSRRejected
	}{
		{name: "two URI SANs", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL(), u("spiffe://cluster.local/ns/a/sa/c")}}, key),
			wantErr: "2 URI SANs", rejected: true},
		{name: "DNS SAN", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}, DNSNames: []string{"x.example"}}, key),
			wantErr: "DNS SANs", rejected: true},
		{name: "IPv4 SAN", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, key),
			wantErr: "IP SANs", rejected: true},
		{name: "IPv6 SAN", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}, IPAddresses: []net.IP{net.ParseIP("fd00::1")}}, key),
			wantErr: "IP SANs", rejected: true},
		{name: "email SAN", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}, EmailAddresses: []string{"a@b.c"}}, key),
			wantErr: "e-mail SANs", rejected: true},
		{name: "no SAN", csr: rawCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key),
			wantErr: "no URI SAN", rejected: true},
		{name: "bad signature", csr: badSig, wantErr: "bad signature", rejected: true},
		{name: "other trust domain", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{other.URL()}}, key),
			wantErr: `trust domain "other.td"; this CA signs only for "cluster.local"`, rejected: true},
		{name: "not a workload path", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{u("spiffe://cluster.local/admin")}}, key),
			wantErr: "/ns/<namespace>/sa/<serviceaccount>", rejected: true},
		{name: "small RSA key", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}}, smallRSA),
			wantErr: "too small", rejected: true},
		{name: "P-224 key", csr: rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{good.URL()}}, p224),
			wantErr: "P-224 is not allowed", rejected: true},
		{name: "not PEM", csr: []byte("hello"), wantErr: "no PEM block", rejected: true},
		{name: "wrong PEM type", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), wantErr: "no PEM block", rejected: true},
		{name: "garbage DER", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), wantErr: "parsing", rejected: true},
		{name: "zero TTL", csr: goodCSR, ttl: -1, wantErr: "must be positive"},
		{name: "TTL above max", csr: goodCSR, ttl: DefaultMaxTTL + time.Second, wantErr: "exceeds the CA maximum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ttl := tt.ttl
			if ttl == 0 {
				ttl = time.Hour
			}
			chain, err := ca.CreateCertificate(context.Background(), tt.csr, ttl)
			if err == nil {
				t.Fatalf("CreateCertificate issued %v, want an error", chain[0].URIs)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrCSRRejected); got != tt.rejected {
				t.Errorf("errors.Is(err, ErrCSRRejected) = %v, want %v", got, tt.rejected)
			}
		})
	}
	t.Run("good CSR still accepted", func(t *testing.T) {
		if _, err := ca.CreateCertificate(context.Background(), goodCSR, time.Hour); err != nil {
			t.Fatal(err)
		}
	})
}

// makeIntermediate signs an intermediate CA with root, Istio plug-in style.
func makeIntermediate(t *testing.T, rootPEM, rootKeyPEM []byte, now time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	roots, err := ParseCertsPEM(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := ParsePrivateKeyPEM(rootKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, roots[0], key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestLocalCAPluggedIn(t *testing.T) {
	now := time.Now()
	rootPEM, rootKeyPEM, err := GenerateRoot("cluster.local", now, 24*time.Hour*365)
	if err != nil {
		t.Fatal(err)
	}
	interPEM, interKeyPEM := makeIntermediate(t, rootPEM, rootKeyPEM, now)
	otherRootPEM, _, err := GenerateRoot("cluster.local", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")

	t.Run("root signs directly", func(t *testing.T) {
		ca := newCA(t, LocalCAConfig{SigningCertPEM: rootPEM, SigningKeyPEM: rootKeyPEM})
		c, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Chain) != 1 || string(ca.RootsPEM()) != string(rootPEM) {
			t.Fatalf("chain %d certs; roots match=%v", len(c.Chain), string(ca.RootsPEM()) == string(rootPEM))
		}
	})
	t.Run("intermediate with cert-chain.pem", func(t *testing.T) {
		ca := newCA(t, LocalCAConfig{
			SigningCertPEM: interPEM, SigningKeyPEM: interKeyPEM,
			CertChainPEM: append(append([]byte{}, interPEM...), rootPEM...), RootCertPEM: rootPEM,
		})
		c, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Chain) != 2 || string(EncodeCertsPEM(c.Chain[1:])) != string(interPEM) {
			t.Fatalf("chain = %d certs, want leaf + intermediate (root excluded)", len(c.Chain))
		}
		td := spiffeid.RequireTrustDomainFromString("cluster.local")
		if _, _, err := x509svid.Verify(c.Chain, x509bundle.FromX509Authorities(td, ca.Roots())); err != nil {
			t.Fatal(err)
		}
	})
	tests := []struct {
		name    string
		cfg     LocalCAConfig
		wantErr string
	}{
		{name: "key does not match", cfg: LocalCAConfig{SigningCertPEM: interPEM, SigningKeyPEM: rootKeyPEM, RootCertPEM: rootPEM},
			wantErr: "does not match"},
		{name: "intermediate without root", cfg: LocalCAConfig{SigningCertPEM: interPEM, SigningKeyPEM: interKeyPEM},
			wantErr: "no root-cert.pem"},
		{name: "intermediate with wrong root", cfg: LocalCAConfig{SigningCertPEM: interPEM, SigningKeyPEM: interKeyPEM, RootCertPEM: otherRootPEM},
			wantErr: "does not chain to root-cert.pem"},
		{name: "key missing", cfg: LocalCAConfig{SigningCertPEM: rootPEM}, wantErr: "ca-key.pem"},
		{name: "bad trust domain", cfg: LocalCAConfig{TrustDomain: "Bad_TD"}, wantErr: "bad CA trust domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewLocalCA(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewLocalCA error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLocalCAExpiredCertificates(t *testing.T) {
	past := time.Now().Add(-48 * time.Hour).Truncate(time.Second) // certificates carry whole seconds
	ca := newCA(t, LocalCAConfig{Clock: func() time.Time { return past }})
	id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
	c, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.ValidAt(time.Now()) {
		t.Fatalf("certificate issued by a CA clocked 48h ago is valid now (%s..%s)", c.Leaf.NotBefore, c.Leaf.NotAfter)
	}
	c2, err := ca.IssueWithValidity(id, past, past.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Leaf.NotAfter.Equal(past.Add(time.Minute)) {
		t.Fatalf("NotAfter = %s", c2.Leaf.NotAfter)
	}
	if _, err := ca.IssueWithValidity(mustID(t, "spiffe://x.y/ns/a/sa/b"), past, past.Add(time.Minute)); err == nil {
		t.Fatal("IssueWithValidity signed another trust domain")
	}
}

func TestLocalCAClampsToSigningCertExpiry(t *testing.T) {
	now := time.Now()
	rootPEM, keyPEM, err := GenerateRoot("cluster.local", now, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t, LocalCAConfig{SigningCertPEM: rootPEM, SigningKeyPEM: keyPEM})
	c, err := ca.Issue(mustID(t, "spiffe://cluster.local/ns/a/sa/b"), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.NotAfter.After(ca.Roots()[0].NotAfter) {
		t.Fatalf("leaf outlives its CA: %s > %s", c.Leaf.NotAfter, ca.Roots()[0].NotAfter)
	}
}

func TestNewCertificateChecks(t *testing.T) {
	ca := newCA(t, LocalCAConfig{})
	other := newCA(t, LocalCAConfig{})
	id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
	c, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      ID
		key     crypto.Signer
		roots   []*x509.Certificate
		wantErr string
	}{
		{name: "ok", id: id, key: c.TLS.PrivateKey.(crypto.Signer), roots: ca.Roots()},
		{name: "wrong identity", id: mustID(t, "spiffe://cluster.local/ns/a/sa/c"), key: c.TLS.PrivateKey.(crypto.Signer), wantErr: "want spiffe://cluster.local/ns/a/sa/c"},
		{name: "wrong key", id: id, key: otherKey, wantErr: "does not match the private key"},
		{name: "wrong roots", id: id, key: c.TLS.PrivateKey.(crypto.Signer), roots: other.Roots(), wantErr: "does not chain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCertificate(tt.id, tt.key, c.Chain, tt.roots)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
