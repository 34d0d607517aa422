// Package app wires ambit-waypoint together: the certificate manager
// (own SVID from the mesh CA), the xDS client, the HBONE proxy and the
// readiness, metrics and admin endpoints.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"ambit.dev/pkg/caclient"
	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/config"
	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/proxy"
	"ambit.dev/waypoint/internal/xdsclient"
)

// maxXDSMessage bounds one xDS response (many services bound to one
// waypoint exceed gRPC's 4 MiB default).
const maxXDSMessage = 64 << 20

// App is one waypoint. Build it with New and call Run once.
type App struct {
	cfg   config.Config
	log   *slog.Logger
	id    identity.ID
	reg   *prometheus.Registry
	conns []*grpc.ClientConn
	certs *identity.Manager
	roots func() []*x509.Certificate
	proxy *proxy.Proxy
	xds   *xdsclient.Client

	bound chan struct{}
	addrs Addrs
}

// Addrs are the addresses the App listens on, known once Bound is closed.
type Addrs struct {
	HBONE, Ready, Metrics, Admin net.Addr
}

// New builds the App from cfg: it reads the root certificate file and
// prepares (but does not open) the control plane connections.
func New(cfg config.Config, log *slog.Logger) (*App, error) {
	id, err := cfg.Identity()
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: log, id: id, reg: prometheus.NewRegistry(), bound: make(chan struct{})}
	if err := a.build(); err != nil {
		a.closeConns()
		return nil, err
	}
	return a, nil
}

func (a *App) build() error {
	cfg := a.cfg
	rootPEM, err := os.ReadFile(cfg.RootCertFile)
	if err != nil {
		return fmt.Errorf("read --root-cert-file (the mesh root, ConfigMap ambit-root-cert): %w", err)
	}
	fileRoots, err := identity.ParseCertsPEM(rootPEM)
	if err != nil {
		return fmt.Errorf("--root-cert-file: %w", err)
	}
	tlsCreds, err := caclient.TransportCredentials(rootPEM, cfg.ControlPlaneName)
	if err != nil { // the CA always needs TLS: the token is never sent in the clear
		return fmt.Errorf("--root-cert-file/--control-plane-name: %w", err)
	}
	dial := func(flag, addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxXDSMessage)))
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", flag, addr, err)
		}
		a.conns = append(a.conns, conn)
		return conn, nil
	}
	caConn, err := dial("--ca-address", cfg.CAAddress, tlsCreds)
	if err != nil {
		return err
	}
	xdsCreds := tlsCreds
	if cfg.XDSPlaintext {
		xdsCreds = insecure.NewCredentials()
	}
	xdsConn, err := dial("--xds-address", cfg.XDSAddress, xdsCreds)
	if err != nil {
		return err
	}
	signer, err := caclient.New(caConn, cfg.TokenFile)
	if err != nil {
		return err
	}
	if err := a.reg.Register(collectors.NewGoCollector()); err != nil {
		return err
	}
	if err := a.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return err
	}
	a.certs, err = identity.NewManager(identity.ManagerConfig{Signer: signer, TTL: cfg.CertTTL, Registerer: a.reg, Logger: a.log})
	if err != nil {
		return err
	}
	// The CA's trust bundle (fetched with the certificate) wins over the
	// file once known, so a root rotation reaches the data path.
	a.roots = func() []*x509.Certificate {
		if r := a.certs.Roots(); len(r) > 0 {
			return r
		}
		return fileRoots
	}
	metrics, err := proxy.NewMetrics(a.reg)
	if err != nil {
		return err
	}
	a.proxy, err = proxy.New(proxy.Config{
		Identity:     a.id,
		Certificate:  func(ctx context.Context) (*tls.Certificate, error) { return a.certs.TLSCertificate(ctx, a.id) },
		Roots:        a.roots,
		TrustDomain:  cfg.TrustDomain,
		Metrics:      metrics,
		DrainTimeout: cfg.DrainPeriod,
		Logger:       a.log,
		// The access log (XDS.md §13) goes to stdout, the logs to stderr.
		AccessLog: os.Stdout,
	})
	if err != nil {
		return err
	}
	node, err := xdsclient.NodeInfo{
		PodIPs: cfg.PodIPs, PodName: cfg.PodName, Namespace: cfg.PodNamespace,
		ServiceAccount: cfg.ServiceAccount, Gateway: cfg.Gateway, ClusterDomain: cfg.ClusterDomain,
	}.Node()
	if err != nil {
		return err
	}
	a.xds, err = xdsclient.New(xdsclient.Config{
		Conn: xdsConn, Node: node, TrustDomain: cfg.TrustDomain, Logger: a.log,
		OnConfig: a.setConfig,
	})
	return err
}

