package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// MaxRetryBody is the largest request body kept for retries: a request
// with a larger body is not retried (Envoy's buffer limit behaviour).
const MaxRetryBody = 64 << 10

var (
	errPerTryTimeout     = errors.New("upstream per-try timeout")
	errNoHealthyUpstream = errors.New("no healthy upstream")
	errBodyAbandoned     = errors.New("request body of an abandoned attempt")
	errBodyNotKept       = errors.New("request body beyond the retry buffer not kept")
)

// clusterState is the waypoint's live state of one cluster: its round
// robin counter, and the requests and retries in flight that its retry
// budget compares.
type clusterState struct {
	rr                atomic.Uint64
	requests, retries atomic.Int64
	upstreamState
}

// clusterState returns the state of the named cluster.
func (p *Proxy) clusterState(name string) *clusterState {
	v, _ := p.clusters.LoadOrStore(name, new(clusterState))
	return v.(*clusterState)
}

// acquireRetry takes one retry of the budget b, if the retries in flight
// stay within it.
func (s *clusterState) acquireRetry(b *model.RetryBudget) bool {
	limit := b.MaxRetries(s.requests.Load())
	for {
		n := s.retries.Load()
		if n >= limit {
			return false
		}
		if s.retries.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// connectError is a failure to open the HBONE stream to an endpoint.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// failureOf classifies an attempt's error for the retry decision.
func failureOf(err error) model.Failure {
	var ce *connectError
	switch {
	case errors.As(err, &ce):
		return model.FailureConnect
	case strings.Contains(err.Error(), "REFUSED_STREAM"):
		// net/http's HTTP/2 stream errors are not exported.
		return model.FailureRefusedStream
	}
	return model.FailureReset
}

// retryTransport is the reverse proxy's transport: it makes the attempts
// of one request (XDS.md §7.1 retry_policy) over the stream's transports,
// each to an endpoint of the exchange's cluster, and returns the last
// attempt's response or error. Retried responses are closed unread.
type retryTransport struct{ p *Proxy }

func (t *retryTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	ctx := out.Context()
	ex := exchangeOf(ctx)
	if ex == nil {
		return nil, errors.New("internal error: upstream request without a route")
	}
	policy := ex.route.Retry
	var body *replayBody
	if out.Body != nil && out.Body != http.NoBody {
		body = &replayBody{src: out.Body, limit: MaxRetryBody}
	}
	var tried []netip.AddrPort
	retryHeld := false
	release := func() {
		if retryHeld {
			ex.state.retries.Add(-1)
			retryHeld = false
		}
	}
	defer release()
	for attempt := 0; ; attempt++ {
		ep, host, ok := t.p.pickEndpoint(ex.cluster, tried)
		if !ok {
			return nil, errNoHealthyUpstream
		}
		tried = append(tried, ep.Destination)
		ex.ep, ex.hasEP = ep, true
		resp, outcome, err := t.attempt(out, ex, ep, host, body, policy)
		release()
		var overflow *overflowError
		switch {
		case errors.As(err, &overflow):
			// A circuit breaker refused the attempt: not retried (Envoy).
			return nil, err
		case ctx.Err() != nil:
			// Route timeout or the source left: no more attempts.
			if resp != nil {
				resp.Body.Close()
			}
			return nil, ctx.Err()
		case !policy.Retriable(outcome), attempt >= policy.NumRetries, body != nil && !body.replayable():
			return resp, err
		}
		if !ex.state.acquireRetry(ex.cluster.RetryBudget) {
			t.p.cfg.Metrics.retryOverflow(ex.cluster.Name)
			return resp, err
		}
		retryHeld = true
		t.p.cfg.Metrics.retry(ex.cluster.Name)
		if resp != nil {
			resp.Body.Close()
		}
		wait := model.Backoff(policy.BackoffBase, policy.BackoffMax, attempt+1, rand.Uint64())
		t.p.log.Debug("retrying upstream request", "cluster", ex.cluster.Name, "endpoint", ep.Destination,
			"status", outcome.Status, "error", err, "backoff", wait)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		}
	}
}

// attempt sends out once to ep. The per-try timeout (if any) runs from
// the end of the request body (at once when there is none, as Envoy
// starts it when the downstream request is complete) until the response
// headers; the attempt's context lives until the response body is closed.
func (t *retryTransport) attempt(out *http.Request, ex *exchange, ep model.Endpoint, host *hostState, body *replayBody, policy *model.RetryPolicy) (*http.Response, model.Attempt, error) {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(out.Context())
	host.active.Add(1)
	var cc *http.ClientConn
	var pool *connPool
	// done ends the attempt's share of the load (least request, EWMA,
	// max_requests) when its response has been received — as Envoy's
	// rq_active, before the source has read all of it; end also ends
	// the attempt's context.
	done := sync.OnceFunc(func() {
		host.active.Add(-1)
		if cc != nil {
			pool.done()
		}
	})
	end := func() {
		done()
		cancel(nil)
	}
	// report gives the attempt's result to outlier detection and EWMA;
	// a request the source abandoned counts for neither.
	report := func(a model.Attempt) {
		code := model.OutlierCode(a)
		switch {
		case errors.Is(out.Context().Err(), context.DeadlineExceeded):
			code = http.StatusGatewayTimeout // the route timeout
		case out.Context().Err() != nil:
			return
		}
		t.p.result(ex.cluster, ep, host, code, time.Since(start))
	}
	// The circuit breakers and the connection pool: the per-try timeout
	// starts once the attempt has a connection (Envoy's onPoolReady).
	var reused bool
	pool, err := ex.st.pool(ex.cluster, ep)
	if err == nil {
		cc, reused, err = pool.acquire(ctx, ex.cluster, ep)
	}
	if err != nil {
		var ce *connectError
		a := model.Attempt{Failure: model.FailureReset}
		if errors.As(err, &ce) {
			a.Failure = model.FailureConnect
			report(a)
		}
		end()
		return nil, a, err
	}
	req := out.WithContext(ctx)
	u := *out.URL
	u.Host = ep.Destination.String()
	req.URL = &u

	// timeout: 0 running or not armed, 1 fired, 2 headers arrived first.
	var timeout atomic.Int32
	var arm func()
	var (
		timerMu sync.Mutex
		timer   *time.Timer
	)
	if policy != nil && policy.PerTryTimeout > 0 {
		arm = func() {
			timerMu.Lock()
			defer timerMu.Unlock()
			if timer == nil && timeout.Load() == 0 {
				timer = time.AfterFunc(policy.PerTryTimeout, func() {
					if timeout.CompareAndSwap(0, 1) {
						cancel(errPerTryTimeout)
					}
				})
			}
		}
	}
	if body != nil {
		r := body.reader(arm)
		req.Body = r
		req.GetBody = func() (io.ReadCloser, error) {
			if !body.replayable() {
				return nil, errBodyNotKept
			}
			return body.reader(arm), nil
		}
		if body.complete() && arm != nil {
			arm()
		}
	} else if arm != nil {
		arm()
	}

	resp, err := cc.RoundTrip(req)
	if err != nil && reused && body == nil && replayable(out) && ctx.Err() == nil {
		// A kept-alive connection the endpoint closed as the request
		// went out: once more on another connection, as net/http's
		// Transport does (not an attempt of the retry policy).
		pool.done()
		if cc, _, err = pool.acquire(ctx, ex.cluster, ep); err == nil {
			resp, err = cc.RoundTrip(req)
		}
	}
	headersFirst := timeout.CompareAndSwap(0, 2)
	timerMu.Lock()
	if timer != nil {
		timer.Stop() // not left pending (holding the attempt) for long per-try timeouts
	}
	timerMu.Unlock()
	if !headersFirst {
		if resp != nil {
			resp.Body.Close()
		}
		end()
		a := model.Attempt{Failure: model.FailurePerTryTimeout}
		report(a)
		return nil, a, errPerTryTimeout
	}
	if err != nil {
		end()
		a := model.Attempt{Failure: failureOf(err)}
		var overflow *overflowError
		if !errors.As(err, &overflow) {
			report(a)
		}
		return nil, a, err
	}
	a := model.Attempt{Status: resp.StatusCode, GRPCStatus: resp.Header.Get("Grpc-Status")}
	report(a)
	resp.Body = cancelOnClose(resp.Body, end, done)
	return resp, a, nil
}

// cancelOnClose calls cancel once body is closed, and done (also) when a
// read of it ends it (EOF or error), keeping the body writable when it is
// (a 101 Switching Protocols response).
func cancelOnClose(body io.ReadCloser, cancel, done func()) io.ReadCloser {
	c := &closeHook{ReadCloser: body, cancel: cancel, done: done}
	if w, ok := body.(io.ReadWriteCloser); ok {
		return &closeHookRW{closeHook: c, w: w}
	}
	return c
}

type closeHook struct {
	io.ReadCloser
	cancel, done func()
	once         sync.Once
}

func (c *closeHook) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if err != nil {
		c.done()
	}
	return n, err
}

