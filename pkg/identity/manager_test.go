package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a hand-driven Clock. Waiters fire when Set moves time to or
// past their deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	at := c.now.Add(d)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: at, ch: ch})
	return ch
}

// Set moves the clock to t and fires every waiter that is due.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// fakeSigner wraps a LocalCA, counts calls, and can fail or block.
type fakeSigner struct {
	ca *LocalCA

	mu    sync.Mutex
	calls int
	err   error
	block chan struct{}
}

func (s *fakeSigner) CreateCertificate(ctx context.Context, csrPEM []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	s.mu.Lock()
	s.calls++
	err, block := s.err, s.block
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	return s.ca.CreateCertificate(ctx, csrPEM, ttl)
}

func (s *fakeSigner) TrustBundle(ctx context.Context) ([]*x509.Certificate, error) {
	return s.ca.TrustBundle(ctx)
}

func (s *fakeSigner) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *fakeSigner) SetErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

var t0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// setup builds a fake clock at t0, a LocalCA on that clock and a Manager.
func setup(t *testing.T, mod func(*ManagerConfig)) (*fakeClock, *fakeSigner, *Manager) {
	t.Helper()
	clk := newFakeClock(t0)
	sg := &fakeSigner{ca: newCA(t, LocalCAConfig{Clock: clk.Now})}
	cfg := ManagerConfig{Signer: sg, TTL: time.Hour, Clock: clk, Logger: quietLogger(),
		RetryBase: time.Second, RetryMax: 8 * time.Second, Jitter: func() float64 { return 0.5 }}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return clk, sg, m
}

// startRun runs m.Run and returns a function that stops it and checks that
// it returned nil.
func startRun(t *testing.T, m *Manager) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}
}

func TestBackoff(t *testing.T) {
	base, max := time.Second, 30*time.Second
	tests := []struct {
		name    string
		attempt int
		r       float64
		want    time.Duration
	}{
		{name: "first retry, no jitter", attempt: 1, r: 0, want: 500 * time.Millisecond},
		{name: "first retry, full jitter", attempt: 1, r: 0.999999, want: 999999500 * time.Nanosecond},
		{name: "third retry", attempt: 3, r: 0.5, want: 3 * time.Second},
		{name: "at the cap", attempt: 6, r: 0, want: 15 * time.Second},
		{name: "far past the cap", attempt: 200, r: 0.999999, want: 29999985 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Backoff(base, max, tt.attempt, tt.r)
			if got != tt.want {
				t.Fatalf("Backoff(%d, %v) = %s, want %s", tt.attempt, tt.r, got, tt.want)
			}
			if got > max {
				t.Fatalf("Backoff exceeded the cap: %s > %s", got, max)
			}
		})
	}
}

func TestNewManagerValidates(t *testing.T) {
	sg := &fakeSigner{ca: newCA(t, LocalCAConfig{})}
	tests := []struct {
		name    string
		cfg     ManagerConfig
		wantErr string
	}{
		{name: "no signer", cfg: ManagerConfig{}, wantErr: "Signer is required"},
		{name: "max below base", cfg: ManagerConfig{Signer: sg, RetryBase: time.Minute, RetryMax: time.Second}, wantErr: "below RetryBase"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewManager(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewManager error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("duplicate registration", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := NewManager(ManagerConfig{Signer: sg, Registerer: reg}); err != nil {
			t.Fatal(err)
		}
		if _, err := NewManager(ManagerConfig{Signer: sg, Registerer: reg}); err == nil || !strings.Contains(err.Error(), "registering metrics") {
			t.Fatalf("second registration error = %v", err)
		}
	})
}

func TestManagerSharesOneFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, sg, m := setup(t, nil)
		sg.block = make(chan struct{})
		id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")

		const n = 20
		results := make(chan *Certificate, n)
		for range n {
			go func() {
				c, err := m.Get(context.Background(), id)
				if err != nil {
					t.Error(err)
				}
				results <- c
			}()
		}
		// A caller that gives up does not cancel the shared fetch.
		ctx, cancel := context.WithCancel(context.Background())
		quit := make(chan error, 1)
		go func() { _, err := m.Get(ctx, id); quit <- err }()

		synctest.Wait() // every caller is waiting
		if got := sg.Calls(); got != 1 {
			t.Fatalf("%d concurrent callers made %d CA requests, want 1", n+1, got)
		}
		cancel()
		if err := <-quit; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Get returned %v, want context.Canceled", err)
		}
		close(sg.block)
		first := <-results
		for range n - 1 {
			if c := <-results; c != first {
				t.Fatal("callers received different certificates")
			}
		}
		if c, err := m.Get(context.Background(), id); err != nil || c != first {
			t.Fatalf("cached Get = %v, %v", c, err)
		}
		if got := sg.Calls(); got != 1 {
			t.Fatalf("CA requests = %d after the cache was warm, want 1", got)
		}
	})
}

func TestManagerRotatesAtHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk, sg, m := setup(t, nil)
		id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
		c1, err := m.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		half := c1.Leaf.NotBefore.Add(c1.Leaf.NotAfter.Sub(c1.Leaf.NotBefore) / 2)
		if !c1.RenewAt().Equal(half) {
			t.Fatalf("RenewAt = %s, want half-life %s", c1.RenewAt(), half)
		}
		stop := startRun(t, m)
		defer stop()
		synctest.Wait()

		clk.Set(half.Add(-time.Second))
		synctest.Wait()
		if got := sg.Calls(); got != 1 {
			t.Fatalf("rotated before half-life: %d CA requests", got)
		}
		if c, _ := m.Get(context.Background(), id); c != c1 {
			t.Fatal("certificate changed before half-life")
		}

		clk.Set(half)
		synctest.Wait()
		if got := sg.Calls(); got != 2 {
			t.Fatalf("CA requests at half-life = %d, want 2", got)
		}
		c2, err := m.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if c2.Serial() == c1.Serial() {
			t.Fatal("Get still returns the old certificate after rotation")
		}
		if c2.TLS.PrivateKey == c1.TLS.PrivateKey {
			t.Fatal("rotation reused the private key")
		}
		if !c2.RenewAt().After(half) {
			t.Fatalf("next rotation %s is not after %s", c2.RenewAt(), half)
		}
	})
}

func TestManagerKeepsCertWhileCAFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk, sg, m := setup(t, func(c *ManagerConfig) { c.Jitter = func() float64 { return 0.999 } })
		id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
		c1, err := m.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		stop := startRun(t, m)
		defer stop()
		synctest.Wait()

		sg.SetErr(errors.New("CA unavailable"))
		next := c1.RenewAt()
		var prev time.Duration
		for attempt := 1; attempt <= 10; attempt++ {
			clk.Set(next)
			synctest.Wait()
			if got := sg.Calls(); got != 1+attempt {
				t.Fatalf("attempt %d: %d CA requests, want %d", attempt, got, 1+attempt)
			}
			if c, err := m.Get(context.Background(), id); err != nil || c != c1 {
				t.Fatalf("attempt %d: Get = %v, %v; want the old, still valid certificate", attempt, c, err)
			}
			snap := m.Snapshot()
			if len(snap) != 1 || !strings.Contains(snap[0].LastError, "CA unavailable") {
				t.Fatalf("snapshot = %+v, want the CA error", snap)
			}
			delay := snap[0].RenewAt.Sub(clk.Now())
			if delay > 8*time.Second {
				t.Fatalf("attempt %d: retry in %s exceeds the cap 8s", attempt, delay)
			}
			if delay < prev {
				t.Fatalf("attempt %d: retry delay shrank from %s to %s", attempt, prev, delay)
			}
			if want := Backoff(time.Second, 8*time.Second, attempt, 0.999); delay != want {
				t.Fatalf("attempt %d: retry in %s, want %s", attempt, delay, want)
			}
			prev = delay
			next = snap[0].RenewAt
		}
		if prev < 7*time.Second {
			t.Fatalf("after 10 failures the delay is %s, want it at the cap", prev)
		}

		sg.SetErr(nil)
		clk.Set(next)
		synctest.Wait()
		c2, err := m.Get(context.Background(), id)
		if err != nil || c2.Serial() == c1.Serial() {
			t.Fatalf("after the CA recovered Get = %v, %v; want a new certificate", c2, err)
		}
		if snap := m.Snapshot(); snap[0].LastError != "" {
			t.Fatalf("LastError = %q after success", snap[0].LastError)
		}
	})
}

func TestManagerNeverServesExpired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk, sg, m := setup(t, nil)
		id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
		c1, err := m.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		sg.SetErr(errors.New("CA unavailable"))
		clk.Set(c1.Leaf.NotAfter.Add(time.Second))
		c, err := m.Get(context.Background(), id)
		if err == nil || c != nil {
			t.Fatalf("Get after expiry = %v, %v; want an error", c, err)
		}
		if !strings.Contains(err.Error(), "CA unavailable") {
			t.Fatalf("error %q does not name the cause", err)
		}
		// While backing off, Get fails fast without asking the CA.
		calls := sg.Calls()
		c, err = m.Get(context.Background(), id)
		if err == nil || c != nil || !strings.Contains(err.Error(), "next retry at") {
			t.Fatalf("second Get = %v, %v", c, err)
		}
		if sg.Calls() != calls {
			t.Fatal("Get asked the CA again while backing off")
		}
	})
}

