package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/model"
)

const td = "cluster.local"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustID(t testing.TB, s string) identity.ID {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testMesh is a trust domain: a local CA and the certificates it issued.
type testMesh struct {
	ca    *identity.LocalCA
	mu    sync.Mutex
	certs map[identity.ID]*tls.Certificate
}

func newTestMesh(t *testing.T) *testMesh {
	t.Helper()
	rootPEM, keyPEM, err := identity.GenerateRoot(td, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: td, SigningCertPEM: rootPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	return &testMesh{ca: ca, certs: map[identity.ID]*tls.Certificate{}}
}

func (m *testMesh) cert(id identity.ID) (*tls.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.certs[id]; ok {
		return c, nil
	}
	c, err := m.ca.Issue(id, time.Hour)
	if err != nil {
		return nil, err
	}
	m.certs[id] = c.TLS
	return c.TLS, nil
}

// backend is a fake pod behind its ztunnel: an HBONE server on a
// loopback address presenting the pod's identity, whose CONNECTs (to any
// port) reach one HTTP handler (HTTP/1.1 and h2c).
type backend struct {
	name string
	addr netip.AddrPort // the HBONE address
	id   identity.ID
	hits atomic.Int64
	// conns counts the HBONE streams (upstream connections) opened to it.
	conns atomic.Int64
}

type backendKey struct{}

func startBackend(t *testing.T, m *testMesh, ip, name string, id identity.ID, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name, id: id}
	tlsCfg, err := hbone.ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return m.cert(id) }, m.ca.Roots, td)
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	app := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			w.Header().Set("X-Endpoint", b.name)
			h(w, r)
		}),
		Protocols: &protos,
		ErrorLog:  slog.NewLogLogger(quiet().Handler(), slog.LevelDebug),
	}
	srv, err := hbone.NewServer(hbone.ServerConfig{
		TLS:       tlsCfg,
		Authorize: func(context.Context, hbone.Request) error { return nil },
		Dial: func(ctx context.Context, r hbone.Request) (net.Conn, error) {
			b.conns.Add(1)
			ours, theirs := net.Pipe()
			select {
			case conns <- theirs:
				return ours, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ctx, ln) })
	wg.Go(func() { _ = app.Serve(&chanListener{ch: conns, done: ctx.Done(), addr: ln.Addr()}) })
	t.Cleanup(func() {
		cancel()
		app.Close()
		wg.Wait()
	})
	return b
}

// endpoint is the backend as an EDS endpoint. Each backend gets its own
// destination port so that upstream connections of different backends
// on one loopback IP are pooled apart (pod IPs are unique in a cluster).
func (b *backend) endpoint() model.Endpoint {
	return model.Endpoint{Tunnel: b.addr, Destination: netip.AddrPortFrom(b.addr.Addr(), b.addr.Port()+1), Identity: b.id,
		Healthy: true, Workload: b.name, Namespace: "demo"}
}

