// Package admin serves ztunnel's introspection and health endpoints on three
// listeners:
//
//   - admin (loopback only, default 127.0.0.1:15000): /config_dump, /certs,
//     /connections, /workloads, /services, /policies, /debug/pprof/*
//   - ready (default :15021): /healthz/ready
//   - metrics (default :15020): /metrics (Prometheus text format)
//
// The data comes from a Source the ztunnel app implements; this package only
// renders it. Certificates in the output never include keys.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"ambit.dev/ztunnel/pkg/adminapi"
)

// DefaultShutdownTimeout bounds the graceful shutdown of the listeners.
const DefaultShutdownTimeout = 5 * time.Second

// ServerConfig configures a Server. An empty address disables that
// listener. Two listeners given the same address (other than port 0) share
// one socket.
type ServerConfig struct {
	// AdminAddr must be a loopback address (127.0.0.1:15000, [::1]:15000
	// or localhost:15000): the admin endpoints expose certificates and
	// connection details.
	AdminAddr string
	// MetricsAddr serves /metrics from Gatherer.
	MetricsAddr string
	// ReadyAddr serves /healthz/ready.
	ReadyAddr string
	// Gatherer is required when MetricsAddr is set.
	Gatherer prometheus.Gatherer
	// Logger defaults to slog.Default(); it is tagged component=admin.
	Logger *slog.Logger
	// ShutdownTimeout bounds graceful shutdown (default
	// DefaultShutdownTimeout); requests still running after it are cut.
	ShutdownTimeout time.Duration
}

// Server serves the admin, readiness and metrics endpoints.
type Server struct {
	cfg     ServerConfig
	src     Source
	log     *slog.Logger
	started atomic.Bool

	bound      chan struct{} // closed once Run has bound (or failed to)
	boundAddrs BoundAddrs
	boundErr   error
}

// BoundAddrs are the addresses Run actually listens on (useful with port 0);
// empty for a disabled listener.
type BoundAddrs struct {
	Admin, Metrics, Ready string
}

// NewServer validates cfg and returns a Server. It opens nothing: Run does.
func NewServer(cfg ServerConfig, src Source) (*Server, error) {
	if src == nil {
		return nil, errors.New("admin: a Source is required")
	}
	if cfg.AdminAddr != "" {
		if err := CheckLoopback(cfg.AdminAddr); err != nil {
			return nil, err
		}
	}
	for _, a := range []struct{ name, addr string }{{"metrics", cfg.MetricsAddr}, {"ready", cfg.ReadyAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return nil, fmt.Errorf("admin: %s address %q is not host:port (e.g. :15020): %w", a.name, a.addr, err)
		}
	}
	if cfg.MetricsAddr != "" && cfg.Gatherer == nil {
		return nil, errors.New("admin: ServerConfig.Gatherer is required to serve /metrics")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	return &Server{
		cfg:   cfg,
		src:   src,
		log:   cfg.Logger.With("component", "admin"),
		bound: make(chan struct{}),
	}, nil
}

// CheckLoopback returns an error saying why addr is not a loopback
// host:port. The admin port serves certificates and connection details, so
// it must never be reachable from outside the node.
func CheckLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin: admin address %q is not host:port; use a loopback address such as 127.0.0.1:15000: %w", addr, err)
	}
	const why = "the admin port exposes certificates, workloads and connections, so it must listen on loopback only"
	if host == "" {
		return fmt.Errorf("admin: admin address %q listens on all interfaces; %s: use 127.0.0.1:%s or [::1]:%s", addr, why, port, port)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("admin: admin address %q: host must be a loopback IP or localhost; %s: use 127.0.0.1:%s", addr, why, port)
	}
	if !ip.IsLoopback() {
		return fmt.Errorf("admin: admin address %q is not a loopback address; %s: use 127.0.0.1:%s or [::1]:%s", addr, why, port, port)
	}
	return nil
}

// BoundAddrs waits until Run has bound its listeners and returns their
// addresses, or Run's listen error, or ctx's error.
func (s *Server) BoundAddrs(ctx context.Context) (BoundAddrs, error) {
	select {
	case <-s.bound:
		return s.boundAddrs, s.boundErr
	case <-ctx.Done():
		return BoundAddrs{}, ctx.Err()
	}
}

type listener struct {
	addr  string
	names []string // admin, metrics, ready
	mux   *http.ServeMux
	ln    net.Listener
}