// setConfig hands a new xDS config to the proxy.
func (a *App) setConfig(c *model.Config) {
	old := a.proxy.Config()
	a.proxy.SetConfig(c)
	if old == nil || len(old.Chains) != len(c.Chains) || len(old.Clusters) != len(c.Clusters) || len(old.Missing) != len(c.Missing) {
		a.log.Info("configuration updated", "chains", len(c.Chains), "clusters", len(c.Clusters), "routes", len(c.Routes), "missing", c.Missing)
	}
}

// Bound is closed once Run has opened its listeners (or failed to).
func (a *App) Bound() <-chan struct{} { return a.bound }

// Addrs returns the listening addresses; valid after Bound is closed.
func (a *App) Addrs() Addrs { return a.addrs }

// Ready returns nil once the waypoint holds a valid certificate and has
// received a complete configuration; else it says what is missing.
func (a *App) Ready() error {
	var errs []error
	if !a.hasCertificate() {
		err := fmt.Errorf("no certificate for %s from the CA at %s yet", a.id, a.cfg.CAAddress)
		for _, ci := range a.certs.Snapshot() {
			if ci.Identity == a.id.String() && ci.LastError != "" {
				err = fmt.Errorf("%w (last error: %s)", err, ci.LastError)
			}
		}
		errs = append(errs, err)
	}
	if err := a.xds.Ready(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (a *App) hasCertificate() bool {
	now := time.Now()
	for _, ci := range a.certs.Snapshot() {
		if ci.Identity == a.id.String() && ci.Serial != "" && now.Before(ci.NotAfter) {
			return true
		}
	}
	return false
}

// Run opens the listeners and runs every component until ctx is done;
// then it drains and returns once everything it started has stopped.
func (a *App) Run(ctx context.Context) error {
	defer a.closeConns()
	lns, err := a.listen()
	close(a.bound)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	run := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	run("certificates", a.certs.Run)
	run("certificate", func(ctx context.Context) error {
		// The first fetch; the manager retries with backoff and rotates.
		if _, err := a.certs.Get(ctx, a.id); err != nil && ctx.Err() == nil {
			a.log.Warn("first certificate request failed; retrying with backoff", "identity", a.id.String(), "error", err)
		}
		return nil
	})
	run("xds", a.xds.Run)
	run("proxy", func(ctx context.Context) error { return a.proxy.Run(ctx, lns[0]) })
	for i, h := range []http.Handler{a.readyHandler(), promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}), a.adminHandler()} {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
		ln := lns[i+1]
		run(ln.Addr().String(), func(ctx context.Context) error {
			stop := context.AfterFunc(ctx, func() { srv.Close() })
			defer stop()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	a.log.Info("waypoint started", "identity", a.id.String(), "gateway", a.cfg.Gateway, "hbone", lns[0].Addr().String())
	select {
	case <-ctx.Done():
	case err = <-errc:
		a.log.Error("component failed; stopping", "error", err)
	}
	cancel()
	wg.Wait()
	return err
}

// listen opens the HBONE, ready, metrics and admin listeners, in that
// order.
func (a *App) listen() ([]net.Listener, error) {
	var lns []net.Listener
	for _, l := range []struct{ flag, addr string }{
		{"--hbone-addr", a.cfg.HBONEAddr}, {"--ready-addr", a.cfg.ReadyAddr},
		{"--metrics-addr", a.cfg.MetricsAddr}, {"--admin-addr", a.cfg.AdminAddr},
	} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return nil, fmt.Errorf("%s %s: %w", l.flag, l.addr, err)
		}
		lns = append(lns, ln)
	}
	a.addrs = Addrs{HBONE: lns[0].Addr(), Ready: lns[1].Addr(), Metrics: lns[2].Addr(), Admin: lns[3].Addr()}
	return lns, nil
}

func (a *App) closeConns() {
	for _, c := range a.conns {
		_ = c.Close()
	}
	a.conns = nil
}

func (a *App) readyHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

func (a *App) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, struct {
			Identity      string              `json:"identity"`
			Gateway       string              `json:"gateway"`
			Connected     bool                `json:"connected"`
			Subscriptions map[string][]string `json:"subscriptions"`
			Config        *model.Config       `json:"config"`
		}{a.id.String(), a.cfg.Gateway, a.xds.Connected(), a.xds.Subscriptions(), a.proxy.Config()})
	})
	mux.HandleFunc("GET /certs", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, a.certs.Snapshot()) })
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
