// Package app wires ztunnel together: the workload state (file watcher),
// the in-process CA and certificate manager, metrics, the admin server,
// and the in-pod listeners; Run serves until its context ends, then drains.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/admin"
	"ambit.dev/ztunnel/internal/config"
	"ambit.dev/ztunnel/internal/inbound"
	"ambit.dev/ztunnel/internal/inpod"
	"ambit.dev/ztunnel/internal/metrics"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/outbound"
	"ambit.dev/ztunnel/internal/socket"
	"ambit.dev/ztunnel/internal/state"
)

// App is one ztunnel.
type App struct {
	cfg     config.Config
	log     *slog.Logger
	store   *state.Store
	watcher *state.FileWatcher
	certs   *identity.Manager
	metrics *metrics.Metrics
	pods    *inpod.Manager
	admin   *admin.Server

	mu     sync.Mutex
	loaded bool
}

// New builds a ztunnel from cfg: it reads the CA files (a missing or wrong
// CA is a start-up error) and creates every component, but opens no socket
// and starts nothing.
func New(cfg config.Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log, store: state.NewStore()}
	certPEM, err := os.ReadFile(cfg.CACert)
	if err != nil {
		return nil, fmt.Errorf("read --ca-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.CAKey)
	if err != nil {
		return nil, fmt.Errorf("read --ca-key: %w", err)
	}
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: cfg.TrustDomain, SigningCertPEM: certPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		return nil, fmt.Errorf("--ca-cert/--ca-key: %w", err)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	if a.metrics, err = metrics.New(reg); err != nil {
		return nil, err
	}
	if a.certs, err = identity.NewManager(identity.ManagerConfig{Signer: ca, TTL: cfg.CertTTL, Registerer: reg, Logger: log}); err != nil {
		return nil, err
	}
	a.watcher = state.NewFileWatcher(cfg.WorkloadsFile, cfg.TrustDomain, a.store, log, 0)
	in, err := inbound.New(inbound.Config{
		Store: a.store, Certs: a.certs, Roots: ca.Roots, TrustDomain: cfg.TrustDomain,
		Metrics: a.metrics, Mark: inpod.DefaultMark, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	out, err := outbound.NewHandler(outbound.HandlerConfig{Store: a.store, Metrics: a.metrics, Mark: inpod.DefaultMark, Logger: log})
	if err != nil {
		return nil, err
	}
	a.pods, err = inpod.NewManager(inpod.Config{
		Node: cfg.NodeName, Store: a.store, Inbound: in, Outbound: out, FileMode: true,
		NewDialer: func(ns *socket.Netns) (*hbone.Dialer, error) {
			return hbone.NewDialer(hbone.DialerConfig{
				Certificate: a.certs.TLSCertificate,
				Roots:       ca.Roots,
				DialTCP:     outbound.NetnsDialTCP(ns, inpod.DefaultMark),
				Logger:      log,
			})
		},
		Prefetch:    a.prefetch,
		Mark:        inpod.DefaultMark,
		DrainPeriod: cfg.DrainPeriod,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	a.admin, err = admin.NewServer(admin.ServerConfig{
		AdminAddr: cfg.AdminAddr, MetricsAddr: cfg.MetricsAddr, ReadyAddr: cfg.ReadyAddr,
		Gatherer: reg, Logger: log,
	}, a)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Run loads the workloads file, then serves until ctx is done. Then it
// reports not-ready, closes every pod listener, lets open connections run
// for up to the drain period, and stops the admin server last. It returns
// when everything it started has stopped: nil after a clean shutdown, or
// the error that stopped ztunnel.
func (a *App) Run(ctx context.Context) error {
	if err := a.watcher.Load(); err != nil {
		return err
	}
	a.mu.Lock()
	a.loaded = true
	a.mu.Unlock()
	snap := a.store.Current()
	a.log.Info("ztunnel starting", "node", a.cfg.NodeName, "workloads", len(snap.Workloads()),
		"services", len(snap.Services()), "localPods", len(snap.LocalWorkloads(a.cfg.NodeName)))

	podsCtx, stopPods := context.WithCancel(ctx)
	defer stopPods()
	// The admin server, certificates and state outlive the pods' drain:
	// readiness must say "draining" and connections still need certs.
	auxCtx, stopAux := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAux()

	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	fail := func(what string, err error) {
		if err == nil {
			return
		}
		errMu.Lock()
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
		errMu.Unlock()
		stopPods()
	}
	wg.Go(func() { fail("admin server", a.admin.Run(auxCtx)) })
	wg.Go(func() { fail("certificate manager", a.certs.Run(auxCtx)) })
	wg.Go(func() { fail("workloads file watcher", a.watcher.Run(auxCtx)) })

	err := a.pods.Run(podsCtx)
	fail("pod listeners", err)
	if ctx.Err() != nil {
		a.log.Info("ztunnel stopped serving pods", "reason", context.Cause(ctx))
	}
	stopAux()
	wg.Wait()
	return errors.Join(errs...)
}

// prefetch fetches the certificate of a newly captured pod.
func (a *App) prefetch(ctx context.Context, uid string) {
	w, ok := a.store.Current().WorkloadByUID(uid)
	if !ok {
		return
	}
	if _, err := a.certs.Get(ctx, w.Identity()); err != nil && ctx.Err() == nil {
		a.log.Warn("certificate prefetch failed", "pod", uid, "identity", w.Identity().String(), "error", err)
	}
}

// Ready implements admin.Source: ready once the state is loaded and every
// local pod is captured; not ready while draining.
func (a *App) Ready() error {
	a.mu.Lock()
	loaded := a.loaded
	a.mu.Unlock()
	if !loaded {
		return errors.New("workloads file not loaded yet")
	}
	return a.pods.Ready()
}

// ConfigDump implements admin.Source.
func (a *App) ConfigDump() admin.ConfigDump {
	snap := a.store.Current()
	captured := map[string]bool{}
	for _, uid := range a.pods.Pods() {
		captured[uid] = true
	}
	d := admin.ConfigDump{
		Node:         a.cfg.NodeName,
		Workloads:    make([]admin.WorkloadDump, 0, len(snap.Workloads())),
		Services:     make([]admin.ServiceDump, 0, len(snap.Services())),
		Policies:     []admin.PolicyDump{},
		Certificates: admin.CertDumps(a.certs.Snapshot(), time.Now()),
		Connections:  admin.ConnDumps(a.metrics.Live()),
	}
	for _, w := range snap.Workloads() {
		wd := admin.WorkloadDump{
			UID: w.UID, Name: w.Name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount, Node: w.Node,
			Protocol: string(w.Protocol), MTLSMode: string(w.MTLSMode), Status: string(w.Status),
			Addresses: addrStrings(w.Addresses), Captured: captured[w.UID],
		}
		if len(w.Services) > 0 {
			wd.Services = map[string]map[string]uint32{}
			for k, pm := range w.Services {
				wd.Services[k] = portStrings(pm)
			}
		}
		if w.Waypoint != nil {
			wd.Waypoint = w.Waypoint.String()
		}
		d.Workloads = append(d.Workloads, wd)
	}
	for _, s := range snap.Services() {
		sd := admin.ServiceDump{Name: s.Name, Namespace: s.Namespace, Hostname: s.Hostname,
			VIPs: addrStrings(s.VIPs), Ports: portStrings(s.Ports)}
		if s.Waypoint != nil {
			sd.Waypoint = s.Waypoint.String()
		}
		d.Services = append(d.Services, sd)
	}
	return d
}

func portStrings(pm model.PortMap) map[string]uint32 {
	out := make(map[string]uint32, len(pm))
	for _, p := range slices.Sorted(maps.Keys(pm)) {
		out[strconv.Itoa(int(p))] = uint32(pm[p])
	}
	return out
}

func addrStrings[T interface{ String() string }](in []T) []string {
	out := make([]string, len(in))
	for i, a := range in {
		out[i] = a.String()
	}
	return out
}