// Run binds the listeners and serves until ctx is done, then shuts down
// gracefully. It returns only once every listener is closed and every
// goroutine it started has stopped: nil after ctx is cancelled, or the
// error that stopped a listener. It may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("admin: Server.Run called twice")
	}
	lns, err := s.listen(ctx)
	if err != nil {
		s.boundErr = err
		close(s.bound)
		return err
	}
	close(s.bound)

	servers := make([]*http.Server, len(lns))
	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for i, l := range lns {
		srv := &http.Server{
			Handler:           l.mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
			// Cancelled at shutdown, so long requests (pprof profiles)
			// end instead of holding shutdown up.
			BaseContext: func(net.Listener) context.Context { return ctx },
		}
		servers[i] = srv
		s.log.Info("listening", "addr", l.ln.Addr().String(), "endpoints", l.names)
		wg.Go(func() {
			if err := srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin: serving %v on %s: %w", l.names, l.ln.Addr(), err)
			}
		})
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	for i, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			s.log.Warn("graceful shutdown timed out; closing open requests", "addr", lns[i].ln.Addr().String(), "error", err)
			_ = srv.Close()
		}
	}
	wg.Wait()
	return runErr
}

// listen binds every configured address; on failure it closes what it
// opened.
func (s *Server) listen(ctx context.Context) ([]*listener, error) {
	var lns []*listener
	byAddr := map[string]*listener{}
	add := func(name, addr string, register func(*http.ServeMux)) {
		if addr == "" {
			return
		}
		l := byAddr[addr]
		if l == nil {
			l = &listener{addr: addr, mux: http.NewServeMux()}
			// Port 0 asks for a fresh port each time: never shared.
			if _, port, _ := net.SplitHostPort(addr); port != "0" {
				byAddr[addr] = l
			}
			lns = append(lns, l)
		}
		l.names = append(l.names, name)
		register(l.mux)
	}
	add("admin", s.cfg.AdminAddr, func(m *http.ServeMux) { registerAdmin(m, s.src) })
	add("metrics", s.cfg.MetricsAddr, func(m *http.ServeMux) {
		m.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
			ErrorHandling: promhttp.ContinueOnError,
		}))
	})
	add("ready", s.cfg.ReadyAddr, func(m *http.ServeMux) { m.Handle("GET /healthz/ready", ReadyHandler(s.src)) })

	closeAll := func() {
		for _, l := range lns {
			if l.ln != nil {
				_ = l.ln.Close()
			}
		}
	}
	var lc net.ListenConfig
	for _, l := range lns {
		ln, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("admin: listening on %s for %v (is another ztunnel or process using the port?): %w", l.addr, l.names, err)
		}
		l.ln = ln
	}
	for _, l := range lns {
		bound := l.ln.Addr().String()
		for _, name := range l.names {
			switch name {
			case "admin":
				// "localhost" passed CheckLoopback: make sure it resolved to loopback.
				if ap, err := netip.ParseAddrPort(bound); err != nil || !ap.Addr().Unmap().IsLoopback() {
					closeAll()
					return nil, fmt.Errorf("admin: admin address %s bound to %s, which is not loopback: use 127.0.0.1 or [::1]", l.addr, bound)
				}
				s.boundAddrs.Admin = bound
			case "metrics":
				s.boundAddrs.Metrics = bound
			case "ready":
				s.boundAddrs.Ready = bound
			}
		}
	}
	return lns, nil
}

// AdminHandler serves the admin endpoints of src (without the loopback
// check, which is the listener's job).
func AdminHandler(src Source) http.Handler {
	m := http.NewServeMux()
	registerAdmin(m, src)
	return m
}

func registerAdmin(m *http.ServeMux, src Source) {
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "ztunnel admin\n\n"+
			"/config_dump   everything below, as JSON\n"+
			"/workloads     workloads known to this ztunnel\n"+
			"/services      services\n"+
			"/policies      authorization policies\n"+
			"/certs         certificates held, per identity (no keys)\n"+
			"/connections   connections being proxied\n"+
			"/debug/pprof/  Go profiles\n")
	})
	m.HandleFunc("GET "+adminapi.PathConfigDump, func(w http.ResponseWriter, _ *http.Request) {
		d := src.ConfigDump()
		d.Workloads = nonNil(d.Workloads)
		d.Services = nonNil(d.Services)
		d.Policies = nonNil(d.Policies)
		d.Certificates = nonNil(d.Certificates)
		d.Connections = nonNil(d.Connections)
		writeJSON(w, d)
	})
	m.HandleFunc("GET "+adminapi.PathWorkloads, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, nonNil(src.ConfigDump().Workloads))
	})
	m.HandleFunc("GET "+adminapi.PathServices, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, nonNil(src.ConfigDump().Services))
	})
	m.HandleFunc("GET "+adminapi.PathPolicies, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, nonNil(src.ConfigDump().Policies))
	})
	m.HandleFunc("GET "+adminapi.PathCerts, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, nonNil(src.ConfigDump().Certificates))
	})
	m.HandleFunc("GET "+adminapi.PathConnections, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, nonNil(src.ConfigDump().Connections))
	})
	m.HandleFunc("GET /debug/pprof/", pprof.Index)
	m.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	m.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// ReadyHandler answers 200 "ready" when src.Ready() is nil, else 503 with
// the reason.
func ReadyHandler(src Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := src.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprint(w, "ready\n")
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "encoding JSON: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
