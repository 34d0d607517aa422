package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/netcopy"
	"ambit.dev/waypoint/internal/model"
)

// upstreamIdleTimeout closes upstream HTTP connections idle this long.
const upstreamIdleTimeout = 30 * time.Second

// responseFlushInterval bounds how long part of a response of known
// length may wait in the downstream write buffer.
const responseFlushInterval = time.Millisecond

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
	pools      map[poolKey]*connPool // pool.go
}

type streamKey struct{}

// serveHTTPStream serves one HBONE stream with the HTTP server and
// returns when the server has closed it.
func (p *Proxy) serveHTTPStream(ctx context.Context, c *hbone.Conn, dst netip.AddrPort, src source) {
	st := &httpStream{p: p, dst: dst, src: src, transports: map[model.UpstreamProtocol]*http.Transport{}, pools: map[poolKey]*connPool{}}
	sc := &streamConn{Conn: c, stream: st, closed: make(chan struct{})}
	select {
	case p.streams.ch <- sc:
	case <-p.streams.done:
		sc.Close()
	case <-ctx.Done():
		sc.Close()
	}
	<-sc.closed
}

// transport returns the stream's transport for an upstream protocol; the
// stream's pools (pool.go) open their connections with it.
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
		DisableCompression: true,
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
	ts, pools := st.transports, st.pools
	st.transports, st.pools = nil, nil
	st.mu.Unlock()
	for _, p := range pools {
		p.close()
	}
	for _, t := range ts {
		t.CloseIdleConnections()
	}
}

// upstream is the endpoint chosen for one attempt of a request.
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
		Rewrite:   rewrite,
		Transport: &retryTransport{p: p},
		// Responses of unknown length (gRPC, chunked) and server-sent
		// events are flushed at every write (ReverseProxy does that
		// itself); others at least every responseFlushInterval and at
		// their end, so a small response leaves in one write with its
		// headers instead of the headers first from a timer goroutine.
		FlushInterval:  responseFlushInterval,
		BufferPool:     netcopy.BufferPool{},
		ModifyResponse: modifyResponse,
		ErrorHandler:   p.upstreamError,
		ErrorLog:       slog.NewLogLogger(p.cfg.Logger.Handler(), slog.LevelDebug),
	}
	return &http.Server{
		Handler:   &handler{p: p, rp: rp},
		Protocols: &protos,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if sc, ok := c.(*streamConn); ok {
				return context.WithValue(ctx, streamKey{}, sc.stream)
			}
			return ctx
		},
		ErrorLog: slog.NewLogLogger(p.cfg.Logger.Handler(), slog.LevelDebug),
	}
}

// exchange is one request routed to a cluster: what the round trips of
// its attempts share.
type exchange struct {
	st      *httpStream
	route   *model.Route
	cluster *model.Cluster
	state   *clusterState
	// ep is the endpoint of the latest attempt (telemetry); valid once
	// an attempt started.
	ep    model.Endpoint
	hasEP bool
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// rewrite prepares the upstream request (the endpoint is set per
// attempt): Host unchanged unless host_rewrite_literal, the route's path
// rewrite, X-Forwarded-* passed through unchanged (HCM
// use_remote_address: false), any x-forwarded-client-cert removed (HCM
// forward_client_cert_details: SANITIZE; XDS.md §4.1), then the route's
// request header changes (Envoy's router runs after the HCM).
func rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = ""
	pr.Out.Host = pr.In.Host
	if h := ex.route.Rewrite.Host; h != "" {
		pr.Out.Host = h
	}
	req := modelRequest(pr.In)
	if p := ex.route.RewritePath(req.Path); p != req.Path {
		setPath(pr.Out.URL, p)
	}
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := pr.In.Header.Values(h); len(v) > 0 {
			pr.Out.Header[h] = v
		}
	}
	pr.Out.Header.Del("X-Forwarded-Client-Cert")
	ex.route.RequestHeaders.Apply(pr.Out.Header)
}

// setPath sets the escaped path p on u.
func setPath(u *url.URL, p string) {
	if dec, err := url.PathUnescape(p); err == nil {
		u.Path, u.RawPath = dec, p
		return
	}
	u.Path, u.RawPath = p, ""
}

// modifyResponse applies the route's response header changes to an
// upstream response.
func modifyResponse(resp *http.Response) error {
	if ex := exchangeOf(resp.Request.Context()); ex != nil {
		ex.route.ResponseHeaders.Apply(resp.Header)
	}
	return nil
}

