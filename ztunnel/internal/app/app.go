// Package app wires ztunnel together: the workload state (the workloads
// file, or the control plane over delta xDS), the certificate manager (over
// the in-process CA, or the control plane CA), metrics, the admin server,
// the in-pod listeners and, with --zds-socket, the node agent's ZDS client
// that drives them; Run serves until its context ends, then drains.
package app

import (
	"context"
	"crypto/x509"
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
	"google.golang.org/grpc"

	"ambit.dev/pkg/caclient"
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
	"ambit.dev/ztunnel/internal/xds"
	"ambit.dev/ztunnel/internal/zds"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// App is one ztunnel.
type App struct {
	cfg     config.Config
	log     *slog.Logger
	store   *state.Store
	watcher *state.FileWatcher // file mode
	xds     *xds.Client        // xDS mode
	conns   []*grpc.ClientConn // xDS mode: to the control plane
	certs   *identity.Manager
	metrics *metrics.Metrics
	pods    *inpod.Manager
	zds     *zds.Client // xDS mode with --zds-socket
	admin   *admin.Server

	mu     sync.Mutex
	loaded bool
}

// New builds a ztunnel from cfg: it reads the CA files (file mode) or the
// mesh root (xDS mode) — a missing or wrong one is a start-up error — and
// creates every component, but opens no socket and starts nothing (gRPC
// connections to the control plane are made lazily).
// maxXDSMessage bounds one message from the control plane.
const maxXDSMessage = 256 << 20

func New(cfg config.Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log, store: state.NewStore()}
	var (
		signer identity.Signer
		roots  hbone.RootsFunc
		err    error
	)
	if cfg.XDSMode() {
		signer, roots, err = a.controlPlane()
	} else {
		signer, roots, err = localCA(cfg)
	}
	if err != nil {
		a.closeConns()
		return nil, err
	}
	built, err := a.build(signer, roots)
	if err != nil {
		a.closeConns()
		return nil, err
	}
	return built, nil
}

// localCA is file mode's certificate source: the in-process CA.
func localCA(cfg config.Config) (identity.Signer, hbone.RootsFunc, error) {
	certPEM, err := os.ReadFile(cfg.CACert)
	if err != nil {
		return nil, nil, fmt.Errorf("read --ca-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.CAKey)
	if err != nil {
		return nil, nil, fmt.Errorf("read --ca-key: %w", err)
	}
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: cfg.TrustDomain, SigningCertPEM: certPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		return nil, nil, fmt.Errorf("--ca-cert/--ca-key: %w", err)
	}
	return ca, ca.Roots, nil
}

// controlPlane is xDS mode's state and certificate source: TLS connections
// to the control plane's xDS and CA endpoints, verified with the mesh root.
func (a *App) controlPlane() (identity.Signer, hbone.RootsFunc, error) {
	cfg := a.cfg
	rootPEM, err := os.ReadFile(cfg.RootCertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read --root-cert-file (the mesh root, ConfigMap ambit-root-cert): %w", err)
	}
	fileRoots, err := identity.ParseCertsPEM(rootPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("--root-cert-file: %w", err)
	}
	creds, err := caclient.TransportCredentials(rootPEM, cfg.ControlPlaneName)
	if err != nil {
		return nil, nil, fmt.Errorf("--root-cert-file/--control-plane-name: %w", err)
	}
	dial := func(flag, addr string) (*grpc.ClientConn, error) {
		// The first workload-discovery response of a large cluster is far
		// above gRPC's 4 MiB default (about 18 MB at 50k pods).
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxXDSMessage)))
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", flag, addr, err)
		}
		a.conns = append(a.conns, conn)
		return conn, nil
	}
	caConn, err := dial("--ca-address", cfg.CAAddress)
	if err != nil {
		return nil, nil, err
	}
	xdsConn, err := dial("--xds-address", cfg.XDSAddress)
	if err != nil {
		return nil, nil, err
	}
	signer, err := caclient.New(caConn, cfg.TokenFile)
	if err != nil {
		return nil, nil, err
	}
	a.xds, err = xds.New(xds.Config{Conn: xdsConn, Store: a.store, NodeID: "ztunnel~" + cfg.NodeName,
		TrustDomain: cfg.TrustDomain, Logger: a.log})
	if err != nil {
		return nil, nil, err
	}
	// The CA's trust bundle (fetched with each certificate) wins over the
	// file once known, so a root rotation reaches the data path.
	roots := func() []*x509.Certificate {
		if r := a.certs.Roots(); len(r) > 0 {
			return r
		}
		return fileRoots
	}
	return signer, roots, nil
}

func (a *App) closeConns() {
	for _, c := range a.conns {
		_ = c.Close()
	}
	a.conns = nil
}

