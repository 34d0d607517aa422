// Package app wires ambit-node-agent together: the ZDS server
// (internal/zdsserver) on --zds-socket, the agent (internal/agent: pod
// controller and capture), the CNI server (internal/cniserver) on
// --cni-socket, the CNI plugin installer hook, and two HTTP servers:
// /healthz/ready on --ready-addr and /metrics on --metrics-addr.
//
// Goroutines: the agent's informers and reconcile workers, the ZDS accept
// loop and one goroutine (plus one reader) per ztunnel session, the CNI
// HTTP server, the two HTTP servers, and the installer's Run. On SIGTERM
// everything stops and the sockets are closed; no rule is removed and
// ztunnel is told nothing, so a restarted agent un-enrols nothing.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"ambit.dev/cni-plugin/internal/agent"
	"ambit.dev/cni-plugin/internal/cniserver"
	"ambit.dev/cni-plugin/internal/config"
	"ambit.dev/cni-plugin/internal/install"
	"ambit.dev/cni-plugin/internal/netns"
	"ambit.dev/cni-plugin/internal/zdsserver"
	"ambit.dev/pkg/redirect"
	"ambit.dev/pkg/zds"
)

// shutdownGrace bounds how long Run waits for HTTP requests in flight after
// ctx ends.
const shutdownGrace = 5 * time.Second

// Installer puts the ambit-cni plugin on the node (copies the binary, adds
// it to the CNI network configuration) and keeps it there. HOOK: the
// implementation is cni-plugin/internal/install; cmd/ambit-node-agent
// passes it in Options.Installer. Run calls Install once both sockets
// listen (so the first plugin call finds the agent), then Run until ctx
// ends. The agent does NOT uninstall on SIGTERM: a restarting agent must
// not leave a window in which new pods skip the plugin.
type Installer interface {
	// Install installs the plugin; an error stops the agent.
	Install(ctx context.Context) error
	// Run keeps the installation in place (e.g. re-adds the plugin when the
	// primary CNI rewrites its configuration) until ctx ends.
	Run(ctx context.Context) error
}

// Options are the parts of the agent that are not configuration.
type Options struct {
	// Installer, if set, installs the CNI plugin (see Installer).
	Installer Installer
	// Rules, if set, replaces redirect.NewInstaller (tests).
	Rules agent.Rules
	// Namespaces, if set, replaces netns.NewScanner (tests).
	Namespaces agent.Namespaces
}

// App is the node agent. Build it with New and Run it once.
type App struct {
	cfg   config.Config
	log   *slog.Logger
	reg   *prometheus.Registry
	opts  Options
	zds   *zdsserver.Server
	agent *agent.Agent
	cni   *cniserver.Server

	started   atomic.Bool
	listening atomic.Bool
	mu        sync.Mutex
	addrs     Addrs
	addrsSet  chan struct{}
}

// Addrs are the resolved addresses of the HTTP servers.
type Addrs struct {
	Ready, Metrics net.Addr
}

// NewKubeClient returns a client for the cluster of kubeconfig, or of the
// pod's ServiceAccount when kubeconfig is empty.
func NewKubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("app: in-cluster Kubernetes configuration (outside a pod, pass --kubeconfig): %w", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("app: reading kubeconfig %s: %w", kubeconfig, err)
		}
	}
	rc.UserAgent = "ambit-node-agent"
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("app: Kubernetes client: %w", err)
	}
	return c, nil
}

// New builds the node agent on client. It does no I/O.
func New(cfg config.Config, client kubernetes.Interface, log *slog.Logger, opts Options) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil || log == nil {
		return nil, errors.New("app: a Kubernetes client and a logger are required")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	a := &App{cfg: cfg, log: log, reg: reg, opts: opts, addrsSet: make(chan struct{})}
	zsrv, err := zdsserver.New(log.With("component", "zds"), zdsserver.Options{
		RequestTimeout: cfg.ZDSRequestTimeout,
		Registerer:     reg,
		// A ztunnel that acked its replay may unblock pending pods.
		OnLive: func() { a.agent.EnqueueAll() },
	})
	if err != nil {
		return nil, err
	}
	rules := opts.Rules
	if rules == nil {
		rules = redirect.NewInstaller(log)
	}
	nss := opts.Namespaces
	if nss == nil {
		nss = netns.NewScanner(log.With("component", "netns"))
	}
	ag, err := agent.New(client, rules, nss, zsrv, agent.Config{
		NodeName:       cfg.NodeName,
		Backend:        cfg.IptablesBackend,
		CNIAddTimeout:  cfg.CNIAddTimeout,
		ZtunnelTimeout: cfg.ZDSRequestTimeout,
		Registerer:     reg,
	}, log.With("component", "agent"))
	if err != nil {
		return nil, err
	}
	cni, err := cniserver.New(log.With("component", "cni"), ag, cniserver.Options{Registerer: reg})
	if err != nil {
		return nil, err
	}
	a.zds, a.agent, a.cni = zsrv, ag, cni
	return a, nil
}

