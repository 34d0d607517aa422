package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testNS    = "ambit-system"
	testLease = "ambit-controlplane"
	testCM    = "ambit-root-cert"
	// waitTimeout only guards against a hung test; no test asserts on time.
	waitTimeout = 30 * time.Second
)

// Short durations keep the tests fast. Handover on shutdown takes about
// one RetryPeriod (the Lease is released); LeaseDuration only matters when
// a leader stops renewing without releasing.
var fast = Config{Namespace: testNS, LeaseName: testLease, LeaseDuration: 5 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 50 * time.Millisecond}

// linger is how long a test writer takes to return after its context ends.
const linger = 200 * time.Millisecond

// recorder watches the writers of all electors of a test: how many run at
// once, and whether any wrote while another identity held the Lease.
type recorder struct {
	client *fake.Clientset

	mu         sync.Mutex
	active     int
	maxActive  int
	starts     map[string]int
	writes     map[string]int
	violations []string
}

func newRecorder(client *fake.Clientset) *recorder {
	return &recorder{client: client, starts: map[string]int{}, writes: map[string]int{}}
}

func (r *recorder) violate(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

// writer is what a real writer does: write a ConfigMap (server-side apply)
// at once, then keep it until the term ends. Each write checks that this
// identity holds the Lease at that moment.
func (r *recorder) writer(id string) Writer {
	return Writer{Name: "test-writer", Run: func(ctx context.Context) error {
		r.mu.Lock()
		r.active++
		r.maxActive = max(r.maxActive, r.active)
		r.starts[id]++
		r.mu.Unlock()
		defer func() {
			// Finish slowly, like a writer whose last request is still in
			// flight: an elector that released the Lease before its
			// writers returned would let the next leader's writer start
			// meanwhile (maxActive 2).
			time.Sleep(linger)
			r.mu.Lock()
			r.active--
			r.mu.Unlock()
		}()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if ctx.Err() != nil {
				return nil
			}
			if h := r.holder(); h != id {
				r.violate("%s wrote while the Lease holder was %q", id, h)
			}
			cm := corev1ac.ConfigMap(testCM, testNS).WithData(map[string]string{"writer": id})
			if _, err := r.client.CoreV1().ConfigMaps(testNS).Apply(ctx, cm, metav1.ApplyOptions{FieldManager: "test", Force: true}); err != nil {
				r.violate("%s: apply: %v", id, err)
			}
			r.mu.Lock()
			r.writes[id]++
			r.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}}
}

func (r *recorder) holder() string {
	l, err := r.client.CoordinationV1().Leases(testNS).Get(context.Background(), testLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func (r *recorder) count(m map[string]int, id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m[id]
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.maxActive > 1 {
		t.Errorf("%d writers ran at once, want at most 1", r.maxActive)
	}
	for _, v := range r.violations {
		t.Error(v)
	}
}

func (r *recorder) configMapWriter(t *testing.T) string {
	t.Helper()
	cm, err := r.client.CoreV1().ConfigMaps(testNS).Get(context.Background(), testCM, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data["writer"]
}

// running is an Elector started by start.
type running struct {
	id     string
	e      *Elector
	cancel context.CancelFunc
	done   chan error
}

// start builds and runs an elector until the test ends (or stop).
func start(t *testing.T, cfg Config, client *fake.Clientset, id string, writers ...Writer) *running {
	t.Helper()
	cfg.Identity = id
	cfg.Registerer = prometheus.NewRegistry()
	e, err := New(cfg, client, slog.New(slog.DiscardHandler).With("id", id), writers...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{id: id, e: e, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- e.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the elector's context and waits for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("%s: Run returned %v", r.id, err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("%s: Run did not return after cancel", r.id)
	}
}

func (r *running) gauge() float64 { return testutil.ToFloat64(r.e.metrics.leader) }

// waitFor polls cond until it holds; the bound only catches a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTwoElectorsOneWriter(t *testing.T) {
	client := fake.NewClientset()
	rec := newRecorder(client)
	a := start(t, fast, client, "cp-a", rec.writer("cp-a"))
	b := start(t, fast, client, "cp-b", rec.writer("cp-b"))

	waitFor(t, "one replica leads", func() bool { return a.e.Leading() || b.e.Leading() })
	leader, follower := a, b
	if b.e.Leading() {
		leader, follower = b, a
	}
	waitFor(t, "the leader wrote the ConfigMap", func() bool { return rec.configMapWriter(t) == leader.id })
	if follower.e.Leading() || follower.gauge() != 0 || leader.gauge() != 1 {
		t.Fatalf("leading: %s %v (gauge %v), %s %v (gauge %v); want exactly %s",
			leader.id, leader.e.Leading(), leader.gauge(), follower.id, follower.e.Leading(), follower.gauge(), leader.id)
	}
	if n := rec.count(rec.starts, follower.id) + rec.count(rec.writes, follower.id); n != 0 {
		t.Fatalf("the follower %s ran its writer (%d starts and writes) while not leading", follower.id, n)
	}
	if h := rec.holder(); h != leader.id {
		t.Fatalf("Lease holder %q, want %s", h, leader.id)
	}

	// The leader shuts down: its writer stops, it releases the Lease and
	// the follower takes over and writes.
	leader.stop(t)
	if leader.e.Leading() || leader.gauge() != 0 {
		t.Errorf("%s still reports leading after Run returned", leader.id)
	}
	waitFor(t, "the follower leads", follower.e.Leading)
	waitFor(t, "the new leader wrote the ConfigMap", func() bool { return rec.configMapWriter(t) == follower.id })
	if follower.gauge() != 1 {
		t.Errorf("%s gauge %v, want 1", follower.id, follower.gauge())
	}
	if h := rec.holder(); h != follower.id {
		t.Errorf("Lease holder %q, want %s", h, follower.id)
	}

	follower.stop(t)
	if h := rec.holder(); h != "" {
		t.Errorf("Lease holder %q after every replica stopped, want it released", h)
	}
	rec.check(t)
}

// TestLostLeaseCampaignsAgain: when renewing fails (the API server refuses
// Lease updates), the leader stops its writer, keeps running and leads
// again once it can renew.
func TestLostLeaseCampaignsAgain(t *testing.T) {
	client := fake.NewClientset()
	var outage atomic.Bool
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if outage.Load() {
			return true, nil, apierrors.NewServiceUnavailable("test outage")
		}
		return false, nil, nil
	})
	rec := newRecorder(client)
	cfg := fast
	cfg.LeaseDuration, cfg.RenewDeadline = 2*time.Second, 300*time.Millisecond
	r := start(t, cfg, client, "cp-a", rec.writer("cp-a"))

	waitFor(t, "it leads", r.e.Leading)
	waitFor(t, "the writer wrote", func() bool { return rec.count(rec.writes, "cp-a") > 0 })

	outage.Store(true)
	waitFor(t, "it stops leading", func() bool { return !r.e.Leading() })
	waitFor(t, "the writer stopped", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.active == 0
	})
	select {
	case err := <-r.done:
		t.Fatalf("Run returned (%v) after losing the Lease; it must campaign again", err)
	default:
	}
	if r.gauge() != 0 {
		t.Errorf("gauge %v while not leading, want 0", r.gauge())
	}

	outage.Store(false)
	waitFor(t, "it leads again", r.e.Leading)
	waitFor(t, "the writer runs again", func() bool { return rec.count(rec.starts, "cp-a") == 2 })
	rec.check(t)
}

func TestWriterErrorEndsRun(t *testing.T) {
	client := fake.NewClientset()
	cfg := fast
	cfg.Identity = "cp-a"
	boom := errors.New("boom")
	e, err := New(cfg, client, slog.New(slog.DiscardHandler), Writer{Name: "broken", Run: func(context.Context) error { return boom }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "broken") {
			t.Fatalf("Run = %v, want the writer's error naming it", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return the writer's error")
	}
	if h := newRecorder(client).holder(); h != "" {
		t.Errorf("Lease holder %q after Run failed, want it released", h)
	}
}

func TestDisabledRunsWritersWithoutLease(t *testing.T) {
	client := fake.NewClientset()
	rec := newRecorder(client)
	cfg := Config{Disabled: true}
	r := start(t, cfg, client, "", Writer{Name: "w", Run: func(ctx context.Context) error {
		rec.mu.Lock()
		rec.starts["w"]++
		rec.mu.Unlock()
		<-ctx.Done()
		return nil
	}})
	waitFor(t, "the writer runs", func() bool { return rec.count(rec.starts, "w") == 1 })
	if !r.e.Leading() || r.gauge() != 1 {
		t.Errorf("disabled election: Leading %v gauge %v, want true and 1", r.e.Leading(), r.gauge())
	}
	r.stop(t)
	if r.gauge() != 0 {
		t.Errorf("gauge %v after Run returned, want 0", r.gauge())
	}
	leases, err := client.CoordinationV1().Leases(testNS).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(leases.Items) != 0 {
		t.Errorf("disabled election created Leases (%v, %v)", leases, err)
	}
}

func TestNewValidates(t *testing.T) {
	ok := fast
	ok.Identity = "cp-a"
	w := Writer{Name: "w", Run: func(context.Context) error { return nil }}
	tests := []struct {
		name string
		edit func(*Config)
		w    Writer
		want string
	}{
		{name: "no identity", edit: func(c *Config) { c.Identity = "" }, w: w, want: "Identity is empty"},
		{name: "no namespace", edit: func(c *Config) { c.Namespace = "" }, w: w, want: "Namespace"},
		{name: "bad lease name", edit: func(c *Config) { c.LeaseName = "Bad_Name" }, w: w, want: "not a valid object name"},
		{name: "lease under a second", edit: func(c *Config) { c.LeaseDuration = 500 * time.Millisecond }, w: w, want: "below 1s"},
		{name: "renew deadline not below lease", edit: func(c *Config) { c.RenewDeadline = c.LeaseDuration }, w: w, want: "renew deadline"},
		{name: "retry period too long", edit: func(c *Config) { c.RetryPeriod = c.RenewDeadline }, w: w, want: "retry period"},
		{name: "writer without name", edit: func(*Config) {}, w: Writer{Run: w.Run}, want: "Name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			_, err := New(cfg, fake.NewClientset(), slog.New(slog.DiscardHandler), tc.w)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		e, err := New(Config{Namespace: testNS, LeaseName: testLease, Identity: "cp-a"}, fake.NewClientset(), slog.New(slog.DiscardHandler), w)
		if err != nil {
			t.Fatal(err)
		}
		if e.cfg.LeaseDuration != DefaultLeaseDuration || e.cfg.RenewDeadline != DefaultRenewDeadline || e.cfg.RetryPeriod != DefaultRetryPeriod {
			t.Fatalf("durations %s %s %s, want the defaults", e.cfg.LeaseDuration, e.cfg.RenewDeadline, e.cfg.RetryPeriod)
		}
	})
}
