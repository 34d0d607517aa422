package servingcert

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ambit.dev/pkg/identity"
)

func TestNames(t *testing.T) {
	tests := []struct {
		name    string
		extra   []string
		wantDNS []string
		wantIPs []string
		wantErr string
	}{
		{name: "service names only",
			wantDNS: []string{"ambit-controlplane.ambit-system.svc", "ambit-controlplane.ambit-system.svc.cluster.local"}},
		{name: "extra DNS name",
			extra:   []string{"cp.example.com"},
			wantDNS: []string{"ambit-controlplane.ambit-system.svc", "ambit-controlplane.ambit-system.svc.cluster.local", "cp.example.com"}},
		{name: "IPv4 and IPv6 become IP SANs",
			extra:   []string{"10.96.0.15", "fd00:10:96::f"},
			wantDNS: []string{"ambit-controlplane.ambit-system.svc", "ambit-controlplane.ambit-system.svc.cluster.local"},
			wantIPs: []string{"10.96.0.15", "fd00:10:96::f"}},
		{name: "duplicates dropped",
			extra:   []string{"ambit-controlplane.ambit-system.svc", "10.0.0.1", "10.0.0.1", "::1", "0:0:0:0:0:0:0:1"},
			wantDNS: []string{"ambit-controlplane.ambit-system.svc", "ambit-controlplane.ambit-system.svc.cluster.local"},
			wantIPs: []string{"10.0.0.1", "::1"}},
		{name: "invalid name", extra: []string{"no spaces allowed"}, wantErr: "neither an IP address nor a DNS name"},
		{name: "wildcard refused", extra: []string{"*.example.com"}, wantErr: "neither an IP address nor a DNS name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dns, ips, err := Names("ambit-controlplane", "ambit-system", "cluster.local", tc.extra...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Names = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gotIPs []string
			for _, ip := range ips {
				gotIPs = append(gotIPs, ip.String())
			}
			if !slices.Equal(dns, tc.wantDNS) || !slices.Equal(gotIPs, tc.wantIPs) {
				t.Errorf("Names = %q %q, want %q %q", dns, gotIPs, tc.wantDNS, tc.wantIPs)
			}
		})
	}
	if _, _, err := Names("", "ns", "cluster.local"); err == nil {
		t.Error("Names accepted an empty service name")
	}
}

// testSigner is a root CA for Issue.
func testSigner(t *testing.T, now time.Time, validity time.Duration) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	certPEM, keyPEM, err := identity.GenerateRoot("cluster.local", now, validity)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := identity.ParseCertsPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0], key
}

