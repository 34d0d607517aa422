package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// Clock is the Manager's time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has elapsed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RealClock returns the wall clock.
func RealClock() Clock { return realClock{} }

// Defaults of ManagerConfig.
const (
	DefaultCertTTL      = 24 * time.Hour
	DefaultFetchTimeout = 30 * time.Second
	DefaultRetryBase    = time.Second
	DefaultRetryMax     = 5 * time.Minute
)

// ManagerConfig configures a Manager. Signer is required.
type ManagerConfig struct {
	// Signer is the CA.
	Signer Signer
	// TTL is the lifetime requested for each certificate (default 24h).
	TTL time.Duration
	// FetchTimeout bounds one CA round trip (default 30s).
	FetchTimeout time.Duration
	// RetryBase and RetryMax shape the capped exponential backoff after a
	// failed fetch (defaults 1s and 5m).
	RetryBase, RetryMax time.Duration
	// Clock defaults to RealClock().
	Clock Clock
	// Jitter returns a number in [0,1) used to spread retries
	// (default math/rand/v2.Float64).
	Jitter func() float64
	// Registerer, if set, receives the Manager's metrics (see metrics.go).
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default() tagged component=identity.
	Logger *slog.Logger
}

// Manager fetches, caches and rotates X.509-SVIDs, one per identity.
// Get fetches on first use; Run rotates every cached certificate at half of
// its lifetime and retries failures with capped, jittered exponential
// backoff. An expired certificate is never returned.
type Manager struct {
	cfg     ManagerConfig
	log     *slog.Logger
	metrics *metrics
	group   singleflight.Group
	wake    chan struct{}

	mu      sync.Mutex
	entries map[ID]*entry
	roots   []*x509.Certificate
}

type entry struct {
	cert     *Certificate // nil until the first successful fetch
	renewAt  time.Time    // next fetch by Run: half-life, or retry time
	failures int          // consecutive failed fetches
	lastErr  error
}

// NewManager validates cfg and returns a Manager. It starts nothing: call
// Run to rotate certificates.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Signer == nil {
		return nil, errors.New("identity: ManagerConfig.Signer is required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultCertTTL
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryBase {
		return nil, fmt.Errorf("identity: RetryMax %s is below RetryBase %s", cfg.RetryMax, cfg.RetryBase)
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock()
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "identity"),
		wake:    make(chan struct{}, 1),
		entries: map[ID]*entry{},
	}
	var err error
	if m.metrics, err = newMetrics(m, cfg.Registerer); err != nil {
		return nil, err
	}
	return m, nil
}

// Backoff returns the wait before retry number attempt (1 for the first
// retry): base·2^(attempt-1) capped at max, then scaled into [d/2, d) by
// jitter r in [0,1). It never exceeds max.
func Backoff(base, max time.Duration, attempt int, r float64) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(r*float64(d/2))
}

// Get returns a valid certificate for id, fetching one if none is cached.
// Concurrent callers for the same id share one CA request. While a failed
// fetch is backing off, Get fails fast with the last error.
func (m *Manager) Get(ctx context.Context, id ID) (*Certificate, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	e := m.entries[id]
	if e != nil && e.cert != nil && e.cert.ValidAt(now) {
		c := e.cert
		m.mu.Unlock()
		return c, nil
	}
	if e != nil && e.lastErr != nil && now.Before(e.renewAt) {
		err := e.lastErr
		retry := e.renewAt
		m.mu.Unlock()
		return nil, fmt.Errorf("identity: no valid certificate for %s (CA request failed, next retry at %s): %w", id, retry.Format(time.RFC3339), err)
	}
	m.mu.Unlock()

	// The fetch must not die with the first caller's context: others may
	// share it. It is bounded by FetchTimeout instead.
	fctx := context.WithoutCancel(ctx)
	ch := m.group.DoChan(id.String(), func() (any, error) {
		c, err := m.fetch(fctx, id)
		m.record(id, c, err, true)
		return c, err
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("identity: waiting for a certificate for %s: %w", id, ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Certificate), nil
	}
}

// TLSCertificate returns the tls.Certificate of Get(ctx, id), the shape
// hbone.DialerConfig.Certificate expects.
func (m *Manager) TLSCertificate(ctx context.Context, id ID) (*tls.Certificate, error) {
	c, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.TLS, nil
}

// GetCertificateFunc returns a tls.Config.GetCertificate callback that
// serves id's current certificate (HBONE sends no SNI: a listener serves one
// identity).
func (m *Manager) GetCertificateFunc(id ID) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		ctx := context.Background()
		if hello != nil && hello.Context() != nil {
			ctx = hello.Context()
		}
		return m.TLSCertificate(ctx, id)
	}
}

// Forget drops id: its certificate is no longer rotated or served.
func (m *Manager) Forget(id ID) {
	m.mu.Lock()
	delete(m.entries, id)
	m.mu.Unlock()
	m.poke()
}

// Roots returns the trust anchors from the most recent successful fetch
// (nil before the first one).
func (m *Manager) Roots() []*x509.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.roots)
}