// Ready reports whether the agent is ready: informers synced (and every
// enrolled pod recorded for ztunnel) and both sockets listening.
func (a *App) Ready() (bool, string) {
	if !a.listening.Load() {
		return false, "the ZDS and CNI sockets are not listening yet"
	}
	if !a.agent.HasSynced() {
		return false, "the pod and namespace caches have not synced yet"
	}
	return true, "ready"
}

// Addrs returns the HTTP servers' addresses once they listen.
func (a *App) Addrs(ctx context.Context) (Addrs, error) {
	select {
	case <-a.addrsSet:
	case <-ctx.Done():
		return Addrs{}, ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addrs, nil
}

// Run listens, starts everything and serves until ctx ends or a component
// fails; then it stops everything and returns (nil after ctx ended, else
// the first error). Every goroutine it started has stopped when it
// returns.
func (a *App) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("app: Run called twice")
	}
	var lc net.ListenConfig
	readyLis, err := lc.Listen(ctx, "tcp", a.cfg.ReadyAddr)
	if err != nil {
		return fmt.Errorf("app: listening on %s (--ready-addr): is another process using the port?: %w", a.cfg.ReadyAddr, err)
	}
	metricsLis, err := lc.Listen(ctx, "tcp", a.cfg.MetricsAddr)
	if err != nil {
		readyLis.Close()
		return fmt.Errorf("app: listening on %s (--metrics-addr): is another process using the port?: %w", a.cfg.MetricsAddr, err)
	}
	a.mu.Lock()
	a.addrs = Addrs{Ready: readyLis.Addr(), Metrics: metricsLis.Addr()}
	a.mu.Unlock()
	close(a.addrsSet)

	if err := os.MkdirAll(filepath.Dir(a.cfg.ZDSSocket), 0o750); err != nil {
		readyLis.Close()
		metricsLis.Close()
		return fmt.Errorf("app: create the ZDS socket directory %s: %w (is the hostPath mounted?)", filepath.Dir(a.cfg.ZDSSocket), err)
	}
	zdsLis, err := zds.Listen(a.cfg.ZDSSocket)
	if err != nil {
		readyLis.Close()
		metricsLis.Close()
		return fmt.Errorf("app: %w", err)
	}
	cniLis, err := cniserver.Listen(a.cfg.CNISocket)
	if err != nil {
		readyLis.Close()
		metricsLis.Close()
		zdsLis.Close()
		return fmt.Errorf("app: %w", err)
	}
	a.listening.Store(true)
	a.log.Info("listening", "zds", a.cfg.ZDSSocket, "cni", a.cfg.CNISocket,
		"ready", readyLis.Addr().String(), "metrics", metricsLis.Addr().String(), "node", a.cfg.NodeName)

	readySrv := &http.Server{Handler: a.readyHandler(), ReadHeaderTimeout: 10 * time.Second}
	metricsSrv := &http.Server{Handler: a.metricsHandler(), ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return wrap("agent", a.agent.Run(gctx)) })
	g.Go(func() error { return wrap("zds", a.zds.Serve(gctx, zdsLis)) })
	g.Go(func() error { return wrap("cni", a.cni.Serve(gctx, cniLis)) })
	if a.opts.Installer != nil {
		g.Go(func() error {
			switch err := a.opts.Installer.Install(gctx); {
			case errors.Is(err, install.ErrNoPrimaryConfig):
				// The primary CNI has not written its configuration yet;
				// Run adds the plugin as soon as it does.
				a.log.Warn("ambit-cni not in the CNI configuration yet", "error", err)
			case err != nil:
				return wrap("install ambit-cni", err)
			default:
				a.log.Info("ambit-cni installed")
			}
			return wrap("ambit-cni installer", a.opts.Installer.Run(gctx))
		})
	}
	for _, s := range []struct {
		name string
		srv  *http.Server
		lis  net.Listener
	}{{"ready server", readySrv, readyLis}, {"metrics server", metricsSrv, metricsLis}} {
		g.Go(func() error {
			if err := s.srv.Serve(s.lis); !errors.Is(err, http.ErrServerClosed) {
				return wrap(s.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		a.log.Info("shutting down (rules stay in place; ztunnel keeps its workloads)")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		for _, s := range []*http.Server{readySrv, metricsSrv} {
			if err := s.Shutdown(sctx); err != nil {
				_ = s.Close()
			}
		}
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

// readyHandler serves only /healthz/ready: it listens on the node's
// addresses, for the kubelet.
func (a *App) readyHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.Ready()
		if !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, why)
	})
	return mux
}

func (a *App) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	return mux
}