type chanListener struct {
	ch   chan net.Conn
	done <-chan struct{}
	addr net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// testProxy is a running Proxy with its metrics.
type testProxy struct {
	p    *Proxy
	addr netip.AddrPort
	reg  *prometheus.Registry
	id   identity.ID
}

func startProxy(t *testing.T, m *testMesh, cfg *model.Config) *testProxy {
	t.Helper()
	return startProxyWith(t, m, cfg, nil, nil)
}

// startProxyClock is startProxy with the clock of outlier detection.
func startProxyClock(t *testing.T, m *testMesh, cfg *model.Config, now func() time.Time) *testProxy {
	t.Helper()
	return startProxyWith(t, m, cfg, now, nil)
}

// startProxyLog is startProxy with the access log written to accessLog.
func startProxyLog(t *testing.T, m *testMesh, cfg *model.Config, accessLog io.Writer) *testProxy {
	t.Helper()
	return startProxyWith(t, m, cfg, nil, accessLog)
}

// startProxyWith is startProxy with a clock (nil: time.Now) and an access
// log writer (nil: none).
func startProxyWith(t *testing.T, m *testMesh, cfg *model.Config, now func() time.Time, accessLog io.Writer) *testProxy {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/waypoint")
	p, err := New(Config{
		Identity:    id,
		Certificate: func(context.Context) (*tls.Certificate, error) { return m.cert(id) },
		Roots:       m.ca.Roots, TrustDomain: td, Metrics: metrics, DrainTimeout: time.Second, Logger: quiet(), Now: now,
		AccessLog: accessLog, AccessLogFlush: -1, // lines at once: the tests read them right after a request
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Index()
	p.SetConfig(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &testProxy{p: p, addr: ln.Addr().(*net.TCPAddr).AddrPort(), reg: reg, id: id}
}

// metric sums the counter or gauge samples of name whose labels include want.
func (tp *testProxy) metric(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := tp.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue samples
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				sum += s.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				sum += s.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// client is a source workload's ztunnel: it sends HTTP requests over HBONE
// streams to a VIP through the waypoint.
type client struct {
	d  *hbone.Dialer
	hc *http.Client
	tr *http.Transport
}

// newClient returns a source sending HTTP/1.1, one HBONE stream per
// connection (kept alive); with h2c, HTTP/2 with prior knowledge, all
// its requests multiplexed on one stream.
func newClient(t *testing.T, m *testMesh, tp *testProxy, vip netip.AddrPort, h2c ...bool) *client {
	t.Helper()
	return newClientAs(t, m, tp, vip, mustID(t, "spiffe://cluster.local/ns/demo/sa/client"), h2c...)
}

// newClientAs is newClient for the source identity src.
func newClientAs(t *testing.T, m *testMesh, tp *testProxy, vip netip.AddrPort, src identity.ID, h2c ...bool) *client {
	t.Helper()
	d, err := hbone.NewDialer(hbone.DialerConfig{
		Certificate: func(context.Context, identity.ID) (*tls.Certificate, error) { return m.cert(src) },
		Roots:       m.ca.Roots, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.Dial(ctx, hbone.Target{SourceID: src, DestID: tp.id, HBONEAddr: tp.addr, Authority: vip,
				Forwarded: []hbone.ForwardedElement{hbone.ForwardedFor(netip.MustParseAddrPort("10.244.3.3:41000"), "")}})
		},
		MaxIdleConnsPerHost: 64,
	}
	if len(h2c) > 0 && h2c[0] {
		var ps http.Protocols
		ps.SetUnencryptedHTTP2(true)
		tr.Protocols = &ps
	}
	c := &client{d: d, tr: tr, hc: &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		d.Close()
	})
	return c
}

// response is what the source received.
type response struct {
	code   int
	header http.Header
	body   string
}

func (c *client) do(t *testing.T, method, url string, body io.Reader, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: strings.TrimSpace(string(b))}
}

func (c *client) get(t *testing.T, url string, header ...string) response {
	t.Helper()
	return c.do(t, http.MethodGet, url, nil, header...)
}

// vip is the service address every test routes.
var vip = netip.MustParseAddrPort("10.96.0.10:80")

// httpConfig is a config with one HTTP service at vip whose route table
// has routes, and clusters c (by name).
func httpConfig(routes []model.Route, cs ...*model.Cluster) *model.Config {
	cfg := &model.Config{
		Chains: []*model.Chain{{Name: "inbound-vip|80|http|web.demo.svc.cluster.local", Service: "web.demo.svc.cluster.local",
			Protocol: model.ProtocolHTTP, Port: 80, Prefixes: []netip.Prefix{netip.PrefixFrom(vip.Addr(), 32)}, RouteName: "web:80"}},
		Clusters: map[string]*model.Cluster{},
		Routes: map[string]*model.RouteTable{"web:80": {Name: "web:80", VirtualHosts: []model.VirtualHost{{
			Name: "web", Domains: []string{"web.demo.svc.cluster.local", "web"}, Routes: routes}}}},
	}
	for _, c := range cs {
		cfg.Clusters[c.Name] = c
	}
	return cfg
}

// cluster is an HTTP/1.1 cluster of backends.
func cluster(name string, bs ...*backend) *model.Cluster {
	c := &model.Cluster{Name: name, Service: model.Service{Hostname: name + ".demo.svc.cluster.local", Namespace: "demo", Name: name, Port: 80},
		Upstream: model.UpstreamHTTP1, ConnectTimeout: 5 * time.Second, HasEndpoints: true}
	for _, b := range bs {
		c.Endpoints = append(c.Endpoints, b.endpoint())
	}
	return c
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