// modelRequest is what route matching sees of r: the path as sent
// (escaped), without the query.
func modelRequest(r *http.Request) model.Request {
	path, query := r.URL.EscapedPath(), r.URL.RawQuery
	if strings.HasPrefix(r.RequestURI, "/") {
		path, query, _ = strings.Cut(r.RequestURI, "?")
	}
	return model.Request{Host: r.Host, Method: r.Method, Path: path, Query: query, Header: r.Header}
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
	req := modelRequest(r)
	cfg := h.p.conf.Load()
	ch := cfg.Chain(st.dst)
	var received atomic.Int64
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = countingBody{ReadCloser: r.Body, n: &received}
	}
	var upstreamHost string
	defer func() {
		code := rec.code
		if code == 0 && r.Context().Err() == nil {
			code = http.StatusOK // net/http answers 200 for a handler that wrote nothing
		}
		took := time.Since(start)
		h.p.cfg.Metrics.request(labels, code, float64(took)/float64(time.Millisecond))
		if ch == nil || ch.AccessLog == nil {
			return
		}
		details := rec.details
		if details == "" && code != 0 {
			details = "via_upstream"
		}
		h.p.accessLog.write(ch.AccessLog, &logEntry{
			start: start, method: r.Method, path: r.RequestURI, authority: r.Host, protocol: protocolOf(r),
			code: code, flags: rec.flags, details: details, duration: took,
			bytesReceived: received.Load(), bytesSent: rec.bytes,
			upstreamHost: upstreamHost, downstreamPeer: st.src.addr.String(),
			principal: attributes(st, req).Principal, requestID: firstHeader(r.Header, "X-Request-Id"),
			traceparent: firstHeader(r.Header, "Traceparent"),
		}, rand.Uint32N(100))
	}()

	// L7 authorization (XDS.md §12): the RBAC filters run before the
	// router, so a denied request is answered 403 whatever its route.
	if ch != nil && len(ch.RBAC) > 0 {
		dec := model.Authorize(ch.RBAC, attributes(st, req))
		h.p.cfg.Metrics.authz(dec)
		if len(dec.Audited) > 0 {
			h.p.log.Info("rbac audit", "policies", dec.Audited, "principal", attributes(st, req).Principal, "method", req.Method, "path", req.Path)
		}
		if !dec.Allowed {
			labels.DestinationService = ch.Service
			rec.details = dec.ResponseCodeDetails()
			localReply(rec, nil, http.StatusForbidden, rbacDeniedBody)
			return
		}
	}

	d := Route(cfg, st.dst, req, rand.Uint64())
	labels.DestinationService = d.Service
	if d.Code != 0 {
		switch d.Code {
		case http.StatusNotFound:
			rec.flags, rec.details = "NR", "route_not_found"
		default:
			rec.details = "cluster_not_found"
		}
		localReply(rec, d.Route, d.Code, d.Reason)
		return
	}
	if d.Chain.Fault && d.Route.Fault != nil {
		if !h.injectFault(rec, r, d.Route, d.Route.Fault.Decide(rand.Uint64(), rand.Uint64())) {
			if rec.details == "" {
				rec.flags, rec.details = "FI", "fault_filter_abort" // Envoy's
			}
			return
		}
	}
	switch d.Route.Action {
	case model.ActionRedirect:
		rec.Header().Set("Location", d.Route.Redirect.Location(req, d.Route.Match))
		rec.details = "direct_response"
		localReply(rec, d.Route, d.Route.Redirect.Code, "")
		return
	case model.ActionDirect:
		rec.details = "direct_response"
		localReply(rec, d.Route, d.Route.DirectStatus, "")
		return
	}
	if d.Chain.Trace != nil {
		// Request id and trace context of the upstream request (XDS.md §16).
		model.TraceHeaders(r.Header, *d.Chain.Trace, globalRand{}).Apply(r.Header)
	}
	ex := &exchange{st: st, route: d.Route, cluster: d.Cluster, state: h.p.clusterState(d.Cluster.Name)}
	ex.state.requests.Add(1)
	defer ex.state.requests.Add(-1)
	ctx := context.WithValue(r.Context(), exchangeKey{}, ex)
	if d.Route.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Route.Timeout)
		defer cancel()
	}
	h.rp.ServeHTTP(rec, r.WithContext(ctx))
	if ex.hasEP {
		labels = endpointLabels(labels, ex.ep)
		upstreamHost = ex.ep.Destination.String()
	}
}

// injectFault applies a fault decision (XDS.md §15), as Envoy's fault
// filter before the router: the delay, then the abort. It reports whether
// the request goes on; false when it was aborted or the source left
// during the delay.
func (h *handler) injectFault(w http.ResponseWriter, r *http.Request, route *model.Route, fd model.FaultDecision) bool {
	if fd.Delay == 0 && fd.Abort == nil {
		return true
	}
	h.p.log.Debug("fault injected", "route", route.Name, "response_flags", fd.Flags(), "delay", fd.Delay, "abort", fd.Abort != nil)
	if fd.Delay > 0 {
		h.p.cfg.Metrics.fault("delay")
		t := time.NewTimer(fd.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return false
		}
	}
	if a := fd.Abort; a != nil {
		h.p.cfg.Metrics.fault("abort")
		if a.GRPC {
			// A trailers-only gRPC answer, as Envoy's fault filter sends.
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", strconv.Itoa(a.GRPCStatus))
			w.Header().Set("Grpc-Message", faultAbortBody)
			localReply(w, route, http.StatusOK, "")
			return false
		}
		localReply(w, route, a.HTTPStatus, faultAbortBody)
		return false
	}
	return true
}

