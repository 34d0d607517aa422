// Package proxy is the waypoint's data path. It terminates HBONE
// (ambit.dev/pkg/hbone, mutual TLS with the waypoint's own certificate;
// the client certificate names the source workload), looks each CONNECT's
// :authority up in the current model.Config, and
//
//   - for a tcp service: picks an endpoint (round robin over the healthy
//     ones), opens an HBONE stream to its ztunnel with the waypoint's
//     certificate, requiring the endpoint's identity, and splices bytes;
//   - for an HTTP service: serves HTTP/1.1 or h2c (prior knowledge) on the
//     stream and reverse-proxies each request by the route table, over
//     HBONE streams to the chosen endpoint.
//
// An unknown destination is refused with 400 before anything is dialed
// (XDS.md §4.2); no configuration yet, 503. Both wait up to
// Config.ConfigWait for a configuration that knows the destination: the
// control plane tells ztunnels and the waypoint about a new binding at
// the same time, and a ztunnel may act on it first.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/model"
)

// DefaultDrainTimeout bounds how long Run lets open streams finish.
const DefaultDrainTimeout = 5 * time.Second

// DefaultConfigWait bounds how long a CONNECT to a destination the
// current configuration does not know waits for one that does.
const DefaultConfigWait = 2 * time.Second

// Config configures a Proxy. Identity, Certificate, Roots, TrustDomain
// and Metrics are required.
type Config struct {
	// Identity is the waypoint's own SPIFFE ID.
	Identity identity.ID
	// Certificate returns the waypoint's current certificate, presented
	// to sources and to endpoints.
	Certificate func(ctx context.Context) (*tls.Certificate, error)
	// Roots returns the mesh trust anchors.
	Roots       hbone.RootsFunc
	TrustDomain string
	Metrics     *Metrics
	// DrainTimeout bounds the graceful part of shutdown.
	DrainTimeout time.Duration
	// ConfigWait bounds how long a CONNECT whose destination the current
	// configuration lacks waits for a configuration that has it, before
	// the 400 (or, with no configuration at all, the 503). When a Service
	// is bound to the waypoint, the control plane pushes the binding to
	// the ztunnels and the listener to the waypoint at once; a client's
	// ztunnel that gets it first must not see its connection refused.
	// 0 is DefaultConfigWait; negative does not wait.
	ConfigWait time.Duration
	// Now is the clock of outlier detection and EWMA (tests); nil is
	// time.Now.
	Now func() time.Time
	// DialTCP replaces how HBONE connections to endpoints are opened
	// (tests); nil dials t.HBONEAddr.
	DialTCP func(ctx context.Context, t hbone.Target) (net.Conn, error)
	Logger  *slog.Logger
	// AccessLog receives the JSON access log lines of the HTTP chains
	// that configure one (XDS.md §13); nil: no access log.
	AccessLog io.Writer
	// AccessLogFlush is how long access log lines may wait in the
	// buffer before they are written (default DefaultAccessLogFlush);
	// negative writes every line at once.
	AccessLogFlush time.Duration
}

// DefaultAccessLogFlush is Config.AccessLogFlush's default: lines reach
// the log within a second, in one write per batch.
const DefaultAccessLogFlush = time.Second

// Proxy is the data path. Build it with New, feed it configs with
// SetConfig and serve a listener with Run.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	server *hbone.Server
	dialer *hbone.Dialer
	http   *http.Server
	// streams hands HTTP-carrying streams to http.
	streams *streamListener

	accessLog *accessLogger

	conf atomic.Pointer[model.Config]
	// confMu guards confChanged, which SetConfig closes (and replaces)
	// after each new configuration, waking the CONNECTs waiting for one.
	confMu      sync.Mutex
	confChanged chan struct{}
	clusters    sync.Map // cluster name -> *clusterState
}