// Run rotates certificates until ctx is done. It returns nil after ctx is
// cancelled, once every goroutine it started has stopped.
func (m *Manager) Run(ctx context.Context) error {
	for {
		now := m.cfg.Clock.Now()
		id, at, ok := m.nextDue()
		if ok && !at.After(now) {
			c, err := m.fetch(ctx, id)
			if ctx.Err() != nil {
				return nil
			}
			m.record(id, c, err, false)
			continue
		}
		var timer <-chan time.Time
		if ok {
			timer = m.cfg.Clock.After(at.Sub(now))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.wake:
		case <-timer:
		}
	}
}

// CertInfo describes one cached certificate for admin output. It never
// holds key material.
type CertInfo struct {
	Identity  string
	Serial    string // hex; empty if no certificate has been issued yet
	NotBefore time.Time
	NotAfter  time.Time
	RenewAt   time.Time // next rotation or retry
	ChainPEM  []byte    // leaf first, without the root
	RootsPEM  []byte
	LastError string // last fetch error, empty after a success
}

// Snapshot lists every identity the Manager holds, sorted by identity.
func (m *Manager) Snapshot() []CertInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]CertInfo, 0, len(m.entries))
	for id, e := range m.entries {
		ci := CertInfo{Identity: id.String(), RenewAt: e.renewAt}
		if e.lastErr != nil {
			ci.LastError = e.lastErr.Error()
		}
		if c := e.cert; c != nil {
			ci.Serial = c.Serial()
			ci.NotBefore, ci.NotAfter = c.Leaf.NotBefore, c.Leaf.NotAfter
			ci.ChainPEM, ci.RootsPEM = c.ChainPEM(), c.RootsPEM()
		}
		out = append(out, ci)
	}
	slices.SortFunc(out, func(a, b CertInfo) int {
		switch {
		case a.Identity < b.Identity:
			return -1
		case a.Identity > b.Identity:
			return 1
		}
		return 0
	})
	return out
}

// fetch asks the CA for a fresh certificate for id with a new key.
func (m *Manager) fetch(ctx context.Context, id ID) (*Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.FetchTimeout)
	defer cancel()
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(id, key)
	if err != nil {
		return nil, err
	}
	chain, err := m.cfg.Signer.CreateCertificate(ctx, csr, m.cfg.TTL)
	if err != nil {
		return nil, fmt.Errorf("identity: CA did not sign a certificate for %s: %w", id, err)
	}
	roots, err := m.cfg.Signer.TrustBundle(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity: fetching the trust bundle: %w", err)
	}
	c, err := NewCertificate(id, key, chain, roots)
	if err != nil {
		return nil, err
	}
	if now := m.cfg.Clock.Now(); !c.ValidAt(now) {
		return nil, fmt.Errorf("identity: CA returned a certificate for %s valid %s..%s, which does not cover now (%s): check the clocks of CA and node",
			id, c.Leaf.NotBefore.Format(time.RFC3339), c.Leaf.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return c, nil
}

// record stores the outcome of a fetch. create says whether a forgotten or
// unknown id may be (re-)added; rotations of a forgotten id are dropped.
func (m *Manager) record(id ID, c *Certificate, err error, create bool) {
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	e := m.entries[id]
	if e == nil {
		if !create {
			m.mu.Unlock()
			return
		}
		e = &entry{}
		m.entries[id] = e
	}
	if err != nil {
		e.failures++
		e.lastErr = err
		e.renewAt = now.Add(Backoff(m.cfg.RetryBase, m.cfg.RetryMax, e.failures, m.cfg.Jitter()))
		failures, retry := e.failures, e.renewAt
		m.mu.Unlock()
		m.metrics.fetch(false)
		m.log.Warn("certificate fetch failed", "identity", id.String(), "failures", failures, "retry_at", retry, "error", err)
		m.poke()
		return
	}
	if e.cert == nil || !c.Leaf.NotAfter.Before(e.cert.Leaf.NotAfter) {
		e.cert = c
	}
	e.failures, e.lastErr = 0, nil
	e.renewAt = e.cert.RenewAt()
	m.roots = c.Roots
	m.mu.Unlock()
	m.metrics.fetch(true)
	m.log.Debug("certificate issued", "identity", id.String(), "serial", c.Serial(), "not_after", c.Leaf.NotAfter)
	m.poke()
}

// nextDue returns the identity with the earliest renewAt.
func (m *Manager) nextDue() (ID, time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var (
		best ID
		at   time.Time
		ok   bool
	)
	for id, e := range m.entries {
		if !ok || e.renewAt.Before(at) {
			best, at, ok = id, e.renewAt, true
		}
	}
	return best, at, ok
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// expiries returns seconds until expiry per identity with a certificate.
func (m *Manager) expiries() map[string]float64 {
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]float64, len(m.entries))
	for id, e := range m.entries {
		if e.cert != nil {
			out[id.String()] = e.cert.Leaf.NotAfter.Sub(now).Seconds()
		}
	}
	return out
}