// build creates the components common to both modes.
func (a *App) build(signer identity.Signer, roots hbone.RootsFunc) (*App, error) {
	cfg, log := a.cfg, a.log
	var err error
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
	if a.certs, err = identity.NewManager(identity.ManagerConfig{Signer: signer, TTL: cfg.CertTTL, Registerer: reg, Logger: log}); err != nil {
		return nil, err
	}
	if !cfg.XDSMode() {
		a.watcher = state.NewFileWatcher(cfg.WorkloadsFile, cfg.TrustDomain, a.store, log, 0)
	}
	in, err := inbound.New(inbound.Config{
		Store: a.store, Certs: a.certs, Roots: roots, TrustDomain: cfg.TrustDomain,
		Authorizer: &inbound.PolicyAuthorizer{Store: a.store, Metrics: a.metrics, Logger: log},
		Metrics:    a.metrics, Mark: inpod.DefaultMark, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	out, err := outbound.NewHandler(outbound.HandlerConfig{Store: a.store, Metrics: a.metrics, Mark: inpod.DefaultMark, Logger: log})
	if err != nil {
		return nil, err
	}
	a.pods, err = inpod.NewManager(inpod.Config{
		Node: cfg.NodeName, Store: a.store, Inbound: in, Outbound: out, FileMode: !cfg.XDSMode(),
		NewDialer: func(ns *socket.Netns) (*hbone.Dialer, error) {
			return hbone.NewDialer(hbone.DialerConfig{
				Certificate: a.certs.TLSCertificate,
				Roots:       roots,
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
	if cfg.ZDSSocket != "" {
		if a.zds, err = zds.New(zds.Config{Path: cfg.ZDSSocket, Manager: a.pods, Logger: log}); err != nil {
			return nil, err
		}
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

// Run loads the workloads file (file mode) or starts the xDS client (xDS
// mode), then serves until ctx is done. Then it reports not-ready, closes
// every pod listener, lets open connections run for up to the drain period,
// and stops the admin server last. It returns when everything it started
// has stopped: nil after a clean shutdown, or the error that stopped
// ztunnel.
func (a *App) Run(ctx context.Context) error {
	defer a.closeConns()
	if a.watcher != nil {
		if err := a.watcher.Load(); err != nil {
			return err
		}
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
	if a.watcher != nil {
		wg.Go(func() { fail("workloads file watcher", a.watcher.Run(auxCtx)) })
	}
	if a.xds != nil {
		wg.Go(func() { fail("xDS client", a.xds.Run(auxCtx)) })
		// The certificates of the node's mesh pods are fetched ahead, before
		// the node agent hands the pods over.
		wg.Go(func() { a.prefetchLocal(auxCtx) })
	}
	managerCtx := podsCtx
	if a.zds != nil {
		// The ZDS client stops when shutdown begins: a draining ztunnel
		// takes no new pods (the agent keeps serving the new ztunnel).
		// Captured pods stay with the pod manager, which starts draining
		// only once the client has stopped, so no request of the agent
		// races with the drain.
		zdsDone := make(chan struct{})
		wg.Go(func() {
			defer close(zdsDone)
			select {
			case <-a.pods.Started():
			case <-podsCtx.Done():
				return
			}
			fail("ZDS client", a.zds.Run(podsCtx))
		})
		var stopManager context.CancelFunc
		managerCtx, stopManager = context.WithCancel(context.WithoutCancel(ctx))
		defer stopManager()
		wg.Go(func() {
			<-podsCtx.Done()
			<-zdsDone
			stopManager()
		})
	}

	err := a.pods.Run(managerCtx)
	fail("pod listeners", err)
	stopPods()
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
// local pod is captured (with ZDS: once the node agent's first snapshot was
// served); not ready while draining.
func (a *App) Ready() error {
	a.mu.Lock()
	loaded := a.loaded
	a.mu.Unlock()
	if !loaded {
		return errors.New("workloads file not loaded yet")
	}
	if a.xds != nil {
		if err := a.xds.Ready(); err != nil {
			return err
		}
	}
	if err := a.pods.Ready(); err != nil {
		return err
	}
	if a.zds != nil {
		return a.zds.Ready()
	}
	return nil
}

// ConfigDump implements admin.Source.
func (a *App) ConfigDump() adminapi.ConfigDump {
	snap := a.store.Current()
	captured := map[string]bool{}
	for _, uid := range a.pods.Pods() {
		captured[uid] = true
	}
	d := adminapi.ConfigDump{
		Node:         a.cfg.NodeName,
		Workloads:    make([]adminapi.WorkloadDump, 0, len(snap.Workloads())),
		Services:     make([]adminapi.ServiceDump, 0, len(snap.Services())),
		Policies:     a.policyDumps(),
		Certificates: admin.CertDumps(a.certs.Snapshot(), time.Now()),
		Connections:  admin.ConnDumps(a.metrics.Live()),
	}
	for _, w := range snap.Workloads() {
		wd := adminapi.WorkloadDump{
			UID: w.UID, Name: w.Name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount, Node: w.Node,
			Protocol: string(w.Protocol), MTLSMode: string(w.MTLSMode), Status: string(w.Status),
			Addresses: addrStrings(w.Addresses), Captured: captured[w.UID],
			AuthorizationPolicies: slices.Clone(w.AuthorizationPolicies),
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
		sd := adminapi.ServiceDump{Name: s.Name, Namespace: s.Namespace, Hostname: s.Hostname,
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
