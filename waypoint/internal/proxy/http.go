package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/waypoint/internal/model"
)

// upstreamIdleTimeout closes upstream HTTP connections idle this long.
const upstreamIdleTimeout = 30 * time.Second

// httpStream is one HBONE stream that carries HTTP: the connection
// manager of its filter chain. Its upstream transports (one per upstream
// protocol) are its own, like Envoy's connection pools keyed by the
// downstream's filter state: requests of one source never share an
// upstream connection with another's.
type httpStream struct {
	p   *Proxy
	dst netip.AddrPort
	src source

	mu         sync.Mutex
	closed     bool
	transports map[model.UpstreamProtocol]*http.Transport
}

type streamKey struct{}

// serveHTTPStream hands a new stream to the HTTP server and returns the
// other end of the in-memory connection, which the HBONE server splices
// to the source.
func (p *Proxy) serveHTTPStream(ctx context.Context, dst netip.AddrPort, src source) (net.Conn, error) {
	st := &httpStream{p: p, dst: dst, src: src, transports: map[model.UpstreamProtocol]*http.Transport{}}
	outer, inner := newPipe(net.TCPAddrFromAddrPort(dst), net.TCPAddrFromAddrPort(src.addr), st.close)
	inner.stream = st
	select {
	case p.streams.ch <- inner:
		return outer, nil
	case <-p.streams.done:
	case <-ctx.Done():
	}
	outer.Close()
	inner.Close()
	return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Reason: "the waypoint is shutting down"}
}

// transport returns the stream's transport for an upstream protocol.
func (st *httpStream) transport(up model.UpstreamProtocol) (*http.Transport, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, errors.New("the source closed the stream")
	}
	if t := st.transports[up]; t != nil {
		return t, nil
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			u, _ := ctx.Value(upstreamKey{}).(*upstream)
			if u == nil {
				return nil, errors.New("internal error: no upstream chosen")
			}
			return st.p.dialEndpoint(ctx, u.ep, u.cluster, st.src)
		},
		DisableCompression:  true,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     upstreamIdleTimeout,
	}
	if up == model.UpstreamHTTP2 {
		var ps http.Protocols
		ps.SetUnencryptedHTTP2(true)
		t.Protocols = &ps
	}
	st.transports[up] = t
	return t, nil
}

// close runs when the stream's connection closes.
func (st *httpStream) close() {
	st.mu.Lock()
	st.closed = true
	ts := st.transports
	st.transports = nil
	st.mu.Unlock()
	for _, t := range ts {
		t.CloseIdleConnections()
	}
}

// upstream is the endpoint chosen for one request.
type upstream struct {
	ep      model.Endpoint
	cluster *model.Cluster
}

type upstreamKey struct{}

func (p *Proxy) newHTTPServer() *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true) // codec AUTO: HTTP/1.1 or h2c prior knowledge
	rp := &httputil.ReverseProxy{
		Rewrite:       rewrite,
		Transport:     roundTripper{},
		FlushInterval: -1, // stream (gRPC, server-sent events)
		ErrorHandler:  p.upstreamError,
		ErrorLog:      slog.NewLogLogger(p.cfg.Logger.Handler(), slog.LevelDebug),
	}
	return &http.Server{
		Handler:   &handler{p: p, rp: rp},
		Protocols: &protos,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*pipeConn); ok && pc.stream != nil {
				return context.WithValue(ctx, streamKey{}, pc.stream)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(p.cfg.Logger.Handler(), slog.LevelDebug),
	}
}

// rewrite prepares the upstream request: to the chosen endpoint's
// ip:port, Host unchanged, X-Forwarded-* passed through unchanged (HCM
// use_remote_address: false), any x-forwarded-client-cert removed (HCM
// forward_client_cert_details: SANITIZE; XDS.md §4.1).
func rewrite(pr *httputil.ProxyRequest) {
	u := pr.In.Context().Value(upstreamKey{}).(*upstream)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = u.ep.Destination.String()
	pr.Out.Host = pr.In.Host
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := pr.In.Header.Values(h); len(v) > 0 {
			pr.Out.Header[h] = v
		}
	}
	pr.Out.Header.Del("X-Forwarded-Client-Cert")
}

// roundTripper sends a request with the transport of its stream and
// upstream protocol.
type roundTripper struct{}