// New validates cfg and builds the proxy; it opens nothing.
func New(cfg Config) (*Proxy, error) {
	if cfg.Identity.Validate() != nil || cfg.Certificate == nil || cfg.Roots == nil || cfg.TrustDomain == "" || cfg.Metrics == nil {
		return nil, errors.New("proxy: Config.Identity, Certificate, Roots, TrustDomain and Metrics are required")
	}
	if cfg.ConfigWait == 0 {
		cfg.ConfigWait = DefaultConfigWait
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AccessLogFlush == 0 {
		cfg.AccessLogFlush = DefaultAccessLogFlush
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("component", "proxy"), streams: newStreamListener(), accessLog: &accessLogger{w: cfg.AccessLog, flushEvery: cfg.AccessLogFlush}, confChanged: make(chan struct{})}
	tlsCfg, err := hbone.ServerTLS(func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return cfg.Certificate(hello.Context())
	}, cfg.Roots, cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.server, err = hbone.NewServer(hbone.ServerConfig{
		TLS:       tlsCfg,
		Authorize: func(context.Context, hbone.Request) error { return nil }, // L7 policy comes later
		Handle:    p.handle,
		Dial:      p.dial,
		Waypoint:  true,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.dialer, err = hbone.NewDialer(hbone.DialerConfig{
		Certificate: func(ctx context.Context, id identity.ID) (*tls.Certificate, error) {
			if id != cfg.Identity {
				return nil, fmt.Errorf("proxy: the waypoint only holds the certificate of %s, not %s", cfg.Identity, id)
			}
			return cfg.Certificate(ctx)
		},
		Roots:   cfg.Roots,
		DialTCP: cfg.DialTCP,
		Logger:  cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.http = p.newHTTPServer()
	cfg.Metrics.onCollect(p.advanceOutliers)
	return p, nil
}

// SetConfig makes c the configuration of new streams and requests.
func (p *Proxy) SetConfig(c *model.Config) {
	p.confMu.Lock()
	p.conf.Store(c)
	close(p.confChanged)
	p.confChanged = make(chan struct{})
	p.confMu.Unlock()
	p.clusters.Range(func(name, _ any) bool {
		if c == nil || c.Clusters[name.(string)] == nil {
			p.clusters.Delete(name)
			p.cfg.Metrics.forgetCluster(name.(string))
		}
		return true
	})
}

// Config returns the current configuration (nil before the first).
func (p *Proxy) Config() *model.Config { return p.conf.Load() }

// Run serves HBONE on ln until ctx is done, then drains: it stops taking
// streams, closes idle HTTP connections, lets open streams finish for
// DrainTimeout and closes the rest. When it returns, everything it
// started has stopped and ln is closed.
func (p *Proxy) Run(ctx context.Context, ln net.Listener) error {
	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServe()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() {
		if err := p.http.Serve(p.streams); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			errc <- fmt.Errorf("proxy: HTTP server: %w", err)
		}
	})
	wg.Go(func() {
		if err := p.server.Serve(serveCtx, ln); err != nil && !errors.Is(err, hbone.ErrServerClosed) {
			errc <- err
		}
	})
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}

	drain, cancel := context.WithTimeout(context.Background(), p.cfg.DrainTimeout)
	defer cancel()
	var dw sync.WaitGroup
	dw.Go(func() {
		if p.http.Shutdown(drain) != nil {
			p.http.Close()
		}
	})
	if p.server.Shutdown(drain) != nil {
		p.log.Info("drain period over; closing the remaining streams")
	}
	stopServe()
	p.http.Close()
	dw.Wait()
	wg.Wait()
	p.dialer.Close()
	p.accessLog.close()
	return err
}

// handle is the HBONE server's Handle: it decides what a CONNECT
// becomes. A stream whose filter chain carries HTTP is served by the HTTP
// server on the stream itself; a TCP chain's goes on to dial.
func (p *Proxy) handle(ctx context.Context, r hbone.Request) (func(*hbone.Conn), error) {
	_, ch, err := p.chainOf(ctx, r.Dst)
	if err != nil {
		return nil, err
	}
	if !ch.Protocol.IsHTTP() {
		return nil, nil
	}
	select {
	case <-p.streams.done:
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Reason: "the waypoint is shutting down"}
	default:
	}
	src := sourceOf(r)
	return func(c *hbone.Conn) { p.serveHTTPStream(ctx, c, r.Dst, src) }, nil
}

// dial is the HBONE server's Dial for the streams handle passed on: it
// connects a TCP filter chain's stream to an endpoint of its cluster.
func (p *Proxy) dial(ctx context.Context, r hbone.Request) (net.Conn, error) {
	cfg, ch, err := p.chainOf(ctx, r.Dst)
	if err != nil {
		return nil, err
	}
	if ch.Protocol.IsHTTP() {
		// The listener changed between handle and here.
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Reason: "the filter chain for " + r.Dst.String() + " changed while the stream was set up; retry"}
	}
	return p.dialTCP(ctx, cfg, ch, sourceOf(r))
}

// chainOf is the configuration and filter chain for dst (chainFor), or
// the status to answer when there is none.
func (p *Proxy) chainOf(ctx context.Context, dst netip.AddrPort) (*model.Config, *model.Chain, error) {
	cfg, ch := p.chainFor(ctx, dst)
	if cfg == nil {
		return nil, nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Reason: "the waypoint has no configuration from the control plane yet"}
	}
	if ch == nil {
		return nil, nil, &hbone.StatusError{Code: http.StatusBadRequest,
			Reason: fmt.Sprintf("unknown destination %s: no service port bound to this waypoint has this address", dst)}
	}
	return cfg, ch, nil
}