func TestIssue(t *testing.T) {
	now := time.Now()
	root, key := testSigner(t, now, 365*24*time.Hour)
	dns, ips, err := Names("ambit-controlplane", "ambit-system", "cluster.local", "192.0.2.10", "2001:db8::10")
	if err != nil {
		t.Fatal(err)
	}
	nb, na := Validity(now, 24*time.Hour)
	c, err := Issue(root, key, nil, Request{DNSNames: dns, IPs: ips, NotBefore: nb, NotAfter: na})
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("leaf IsCA=%v KeyUsage=%v ExtKeyUsage=%v; want a serverAuth, digitalSignature non-CA certificate", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if !leaf.NotAfter.Equal(na.Truncate(time.Second)) {
		t.Errorf("NotAfter = %s, want %s", leaf.NotAfter, na)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	for _, name := range []string{"ambit-controlplane.ambit-system.svc", "ambit-controlplane.ambit-system.svc.cluster.local", "192.0.2.10", "2001:db8::10"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("does not verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "evil.example.com", Roots: pool}); err == nil {
		t.Error("verifies for a name it was not issued for")
	}
	// The key in the tls.Certificate matches the leaf.
	if pub, ok := c.PrivateKey.(crypto.Signer); !ok || !pub.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Error("private key does not match the leaf")
	}

	t.Run("cut to the CA's expiry", func(t *testing.T) {
		short, skey := testSigner(t, now, time.Hour)
		c, err := Issue(short, skey, nil, Request{DNSNames: dns, NotBefore: nb, NotAfter: na})
		if err != nil {
			t.Fatal(err)
		}
		if !c.Leaf.NotAfter.Equal(short.NotAfter) {
			t.Errorf("NotAfter = %s, want the CA's %s", c.Leaf.NotAfter, short.NotAfter)
		}
	})
	t.Run("no names", func(t *testing.T) {
		if _, err := Issue(root, key, nil, Request{NotBefore: nb, NotAfter: na}); err == nil {
			t.Error("Issue without names succeeded")
		}
	})
	t.Run("expired CA", func(t *testing.T) {
		old, okey := testSigner(t, now.Add(-48*time.Hour), time.Hour)
		if _, err := Issue(old, okey, nil, Request{DNSNames: dns, NotBefore: nb, NotAfter: na}); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("Issue with an expired CA = %v, want an error mentioning expiry", err)
		}
	})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// fakeIssuer issues certificates from a test root with the fake clock,
// counting calls; fail makes it return an error.
type fakeIssuer struct {
	clock *fakeClock
	root  *x509.Certificate
	key   crypto.Signer
	ready chan struct{}

	mu    sync.Mutex
	calls int
	names []string
	fail  error
}

func (f *fakeIssuer) Ready() <-chan struct{} { return f.ready }

func (f *fakeIssuer) ServingCertificate(names ...string) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.names = names
	if f.fail != nil {
		return nil, f.fail
	}
	dns, ips, err := Names("ambit-controlplane", "ambit-system", "cluster.local", names...)
	if err != nil {
		return nil, err
	}
	nb, na := Validity(f.clock.Now(), 24*time.Hour)
	return Issue(f.root, f.key, nil, Request{DNSNames: dns, IPs: ips, NotBefore: nb, NotAfter: na})
}

func (f *fakeIssuer) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

func newFakeIssuer(t *testing.T) *fakeIssuer {
	clock := &fakeClock{now: time.Now()}
	root, key := testSigner(t, clock.Now().Add(-time.Hour), 365*24*time.Hour)
	return &fakeIssuer{clock: clock, root: root, key: key, ready: make(chan struct{})}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRotatorRotation(t *testing.T) {
	iss := newFakeIssuer(t)
	r := NewRotator(iss, RotatorConfig{Names: []string{"10.0.0.1", "fd00::1"}, Clock: iss.clock.Now}, discard())

	if _, err := r.GetCertificate(nil); err == nil || !strings.Contains(err.Error(), "no serving certificate yet") {
		t.Fatalf("GetCertificate before the first issue = %v, want a 'not yet' error", err)
	}
	if err := r.rotateIfDue(); err != nil {
		t.Fatal(err)
	}
	first, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(iss.names, []string{"10.0.0.1", "fd00::1"}) {
		t.Errorf("issuer got names %q, want the configured ones", iss.names)
	}
	select {
	case <-r.Ready():
	default:
		t.Error("Ready not closed after the first certificate")
	}

	// Before half-life: nothing happens.
	iss.clock.Set(RenewAt(first.Leaf).Add(-time.Second))
	if err := r.rotateIfDue(); err != nil || iss.count() != 1 {
		t.Fatalf("rotateIfDue before half-life: err=%v calls=%d, want no new certificate", err, iss.count())
	}
	// At half-life: a new certificate.
	iss.clock.Set(RenewAt(first.Leaf))
	if err := r.rotateIfDue(); err != nil || iss.count() != 2 {
		t.Fatalf("rotateIfDue at half-life: err=%v calls=%d, want a new certificate", err, iss.count())
	}
	second, _ := r.GetCertificate(nil)
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Error("GetCertificate still returns the old certificate after rotation")
	}

	// Renewal keeps failing until the certificate expires: it is not served.
	iss.mu.Lock()
	iss.fail = errors.New("CA down")
	iss.mu.Unlock()
	iss.clock.Set(second.Leaf.NotAfter.Add(time.Second))
	if err := r.rotateIfDue(); err == nil {
		t.Fatal("rotateIfDue hid the issuer's error")
	}
	if c, err := r.GetCertificate(nil); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("GetCertificate with an expired certificate = %v, %v; want an error", c, err)
	}
}

func TestRotatorRun(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	defer goleak.VerifyNone(t, ignore)

	iss := newFakeIssuer(t)
	r := NewRotator(iss, RotatorConfig{Clock: iss.clock.Now}, discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	// Nothing is issued until the issuer is ready.
	select {
	case <-r.Ready():
		t.Fatal("ready before the issuer was")
	default:
	}
	close(iss.ready)
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("Run returned %v", err)
	}
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.TLSConfig(); got.MinVersion != tls.VersionTLS12 || got.GetCertificate == nil {
		t.Errorf("TLSConfig = %+v", got)
	}
	if !slices.Contains(c.Leaf.DNSNames, "ambit-controlplane.ambit-system.svc") {
		t.Errorf("DNS names %q lack the Service name", c.Leaf.DNSNames)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil on cancel", err)
	}
}

func TestRotatorRunCancelledBeforeReady(t *testing.T) {
	iss := newFakeIssuer(t)
	r := NewRotator(iss, RotatorConfig{}, discard())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if iss.count() != 0 {
		t.Error("issued a certificate although the issuer never became ready")
	}
}
