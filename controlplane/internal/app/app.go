// Package app wires ambit-controlplane together: the Kubernetes model
// (internal/kube) feeds the workload-discovery server (internal/xds) and
// the waypoints' Envoy configuration server (internal/waypointxds), which
// share the xDS port through a waypointxds.Dispatcher; the waypoint
// controller (internal/waypoint) deploys waypoints for Gateways; the
// CA (internal/ca) signs workload certificates and the control plane's own
// serving certificate (internal/servingcert); gRPC servers serve xDS and the
// CA over TLS; an HTTP server serves /metrics, /healthz and /readyz. The
// writers (the trust-bundle ConfigMap, policy status, the waypoint
// controller) run only on the
// replica that holds the leader Lease (internal/leader); everything else
// runs on every replica.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"ambit.dev/controlplane/internal/autowaypoint"
	"ambit.dev/controlplane/internal/ca"
	"ambit.dev/controlplane/internal/config"
	"ambit.dev/controlplane/internal/kube"
	"ambit.dev/controlplane/internal/leader"
	"ambit.dev/controlplane/internal/servingcert"
	"ambit.dev/controlplane/internal/waypoint"
	"ambit.dev/controlplane/internal/waypointxds"
	"ambit.dev/controlplane/internal/xds"
)

// shutdownGrace bounds how long Run waits for gRPC calls and HTTP requests
// to finish after ctx ends.
const shutdownGrace = 5 * time.Second

// App is the control plane. Build it with New and Run it once.
type App struct {
	cfg  config.Config
	log  *slog.Logger
	reg  *prometheus.Registry
	ctrl *kube.Controller
	xds  *xds.Server
	// wpXDS serves the waypoints' Envoy configuration; disp is the one
	// AggregatedDiscoveryService of the xDS gRPC servers, routing each
	// stream to xds (ztunnel) or wpXDS (waypoint).
	wpXDS   *waypointxds.Server
	disp    *waypointxds.Dispatcher
	ca      *ca.Server
	rotator *servingcert.Rotator
	elector *leader.Elector

	started   atomic.Bool
	listening chan struct{}
	mu        sync.Mutex
	addrs     Addrs
}

// Addrs are the addresses the servers listen on (resolved, e.g. a ":0"
// port becomes the port chosen).
type Addrs struct {
	XDS, DevPlaintextXDS, CA, Monitoring net.Addr
}

// Clients are the Kubernetes clients of the control plane: typed for core
// objects, dynamic for the security.ambit.dev policies (which have no
// generated clientset).
type Clients struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
}

// NewClients returns clients for the cluster of kubeconfig, or of the pod's
// ServiceAccount when kubeconfig is empty.
func NewClients(kubeconfig string) (Clients, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return Clients{}, fmt.Errorf("app: in-cluster Kubernetes configuration (outside a pod, pass --kubeconfig): %w", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return Clients{}, fmt.Errorf("app: reading kubeconfig %s: %w", kubeconfig, err)
		}
	}
	rc.UserAgent = "ambit-controlplane"
	rc.QPS, rc.Burst = 50, 100
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return Clients{}, fmt.Errorf("app: Kubernetes client: %w", err)
	}
	d, err := dynamic.NewForConfig(rc)
	if err != nil {
		return Clients{}, fmt.Errorf("app: Kubernetes dynamic client: %w", err)
	}
	return Clients{Kube: c, Dynamic: d}, nil
}