// chainFor returns the current configuration and its chain for dst,
// waiting up to ConfigWait (or until ctx ends) for a configuration where
// that chain is warm (chainWarm); then the chain as it is, nil when
// there is none.
func (p *Proxy) chainFor(ctx context.Context, dst netip.AddrPort) (*model.Config, *model.Chain) {
	// Every CONNECT comes here: the common case, a warm chain, takes no
	// lock and no timer.
	cfg := p.conf.Load()
	if ch := cfg.Chain(dst); chainWarm(cfg, ch) || p.cfg.ConfigWait < 0 {
		return cfg, ch
	}
	t := time.NewTimer(p.cfg.ConfigWait)
	defer t.Stop()
	for {
		// The configuration and its change channel are read together, so
		// a SetConfig between the check and the wait is not missed.
		p.confMu.Lock()
		cfg, changed := p.conf.Load(), p.confChanged
		p.confMu.Unlock()
		ch := cfg.Chain(dst)
		if chainWarm(cfg, ch) {
			return cfg, ch
		}
		select {
		case <-changed:
		case <-t.C:
			return cfg, ch
		case <-ctx.Done():
			return cfg, ch
		}
	}
}

// chainWarm reports whether ch can serve: it exists and what it refers
// to has arrived — the route table of an HTTP chain, the cluster of a TCP
// chain. The waypoint's resources come in separate delta xDS responses
// (LDS, RDS, CDS), so a new chain can precede them; Envoy keeps such a
// listener warming until they arrive, and so does the waypoint for a
// CONNECT (up to ConfigWait, then the 503 that names what is missing).
func chainWarm(cfg *model.Config, ch *model.Chain) bool {
	switch {
	case ch == nil:
		return false
	case ch.Protocol.IsHTTP():
		return cfg.Routes[ch.RouteName] != nil
	default:
		return cfg.Clusters[ch.Cluster] != nil
	}
}

// source is the downstream of a stream.
type source struct {
	id identity.ID
	// addr is the original source ip:port (Forwarded for=), else the peer.
	addr     netip.AddrPort
	workload string
}

func sourceOf(r hbone.Request) source {
	s := source{id: r.SourceID, addr: r.Src}
	if !s.addr.IsValid() {
		s.addr = r.Peer
	}
	for _, k := range []string{"k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "service.name"} {
		if v := r.Baggage[k]; v != "" {
			s.workload = v
			break
		}
	}
	return s
}

func (s source) labels() Labels {
	return Labels{SourceWorkload: s.workload, SourceNamespace: s.id.Namespace, SourcePrincipal: s.id.String()}
}

// pick chooses an endpoint of cl for a new stream (pickEndpoint).
func (p *Proxy) pick(cl *model.Cluster) (model.Endpoint, bool) {
	ep, _, ok := p.pickEndpoint(cl, nil)
	return ep, ok
}

func (p *Proxy) now() time.Time { return p.cfg.Now() }

// upstreamConn is a connection to an endpoint: an HBONE stream, or a TCP
// connection to a pod outside the mesh.
type upstreamConn interface {
	net.Conn
	CloseWrite() error
}

// dialEndpoint opens an HBONE stream to ep's ztunnel presenting the
// waypoint's certificate; the server must prove ep's identity. A pod
// outside the mesh (ep.Plaintext) is dialled directly, in plaintext, as
// ztunnel does for such a destination.
func (p *Proxy) dialEndpoint(ctx context.Context, ep model.Endpoint, cl *model.Cluster, src source) (upstreamConn, error) {
	ctx, cancel := context.WithTimeout(ctx, cl.ConnectTimeout)
	defer cancel()
	if ep.Plaintext {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ep.Destination.String())
		if err != nil {
			return nil, &connectError{fmt.Errorf("endpoint %s of %s (outside the mesh, plaintext): %w", ep.Destination, cl.Name, err)}
		}
		return c.(*net.TCPConn), nil
	}
	c, err := p.dialer.Dial(ctx, hbone.Target{
		SourceID:  p.cfg.Identity,
		DestID:    ep.Identity,
		HBONEAddr: ep.Tunnel,
		Authority: ep.Destination,
		Forwarded: []hbone.ForwardedElement{hbone.ForwardedFor(src.addr, cl.Service.Hostname)},
	})
	if err != nil {
		return nil, &connectError{fmt.Errorf("endpoint %s (%s) of %s via %s: %w", ep.Destination, ep.Identity, cl.Name, ep.Tunnel, err)}
	}
	return c, nil
}

func endpointLabels(l Labels, ep model.Endpoint) Labels {
	l.DestinationWorkload, l.DestinationNamespace, l.DestinationPrincipal = ep.Workload, ep.Namespace, ep.Identity.String()
	if ep.Plaintext {
		l.DestinationPrincipal = "unknown" // outside the mesh: no identity (Istio's value)
	}
	return l
}