func TestManagerRejectsCertificateNotValidNow(t *testing.T) {
	clk := newFakeClock(t0)
	staleCA := newCA(t, LocalCAConfig{Clock: func() time.Time { return t0.Add(-48 * time.Hour) }})
	m, err := NewManager(ManagerConfig{Signer: staleCA, Clock: clk, TTL: time.Hour, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Get(context.Background(), mustID(t, "spiffe://cluster.local/ns/a/sa/b"))
	if err == nil || c != nil || !strings.Contains(err.Error(), "does not cover now") {
		t.Fatalf("Get = %v, %v; want a clock error", c, err)
	}
}

func TestManagerRejectsOtherTrustDomain(t *testing.T) {
	_, _, m := setup(t, nil)
	_, err := m.Get(context.Background(), mustID(t, "spiffe://other.td/ns/a/sa/b"))
	if err == nil || !errors.Is(err, ErrCSRRejected) || !strings.Contains(err.Error(), "signs only for") {
		t.Fatalf("Get = %v, want the CA's trust-domain refusal", err)
	}
}

func TestManagerForget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk, sg, m := setup(t, nil)
		a := mustID(t, "spiffe://cluster.local/ns/a/sa/a")
		b := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
		ca, err := m.Get(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Get(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		stop := startRun(t, m)
		defer stop()
		m.Forget(b)
		synctest.Wait()
		if snap := m.Snapshot(); len(snap) != 1 || snap[0].Identity != a.String() {
			t.Fatalf("snapshot after Forget = %+v", snap)
		}
		clk.Set(ca.Leaf.NotAfter.Add(-time.Minute)) // past both half-lives
		synctest.Wait()
		if got := sg.Calls(); got != 3 {
			t.Fatalf("CA requests = %d, want 3 (two first fetches, one rotation of the identity still held)", got)
		}
	})
}

func TestManagerSnapshotAndMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	clk, _, m := setup(t, func(c *ManagerConfig) { c.Registerer = reg })
	a := mustID(t, "spiffe://cluster.local/ns/a/sa/a")
	b := mustID(t, "spiffe://cluster.local/ns/b/sa/b")
	cb, err := m.Get(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := m.Get(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(10 * time.Minute))

	snap := m.Snapshot()
	if len(snap) != 2 || snap[0].Identity != a.String() || snap[1].Identity != b.String() {
		t.Fatalf("snapshot not sorted by identity: %+v", snap)
	}
	for i, c := range []*Certificate{ca, cb} {
		s := snap[i]
		if s.Serial != c.Serial() || !s.NotBefore.Equal(c.Leaf.NotBefore) || !s.NotAfter.Equal(c.Leaf.NotAfter) {
			t.Errorf("snapshot %d = %+v does not describe the certificate", i, s)
		}
		chain, err := ParseCertsPEM(s.ChainPEM)
		if err != nil || len(chain) != 1 || !chain[0].Equal(c.Leaf) {
			t.Errorf("snapshot %d chain PEM does not hold the leaf: %v", i, err)
		}
		if strings.Contains(string(s.ChainPEM)+string(s.RootsPEM), "PRIVATE KEY") {
			t.Errorf("snapshot %d leaks a private key", i)
		}
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	var requests float64
	for _, mf := range mfs {
		switch mf.GetName() {
		case MetricCertExpiry:
			for _, mt := range mf.GetMetric() {
				got[mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
			}
		case MetricCertRequests:
			for _, mt := range mf.GetMetric() {
				if mt.GetLabel()[0].GetValue() == "success" {
					requests = mt.GetCounter().GetValue()
				}
			}
		}
	}
	for _, c := range []*Certificate{ca, cb} {
		want := c.Leaf.NotAfter.Sub(clk.Now()).Seconds()
		if got[c.ID.String()] != want {
			t.Errorf("%s{identity=%q} = %v, want %v", MetricCertExpiry, c.ID, got[c.ID.String()], want)
		}
	}
	if requests != 2 {
		t.Errorf("%s{result=success} = %v, want 2", MetricCertRequests, requests)
	}
	if len(m.Roots()) != 1 {
		t.Errorf("Roots() = %d certificates, want 1", len(m.Roots()))
	}
}

// TestManagerRunStops runs with the real clock and checks that nothing Run
// started outlives it.
func TestManagerRunStops(t *testing.T) {
	defer goleak.VerifyNone(t)
	ca := newCA(t, LocalCAConfig{})
	m, err := NewManager(ManagerConfig{Signer: ca, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(context.Background(), mustID(t, "spiffe://cluster.local/ns/a/sa/b")); err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, m)
	m.Forget(mustID(t, "spiffe://cluster.local/ns/a/sa/b"))
	stop()
}

func TestManagerTLSAdapters(t *testing.T) {
	_, sg, m := setup(t, nil)
	id := mustID(t, "spiffe://cluster.local/ns/a/sa/b")
	c, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := m.TLSCertificate(context.Background(), id)
	if err != nil || tc != c.TLS {
		t.Fatalf("TLSCertificate = %v, %v; want the cached certificate", tc, err)
	}
	gc, err := m.GetCertificateFunc(id)(&tls.ClientHelloInfo{})
	if err != nil || gc != c.TLS {
		t.Fatalf("GetCertificateFunc = %v, %v; want the cached certificate", gc, err)
	}
	if sg.Calls() != 1 {
		t.Fatalf("CA requests = %d, want 1", sg.Calls())
	}
	if _, err := m.TLSCertificate(context.Background(), ID{}); err == nil {
		t.Fatal("TLSCertificate accepted the zero ID")
	}
}