func (c *closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.cancel)
	return err
}

type closeHookRW struct {
	*closeHook
	w io.Writer
}

func (c *closeHookRW) Write(b []byte) (int, error) { return c.w.Write(b) }

// replayBody keeps the first limit bytes of a request body so that a
// retry can send it again, while the first attempt streams it (nothing
// waits for the whole body). Each attempt reads through its own reader;
// starting one abandons the previous (the transport of a retried attempt
// may still be reading). Bytes an abandoned reader still pulls from the
// source are kept, so the current reader loses nothing.
type replayBody struct {
	src   io.Reader
	limit int

	readMu sync.Mutex // one reader of src at a time

	mu       sync.Mutex
	buf      []byte // bytes [0, len(buf)) of the body
	total    int    // bytes read from src
	overflow bool   // more than limit bytes: not replayable
	err      error  // src's sticky error (io.EOF at the end)
	current  *bodyReader
}

// replayable reports whether a new attempt can send the body again.
func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow
}

// complete reports whether the whole body has been received and kept.
func (b *replayBody) complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err == io.EOF && !b.overflow
}

// reader returns a reader from the start of the body, abandoning the
// previous one. onEOF (may be nil) runs once when it reaches the end.
func (b *replayBody) reader(onEOF func()) *bodyReader {
	r := &bodyReader{b: b, onEOF: onEOF}
	b.mu.Lock()
	if b.current != nil {
		b.current.abandoned = true
	}
	b.current = r
	b.mu.Unlock()
	return r
}