// faultAbortBody is Envoy's body of an injected abort.
const faultAbortBody = "fault filter abort"

// globalRand is math/rand/v2's global source as a model.Randomness.
type globalRand struct{}

func (globalRand) Uint64() uint64 { return rand.Uint64() }

// localReply answers locally, with the route's response header changes
// when there is a route (Envoy applies them to local replies too). An
// empty body writes none.
func localReply(w http.ResponseWriter, r *model.Route, code int, body string) {
	if body != "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
	}
	if r != nil {
		r.ResponseHeaders.Apply(w.Header())
	}
	w.WriteHeader(code)
	if body != "" {
		fmt.Fprintln(w, body)
	}
}

// Decision is what the route table says about one request.
type Decision struct {
	// Service is the destination service hostname ("" if unknown).
	Service string
	// Chain is the filter chain of the destination (set unless Code is
	// 503 for an unknown destination).
	Chain *model.Chain
	// Route is the matched route; Cluster its (picked) cluster when the
	// route forwards. Both are set when Code is 0.
	Route   *model.Route
	Cluster *model.Cluster
	// Code and Reason are the local reply when the request cannot be
	// routed.
	Code   int
	Reason string
}

// Route decides where an HTTP request of a stream to dst goes: the chain
// of dst, its route table, the virtual host of req.Host, the first route
// matching req, and for a forwarding route its cluster (of weighted
// clusters, the one the random number n picks). Redirects and direct
// responses have no cluster. It is pure.
func Route(cfg *model.Config, dst netip.AddrPort, req model.Request, n uint64) Decision {
	ch := cfg.Chain(dst)
	if ch == nil || !ch.Protocol.IsHTTP() {
		return Decision{Code: http.StatusServiceUnavailable, Reason: fmt.Sprintf("%s is no longer an HTTP service of this waypoint", dst)}
	}
	d := Decision{Service: ch.Service, Chain: ch}
	rt := cfg.Routes[ch.RouteName]
	if rt == nil {
		return Decision{Service: ch.Service, Chain: ch, Code: http.StatusServiceUnavailable, Reason: fmt.Sprintf("route configuration %s not received from the control plane yet", ch.RouteName)}
	}
	vh, route := rt.Select(req)
	switch {
	case vh == nil:
		d.Code, d.Reason = http.StatusNotFound, fmt.Sprintf("no virtual host of %s matches host %q", rt.Name, req.Host)
		return d
	case route == nil:
		d.Code, d.Reason = http.StatusNotFound, fmt.Sprintf("no route of %s matches %s %q", vh.Name, req.Method, req.Path)
		return d
	}
	d.Route = route
	var name string
	switch route.Action {
	case model.ActionRedirect, model.ActionDirect:
		return d
	case model.ActionWeighted:
		name = model.PickWeighted(route.WeightedClusters, n)
	default:
		name = route.Cluster
	}
	cl := cfg.Clusters[name]
	if cl == nil {
		d.Code, d.Reason = http.StatusServiceUnavailable, fmt.Sprintf("cluster %s not found", name)
		return d
	}
	d.Cluster, d.Service = cl, cl.Service.Hostname
	return d
}

// upstreamError answers a request whose upstream failed: 504 when the
// route timeout or the last attempt's per-try timeout passed, else 503
// (Envoy's "no healthy upstream" and "upstream connect error or
// disconnect/reset before headers").
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	p.log.Debug("upstream request failed", "host", r.Host, "path", r.URL.Path, "error", err)
	var route *model.Route
	if ex := exchangeOf(r.Context()); ex != nil {
		route = ex.route
	}
	rec, _ := w.(*statusWriter)
	mark := func(flags, details string) {
		if rec != nil {
			rec.flags, rec.details = flags, details
		}
	}
	switch {
	case errors.Is(r.Context().Err(), context.DeadlineExceeded), errors.Is(err, errPerTryTimeout):
		mark("UT", "upstream_response_timeout")
		localReply(w, route, http.StatusGatewayTimeout, "upstream request timeout")
	case r.Context().Err() != nil:
		// The source went away (net/http also cancels a request whose
		// client half-closed, as Envoy does): abort, never a fake 200.
		panic(http.ErrAbortHandler)
	case errors.Is(err, errNoHealthyUpstream):
		mark("UH", "no_healthy_upstream")
		localReply(w, route, http.StatusServiceUnavailable, "no healthy upstream")
	case p.overflowed(w, r, err):
		localReply(w, route, http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers. reset reason: overflow")
	default:
		mark("UF", "upstream_reset_before_response_started")
		localReply(w, route, http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers: "+err.Error())
	}
}

// statusWriter records the response code.
type statusWriter struct {
	http.ResponseWriter
	code int
	// bytes is the body bytes written; flags and details are Envoy's
	// %RESPONSE_FLAGS% and %RESPONSE_CODE_DETAILS% of a local reply.
	bytes          int64
	flags, details string
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
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and friends.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