// New builds the control plane on clients. It does no I/O.
func New(cfg config.Config, clients Clients, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client := clients.Kube
	if client == nil || clients.Dynamic == nil || log == nil {
		return nil, errors.New("app: Kubernetes clients (typed and dynamic) and a logger are required")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	xdsSrv, err := xds.New(log.With("component", "xds"), reg)
	if err != nil {
		return nil, err
	}
	wpSrv, err := waypointxds.NewServer(log.With("component", "waypointxds"), reg)
	if err != nil {
		return nil, err
	}
	ztADS, err := waypointxds.CaptureADS(xdsSrv.Register)
	if err != nil {
		return nil, err
	}
	disp, err := waypointxds.NewDispatcher(ztADS, wpSrv)
	if err != nil {
		return nil, err
	}
	root := cfg.RootNamespace
	if root == "" {
		root = cfg.Namespace
	}
	ctrl, err := kube.New(client, clients.Dynamic, xdsSrv, kube.Config{
		TrustDomain: cfg.TrustDomain, ClusterDomain: cfg.ClusterDomain, RootNamespace: root, Registerer: reg,
		Waypoints: wpSrv,
	}, log.With("component", "kube"))
	if err != nil {
		return nil, err
	}
	caSrv, err := ca.New(ca.Config{
		TrustDomain:   cfg.TrustDomain,
		Namespace:     cfg.Namespace,
		NodeProxies:   cfg.NodeProxies,
		ServiceName:   cfg.ServiceName,
		ClusterDomain: cfg.ClusterDomain,
		Registerer:    reg,
	}, client, ctrl, log.With("component", "ca"))
	if err != nil {
		return nil, err
	}
	wp, err := waypoint.New(client, clients.Dynamic, waypoint.Config{
		Image:            cfg.WaypointImage,
		PullPolicy:       corev1.PullPolicy(cfg.WaypointImagePullPolicy),
		ClusterDomain:    cfg.ClusterDomain,
		TrustDomain:      cfg.TrustDomain,
		XDSAddress:       cfg.WaypointXDSAddress,
		ControlPlaneName: cfg.ServiceName + "." + cfg.Namespace + ".svc",
		Registerer:       reg,
	}, log.With("component", "waypoint"))
	if err != nil {
		return nil, err
	}
	// Every periodic or controller write of the control plane is a Writer
	// of the elector. (The CA's create-if-absent of its root Secret is not:
	// see ca.Server.Run and docs/adr/0002.)
	writers := []leader.Writer{
		{Name: "trust-bundle", Run: caSrv.PublishTrustBundle},
		{Name: "policy-status", Run: ctrl.RunStatusWriter},
		{Name: "waypoint-controller", Run: wp.Run},
	}
	if cfg.AutoWaypoints {
		auto, err := autowaypoint.New(client, clients.Dynamic, autowaypoint.Config{Registerer: reg}, log.With("component", "autowaypoint"))
		if err != nil {
			return nil, err
		}
		writers = append(writers, leader.Writer{Name: "waypoint-auto-provisioning", Run: auto.Run})
	}
	rot := servingcert.NewRotator(caSrv, servingcert.RotatorConfig{Names: cfg.ServingNames}, log.With("component", "servingcert"))
	elector, err := leader.New(leader.Config{
		Namespace:     cfg.Namespace,
		LeaseName:     cfg.LeaderElectLeaseName,
		Identity:      cfg.LeaderElectIdentity,
		LeaseDuration: cfg.LeaseDuration,
		RenewDeadline: cfg.RenewDeadline,
		RetryPeriod:   cfg.RetryPeriod,
		Disabled:      !cfg.LeaderElect,
		Registerer:    reg,
	}, client, log.With("component", "leader"), writers...)

	if err != nil {
		return nil, err
	}
	return &App{
		cfg: cfg, log: log, reg: reg,
		ctrl: ctrl, xds: xdsSrv, wpXDS: wpSrv, disp: disp, ca: caSrv, rotator: rot, elector: elector,
		listening: make(chan struct{}),
	}, nil
}

// Listening is closed once every server listens; Addrs is then set.
func (a *App) Listening() <-chan struct{} { return a.listening }

// Addrs returns the listening addresses (zero before Listening is closed).
func (a *App) Addrs() Addrs {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addrs
}

// Leading reports whether this replica holds the leader Lease and runs the
// writers (always true with --leader-elect=false once Run started).
func (a *App) Leading() bool { return a.elector.Leading() }

// Ready reports whether the control plane serves complete, trusted data:
// the model has synced, the CA has loaded its root and the serving
// certificate is issued. The reason says what is missing. It does not
// depend on leading: every replica serves.
func (a *App) Ready() (bool, string) {
	if !a.ctrl.HasSynced() {
		return false, "the Kubernetes model has not synced yet"
	}
	select {
	case <-a.ca.Ready():
	default:
		return false, "the CA has not loaded its root of trust yet"
	}
	select {
	case <-a.rotator.Ready():
	default:
		return false, "no serving certificate yet"
	}
	return true, "ready"
}

// Run listens, starts every component and serves until ctx ends or a
// component fails; then it stops everything and returns (nil after ctx
// ended, else the first error). Every goroutine it started has stopped
// when it returns.
func (a *App) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("app: Run called twice")
	}
	lc := net.ListenConfig{}
	var lis []net.Listener
	closeAll := func() {
		for _, l := range lis {
			_ = l.Close()
		}
	}
	listen := func(flag, addr string) (net.Listener, error) {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("app: listening on %s (%s): is another process using the port?: %w", addr, flag, err)
		}
		lis = append(lis, l)
		return l, nil
	}
	xdsLis, err := listen("--xds-addr", a.cfg.XDSAddr)
	if err != nil {
		return err
	}
	caLis, err := listen("--ca-addr", a.cfg.CAAddr)
	if err != nil {
		return err
	}
	monLis, err := listen("--monitoring-addr", a.cfg.MonitoringAddr)
	if err != nil {
		return err
	}
	var devLis net.Listener
	if a.cfg.DevPlaintextXDSAddr != "" {
		if devLis, err = listen("--dev-plaintext-xds-addr", a.cfg.DevPlaintextXDSAddr); err != nil {
			return err
		}
		a.log.Warn("serving workload discovery WITHOUT TLS (development only)", "addr", devLis.Addr().String())
	}
	a.mu.Lock()
	a.addrs = Addrs{XDS: xdsLis.Addr(), CA: caLis.Addr(), Monitoring: monLis.Addr()}
	if devLis != nil {
		a.addrs.DevPlaintextXDS = devLis.Addr()
	}
	a.mu.Unlock()
	close(a.listening)

	tlsCreds := credentials.NewTLS(a.rotator.TLSConfig())
	kp := keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}
	ks := grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second})
	xdsGRPC := grpc.NewServer(grpc.Creds(tlsCreds), grpc.KeepaliveEnforcementPolicy(kp), ks)
	a.disp.Register(xdsGRPC)
	caGRPC := grpc.NewServer(grpc.Creds(tlsCreds), grpc.KeepaliveEnforcementPolicy(kp), ks)
	a.ca.Register(caGRPC)
	servers := []struct {
		name string
		srv  *grpc.Server
		lis  net.Listener
	}{{"xds", xdsGRPC, xdsLis}, {"ca", caGRPC, caLis}}
	if devLis != nil {
		devGRPC := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(kp), ks)
		a.disp.Register(devGRPC)
		servers = append(servers, struct {
			name string
			srv  *grpc.Server
			lis  net.Listener
		}{"xds-plaintext", devGRPC, devLis})
	}
	httpSrv := &http.Server{Handler: a.monitoringHandler(), ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return wrap("kube", a.ctrl.Run(gctx)) })
	g.Go(func() error { return wrap("xds", a.xds.Run(gctx)) })
	g.Go(func() error { return wrap("waypoint xds", a.wpXDS.Run(gctx)) })
	g.Go(func() error { return wrap("ca", a.ca.Run(gctx)) })
	g.Go(func() error { return wrap("servingcert", a.rotator.Run(gctx)) })
	g.Go(func() error { return wrap("leader election", a.elector.Run(gctx)) })
	g.Go(func() error {
		// Serve xDS only once the model is complete (see xds.MarkReady).
		select {
		case <-a.ctrl.Synced():
			a.xds.MarkReady()
			a.log.Info("serving workload discovery")
		case <-gctx.Done():
		}
		return nil
	})
	for _, s := range servers {
		g.Go(func() error {
			a.log.Info("gRPC server listening", "server", s.name, "addr", s.lis.Addr().String())
			return wrap(s.name+" server", s.srv.Serve(s.lis))
		})
	}
	g.Go(func() error {
		a.log.Info("monitoring server listening", "addr", monLis.Addr().String())
		if err := httpSrv.Serve(monLis); !errors.Is(err, http.ErrServerClosed) {
			return wrap("monitoring server", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.log.Info("shutting down")
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(func() {
				t := time.AfterFunc(shutdownGrace, s.srv.Stop)
				s.srv.GracefulStop()
				t.Stop()
			})
		}
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := httpSrv.Shutdown(sctx); err != nil {
			_ = httpSrv.Close()
		}
		wg.Wait()
		return nil
	})
	err = g.Wait()
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func wrap(component string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", component, err)
}

// monitoringHandler serves /metrics, /healthz (the process is up) and
// /readyz (see Ready).
func (a *App) monitoringHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.Ready()
		if !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, why)
	})
	return mux
}