// bodyReader is one attempt's view of a replayBody.
type bodyReader struct {
	b         *replayBody
	pos       int
	abandoned bool // guarded by b.mu
	onEOF     func()
	eofOnce   sync.Once
}

func (r *bodyReader) Read(p []byte) (int, error) {
	b := r.b
	for {
		b.mu.Lock()
		switch {
		case r.abandoned:
			b.mu.Unlock()
			return 0, errBodyAbandoned
		case r.pos < len(b.buf):
			n := copy(p, b.buf[r.pos:])
			r.pos += n
			b.mu.Unlock()
			return n, nil
		case r.pos != b.total:
			b.mu.Unlock()
			return 0, errBodyNotKept
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			if err == io.EOF && r.onEOF != nil {
				r.eofOnce.Do(r.onEOF)
			}
			return 0, err
		}
		b.mu.Unlock()

		b.readMu.Lock()
		b.mu.Lock()
		ready := !r.abandoned && r.pos == b.total && b.err == nil
		b.mu.Unlock()
		if !ready {
			// Another reader got there first (or this one was
			// abandoned): look again.
			b.readMu.Unlock()
			continue
		}
		n, err := b.src.Read(p)
		b.mu.Lock()
		start := b.total
		b.total += n
		keep := r.abandoned || (!b.overflow && b.total <= b.limit)
		if keep && start == len(b.buf) {
			b.buf = append(b.buf, p[:n]...)
		}
		if b.total > b.limit && !b.overflow {
			b.overflow = true
			if !r.abandoned {
				b.buf = nil // no attempt will replay it
			}
		}
		if err != nil {
			b.err = err
		}
		abandoned := r.abandoned
		if !abandoned {
			r.pos = b.total
		}
		b.mu.Unlock()
		b.readMu.Unlock()
		if abandoned {
			return 0, errBodyAbandoned
		}
		if err == io.EOF && r.onEOF != nil {
			r.eofOnce.Do(r.onEOF)
		}
		return n, err
	}
}

// Close abandons the reader (the transport is done with it); the source
// stays open for the next attempt.
func (r *bodyReader) Close() error {
	r.b.mu.Lock()
	r.abandoned = true
	r.b.mu.Unlock()
	return nil
}

// replayable reports whether a bodiless request may be sent again after
// its connection failed under it (net/http's rule).
func replayable(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}
