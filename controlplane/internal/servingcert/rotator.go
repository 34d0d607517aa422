package servingcert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Issuer issues serving certificates: the mesh CA (ca.Server).
type Issuer interface {
	// Ready is closed once the issuer can sign.
	Ready() <-chan struct{}
	// ServingCertificate issues a certificate for the control plane's
	// Service names plus names (DNS names or IP addresses).
	ServingCertificate(names ...string) (*tls.Certificate, error)
}

// Defaults of RotatorConfig.
const (
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = time.Minute
	DefaultCheckInterval = time.Minute
)

// RotatorConfig configures a Rotator. Every field is optional.
type RotatorConfig struct {
	// Names are extra DNS names or IP addresses for the certificate.
	Names []string
	// RetryBase and RetryMax shape the exponential backoff after a failed
	// issue (defaults 1s and 1m).
	RetryBase, RetryMax time.Duration
	// CheckInterval bounds how long Run sleeps between checks, so a clock
	// jump (suspend, NTP step) delays renewal at most this long (default 1m).
	CheckInterval time.Duration
	// Clock is the Rotator's notion of now (default time.Now).
	Clock func() time.Time
}

// Rotator holds the current serving certificate and replaces it at half of
// its lifetime. Use GetCertificate (or TLSConfig) in the TLS servers.
type Rotator struct {
	issuer Issuer
	cfg    RotatorConfig
	log    *slog.Logger

	cur       atomic.Pointer[tls.Certificate]
	ready     chan struct{}
	readyOnce sync.Once
}

// NewRotator returns a Rotator for issuer; Run issues the first
// certificate.
func NewRotator(issuer Issuer, cfg RotatorConfig, log *slog.Logger) *Rotator {
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryBase)
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Rotator{issuer: issuer, cfg: cfg, log: log, ready: make(chan struct{})}
}

// Run waits for the issuer, issues the first certificate and renews it
// until ctx ends; failures are logged and retried with backoff. It returns
// nil when ctx is cancelled, having stopped everything it started.
func (r *Rotator) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-r.issuer.Ready():
	}
	backoff := r.cfg.RetryBase
	for {
		wait := r.cfg.CheckInterval
		if err := r.rotateIfDue(); err != nil {
			r.log.Warn("issuing the serving certificate failed; retrying", "err", err, "retryIn", backoff)
			wait = backoff
			backoff = min(2*backoff, r.cfg.RetryMax)
		} else {
			backoff = r.cfg.RetryBase
			if c := r.cur.Load(); c != nil {
				wait = min(wait, max(RenewAt(c.Leaf).Sub(r.cfg.Clock()), 0))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// rotateIfDue issues a certificate if there is none or the current one has
// reached half of its lifetime.
func (r *Rotator) rotateIfDue() error {
	if c := r.cur.Load(); c != nil && r.cfg.Clock().Before(RenewAt(c.Leaf)) {
		return nil
	}
	c, err := r.issuer.ServingCertificate(r.cfg.Names...)
	if err != nil {
		return err
	}
	if c == nil || len(c.Certificate) == 0 {
		return errors.New("servingcert: the issuer returned an empty certificate")
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("servingcert: parsing the issued certificate: %w", err)
		}
	}
	r.cur.Store(c)
	r.readyOnce.Do(func() { close(r.ready) })
	r.log.Info("issued the serving certificate", "dnsNames", c.Leaf.DNSNames, "ips", c.Leaf.IPAddresses,
		"notAfter", c.Leaf.NotAfter, "renewAt", RenewAt(c.Leaf))
	return nil
}

// Ready is closed once the first certificate has been issued.
func (r *Rotator) Ready() <-chan struct{} { return r.ready }

// Current returns the current certificate, or nil before the first one.
func (r *Rotator) Current() *tls.Certificate { return r.cur.Load() }

// GetCertificate is for tls.Config.GetCertificate. It never returns an
// expired certificate.
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := r.cur.Load()
	if c == nil {
		return nil, errors.New("servingcert: no serving certificate yet (is the CA root loaded? see the log of the ca component)")
	}
	if now := r.cfg.Clock(); now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("servingcert: the serving certificate expired at %s and could not be renewed (see the log of the servingcert component)", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return c, nil
}

// TLSConfig returns a server TLS configuration (TLS 1.2+, HTTP/2) that
// serves the current certificate.
func (r *Rotator) TLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: r.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
	}
}
