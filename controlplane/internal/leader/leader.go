// Package leader runs the control plane's writers — the work that keeps
// Kubernetes objects up to date on a schedule or from a controller loop —
// on one replica at a time: the one holding a coordination.k8s.io Lease
// (client-go leaderelection). Everything else (xDS, the CA) runs on every
// replica and never waits for the Lease.
//
// An Elector campaigns for the Lease; when it gets it, it starts the
// writers with a context that ends when the Lease is lost or the process
// shuts down. A replica that loses the Lease stops its writers and
// campaigns again; it does not exit. On shutdown the writers stop first and
// only then is the Lease released (ReleaseOnCancel), so the next leader
// takes over at once instead of waiting for the Lease to expire, and never
// writes while this one still does.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config: the values Kubernetes' own controllers use.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Writer is work that must run on at most one replica at a time.
type Writer struct {
	// Name identifies the writer in logs and errors.
	Name string
	// Run does the work until ctx ends, then returns nil. ctx ends when
	// this replica stops leading or shuts down; Run must not write after
	// that (check ctx before each write). A non-nil error ends Elector.Run
	// with that error.
	Run func(ctx context.Context) error
}

// Config configures an Elector.
type Config struct {
	// Namespace and LeaseName name the Lease (coordination.k8s.io/v1).
	Namespace, LeaseName string
	// Identity is this replica's name in the Lease (the pod name). Two
	// processes must never share one.
	Identity string
	// LeaseDuration is how long the others wait after the last renewal
	// they saw before taking over (at least 1s: the Lease counts whole
	// seconds); RenewDeadline how long the leader retries renewing before
	// it gives up leading; RetryPeriod the interval between attempts.
	// Zero means the Default* value.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Disabled runs the writers at once and for as long as Run runs,
	// without a Lease: for a deployment with exactly one replica.
	Disabled bool
	// Registerer, if set, receives the metrics (see metrics.go).
	Registerer prometheus.Registerer
}

// Elector runs writers while this replica leads. Build it with New and
// Run it once.
type Elector struct {
	cfg     Config
	client  kubernetes.Interface
	writers []Writer
	log     *slog.Logger
	metrics *metrics

	started atomic.Bool
	leading atomic.Bool
}

// New validates cfg and returns an Elector for writers. It does no I/O.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger, writers ...Writer) (*Elector, error) {
	if client == nil || log == nil {
		return nil, errors.New("leader: New needs a Kubernetes client and a logger")
	}
	for _, w := range writers {
		if w.Name == "" || w.Run == nil {
			return nil, errors.New("leader: every Writer needs a Name and a Run function")
		}
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if !cfg.Disabled {
		if err := cfg.validate(); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	e := &Elector{cfg: cfg, client: client, writers: writers, log: log, metrics: m}
	if !cfg.Disabled {
		// The same checks client-go makes, once, so that campaign cannot
		// fail later.
		if _, err := leaderelection.NewLeaderElector(e.electionConfig(make(chan context.Context))); err != nil {
			return nil, fmt.Errorf("leader: %w", err)
		}
	}
	return e, nil
}

func (c Config) validate() error {
	if c.Namespace == "" {
		return errors.New("leader: Config.Namespace (of the Lease) is required")
	}
	if errs := validation.IsDNS1123Subdomain(c.LeaseName); len(errs) > 0 {
		return fmt.Errorf("leader: Lease name %q is not a valid object name: %v", c.LeaseName, errs)
	}
	if c.Identity == "" {
		return errors.New("leader: Config.Identity is empty; set it to the pod name (the downward API's metadata.name)")
	}
	switch {
	case c.LeaseDuration < time.Second:
		return fmt.Errorf("leader: lease duration %s is below 1s (a Lease counts whole seconds)", c.LeaseDuration)
	case c.RenewDeadline <= 0 || c.RenewDeadline >= c.LeaseDuration:
		return fmt.Errorf("leader: renew deadline %s must be positive and shorter than the lease duration %s", c.RenewDeadline, c.LeaseDuration)
	case c.RetryPeriod <= 0 || float64(c.RetryPeriod)*leaderelection.JitterFactor >= float64(c.RenewDeadline):
		return fmt.Errorf("leader: retry period %s must be positive and, times %.1f, shorter than the renew deadline %s", c.RetryPeriod, leaderelection.JitterFactor, c.RenewDeadline)
	}
	return nil
}

// Leading reports whether this replica runs the writers now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Run campaigns for the Lease and runs the writers while it holds it,
// until ctx ends; then it stops the writers, releases the Lease and
// returns nil. It returns early only with the error of a writer. Every
// goroutine it started has stopped when it returns.
func (e *Elector) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("leader: Run called twice")
	}
	if e.cfg.Disabled {
		e.log.Info("leader election disabled (--leader-elect=false): this replica runs the writers; run exactly one replica")
		return e.lead(ctx)
	}

	// The election runs on its own context, cancelled only after the
	// writers have returned: client-go releases the Lease when that
	// context ends (ReleaseOnCancel), and the next leader must not start
	// writing while this replica still does.
	electCtx, stopElecting := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElecting()
	terms := make(chan context.Context)
	campaignDone := make(chan struct{})
	go func() {
		defer close(campaignDone)
		e.campaign(electCtx, terms)
	}()
	stop := func() {
		stopElecting()
		<-campaignDone
	}
	for {
		select {
		case <-ctx.Done():
			stop()
			return nil
		case leadCtx := <-terms:
			// The writers stop when the Lease is lost (leadCtx) or on
			// shutdown (ctx), whichever comes first.
			wctx, cancel := context.WithCancel(leadCtx)
			unhook := context.AfterFunc(ctx, cancel)
			err := e.lead(wctx)
			unhook()
			cancel()
			if err != nil {
				stop()
				return err
			}
		}
	}
}