func (roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	st, _ := r.Context().Value(streamKey{}).(*httpStream)
	u, _ := r.Context().Value(upstreamKey{}).(*upstream)
	if st == nil || u == nil {
		return nil, errors.New("internal error: request without stream or upstream")
	}
	t, err := st.transport(u.cluster.Upstream)
	if err != nil {
		return nil, err
	}
	return t.RoundTrip(r)
}

// handler applies the route table to each request (XDS.md §11.3).
type handler struct {
	p  *Proxy
	rp *httputil.ReverseProxy
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st, _ := r.Context().Value(streamKey{}).(*httpStream)
	if st == nil {
		http.Error(w, "internal error: request outside an HBONE stream", http.StatusInternalServerError)
		return
	}
	rec := &statusWriter{ResponseWriter: w}
	labels := st.src.labels()
	defer func() {
		code := rec.code
		if code == 0 && r.Context().Err() == nil {
			code = http.StatusOK // net/http answers 200 for a handler that wrote nothing
		}
		h.p.cfg.Metrics.request(labels, code, float64(time.Since(start))/float64(time.Millisecond))
	}()

	d := Route(h.p.conf.Load(), st.dst, r.Host, r.URL.Path)
	labels.DestinationService = d.Service
	if d.Code != 0 {
		rec.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rec.WriteHeader(d.Code)
		fmt.Fprintln(rec, d.Reason)
		return
	}
	ep, ok := h.p.pick(d.Cluster)
	if !ok {
		rec.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(rec, "no healthy upstream")
		return
	}
	labels = endpointLabels(labels, ep)
	ctx := context.WithValue(r.Context(), upstreamKey{}, &upstream{ep: ep, cluster: d.Cluster})
	if d.Route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Route.Timeout)
		defer cancel()
	}
	h.rp.ServeHTTP(rec, r.WithContext(ctx))
}

// Decision is what the route table says about one request.
type Decision struct {
	// Service is the destination service hostname ("" if unknown).
	Service string
	// Route and Cluster are set when Code is 0.
	Route   *model.Route
	Cluster *model.Cluster
	// Code and Reason are the local reply when the request cannot be
	// routed.
	Code   int
	Reason string
}

// Route decides where an HTTP request of a stream to dst goes: the chain
// of dst, its route table, the virtual host of host, the first route
// matching path, and that route's cluster. It is pure.
func Route(cfg *model.Config, dst netip.AddrPort, host, path string) Decision {
	ch := cfg.Chain(dst)
	if ch == nil || !ch.Protocol.IsHTTP() {
		return Decision{Code: http.StatusServiceUnavailable, Reason: fmt.Sprintf("%s is no longer an HTTP service of this waypoint", dst)}
	}
	d := Decision{Service: ch.Service}
	rt := cfg.Routes[ch.RouteName]
	if rt == nil {
		return Decision{Service: ch.Service, Code: http.StatusServiceUnavailable, Reason: fmt.Sprintf("route configuration %s not received from the control plane yet", ch.RouteName)}
	}
	vh, route := rt.Select(host, path)
	switch {
	case vh == nil:
		d.Code, d.Reason = http.StatusNotFound, fmt.Sprintf("no virtual host of %s matches host %q", rt.Name, host)
		return d
	case route == nil:
		d.Code, d.Reason = http.StatusNotFound, fmt.Sprintf("no route of %s matches path %q", vh.Name, path)
		return d
	}
	cl := cfg.Clusters[route.Cluster]
	if cl == nil {
		d.Code, d.Reason = http.StatusServiceUnavailable, fmt.Sprintf("cluster %s not found", route.Cluster)
		return d
	}
	d.Route, d.Cluster, d.Service = route, cl, cl.Service.Hostname
	return d
}

// upstreamError answers a request whose upstream failed: 504 when the
// route timeout passed, else 503 (Envoy's "upstream connect error or
// disconnect/reset before headers").
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	p.log.Debug("upstream request failed", "host", r.Host, "path", r.URL.Path, "error", err)
	if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
		return
	}
	if r.Context().Err() != nil {
		// The source went away (net/http also cancels a request whose
		// client half-closed, as Envoy does): abort, never a fake 200.
		panic(http.ErrAbortHandler)
	}
	http.Error(w, "upstream connect error or disconnect/reset before headers: "+err.Error(), http.StatusServiceUnavailable)
}

// statusWriter records the response code.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and friends.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