// campaign runs client-go's elector until ctx ends, handing each term's
// context to Run through terms.
func (e *Elector) campaign(ctx context.Context, terms chan<- context.Context) {
	for ctx.Err() == nil {
		e.log.Info("campaigning for the leader Lease", "lease", e.cfg.Namespace+"/"+e.cfg.LeaseName, "identity", e.cfg.Identity)
		le, err := leaderelection.NewLeaderElector(e.electionConfig(terms))
		if err != nil {
			// New made the same call with the same configuration.
			panic(fmt.Sprintf("leader: configuration accepted by New refused later: %v", err))
		}
		le.Run(ctx)
		if ctx.Err() == nil {
			// The Lease was lost: renewing failed for RenewDeadline (the
			// API server was unreachable, or this process stalled and
			// another replica took over). Do not exit, as many
			// controllers do: this replica still serves xDS and the CA,
			// which need no Lease, and exiting would drop every ztunnel
			// stream and CA call it holds and make it unready for its
			// restart. Its writers have been told to stop; campaign again
			// with a fresh elector.
			e.log.Warn("lost the leader Lease; writers stopped, still serving; campaigning again", "lease", e.cfg.Namespace+"/"+e.cfg.LeaseName)
		}
	}
}

// electionConfig is the client-go configuration of one campaign. A new
// Lease lock per campaign: it caches the Lease it last saw.
func (e *Elector) electionConfig(terms chan<- context.Context) leaderelection.LeaderElectionConfig {
	return leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.LeaseName},
			Client:     e.client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity},
		},
		Name:          e.cfg.Namespace + "/" + e.cfg.LeaseName,
		LeaseDuration: e.cfg.LeaseDuration,
		RenewDeadline: e.cfg.RenewDeadline,
		RetryPeriod:   e.cfg.RetryPeriod,
		// Give the Lease up on shutdown so that another replica takes
		// over within RetryPeriod rather than LeaseDuration. Safe because
		// Run cancels the election context only after the writers have
		// returned. (When renewing fails instead, client-go releases just
		// before it cancels the term's context, so writers may overlap
		// the next leader for a moment: they must stay level-based and
		// idempotent, see docs/adr/0002.)
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			// client-go calls this in a goroutine it does not wait for:
			// hand the term to Run, which runs the writers, or give up
			// when the term is already over.
			OnStartedLeading: func(leadCtx context.Context) {
				select {
				case terms <- leadCtx:
				case <-leadCtx.Done():
				}
			},
			// Called whenever client-go's Run returns, led or not; the
			// writers stop through the term's context.
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				e.log.Info("leader observed", "lease", e.cfg.Namespace+"/"+e.cfg.LeaseName, "leader", id, "self", id == e.cfg.Identity)
			},
		},
	}
}

// lead runs every writer until ctx ends and returns the first writer
// error, after all writers have returned. The leader gauge is 1 meanwhile.
func (e *Elector) lead(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	e.leading.Store(true)
	e.metrics.leader.Set(1)
	e.log.Info("leading: starting the writers", "writers", len(e.writers))
	defer func() {
		e.leading.Store(false)
		e.metrics.leader.Set(0)
		e.log.Info("stopped leading: writers stopped")
	}()
	g, gctx := errgroup.WithContext(ctx)
	for _, w := range e.writers {
		g.Go(func() error {
			if err := w.Run(gctx); err != nil {
				return fmt.Errorf("leader: writer %s: %w", w.Name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Writers that finished early: the term (and the gauge) lasts until
	// the Lease is lost or the process stops.
	<-ctx.Done()
	return nil
}
