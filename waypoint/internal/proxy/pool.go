package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// Connection pools and circuit breakers (XDS.md §11 "How the Go waypoint
// reads this"). An upstream connection is one HBONE stream to an
// endpoint's ztunnel carrying HTTP/1.1 or h2c (Envoy's connection to
// connect_originate). A connPool holds the connections of one downstream
// stream to one endpoint in one protocol, like Envoy's per-host pool keyed
// by the downstream's filter state; the cluster's thresholds count over
// all its pools (Envoy's per-cluster resource manager):
//
//   - a request takes a free slot of a pooled connection (HTTP/1.1: an
//     idle connection; h2c: a connection below the server's
//     MAX_CONCURRENT_STREAMS), if max_requests allows it, else overflows;
//   - without one it waits "pending" (max_pending_requests, else
//     overflow), and the pool opens connections for its pending requests
//     (HTTP/1.1: one per pending request beyond those being opened; h2c:
//     one at a time) while max_connections allows it — or regardless,
//     counted as an overflow, when the pool has none at all (Envoy's
//     exception); a pending request waits until a connection or slot is
//     free (max_requests checked again then), the request's context ends
//     (route timeout, the source leaving), or a connection attempt of the
//     pool fails (all its pending requests fail, as Envoy purges them);
//   - a connection takes no new request once it has been given
//     max_requests_per_connection and closes when they are done; an idle
//     one closes after upstreamIdleTimeout.

// overflowError is a request refused by a circuit breaker: a local 503
// with x-envoy-overloaded, never retried (Envoy's UO).
type overflowError struct{ limit model.Limit }

func (e *overflowError) Error() string {
	return fmt.Sprintf("upstream overflow: the cluster's %s circuit breaker is open", e.limit)
}

// overflowed reports whether err is a circuit breaker's refusal; if so it
// counts it and marks the answer as Envoy does (x-envoy-overloaded: true,
// response flag UO).
func (p *Proxy) overflowed(w http.ResponseWriter, r *http.Request, err error) bool {
	var o *overflowError
	if !errors.As(err, &o) {
		return false
	}
	cluster := ""
	if ex := exchangeOf(r.Context()); ex != nil {
		cluster = ex.cluster.Name
	}
	p.cfg.Metrics.overflow(cluster, o.limit)
	p.log.Debug("upstream overflow", "cluster", cluster, "limit", o.limit, "response_flags", "UO")
	w.Header().Set("X-Envoy-Overloaded", "true")
	return true
}

var errStreamClosed = errors.New("the source closed the stream")

// tryAcquire adds one to n if n stays at most limit.
func tryAcquire(n interface {
	Load() int64
	CompareAndSwap(old, new int64) bool
}, limit int64) bool {
	for {
		v := n.Load()
		if v >= limit {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

type poolKey struct {
	cluster string
	dest    string
	up      model.UpstreamProtocol
}

// connPool is one downstream stream's connections to one endpoint.
type connPool struct {
	p   *Proxy
	st  *httpStream
	up  model.UpstreamProtocol
	cs  *clusterState
	ctx context.Context // dials; cancelled when the pool closes
	end context.CancelFunc

	mu         sync.Mutex
	cl         *model.Cluster // the latest configuration
	ep         model.Endpoint
	closed     bool
	conns      []*poolConn
	connecting int
	waiters    []chan waitResult
}

type poolConn struct {
	cc       *http.ClientConn
	served   uint32
	draining bool
	// idle closes the connection after upstreamIdleTimeout without a
	// request; made once, armed (idleArmed) whenever the connection has
	// none in flight.
	idle      *time.Timer
	idleArmed bool
	idleSince time.Time // when it was armed: a stale firing is ignored
}

// stopIdle disarms c's idle timer.
func (c *poolConn) stopIdle() {
	if c.idleArmed {
		c.idle.Stop()
		c.idleArmed = false
	}
}

type waitResult struct {
	cc     *http.ClientConn
	reused bool
	err    error
}

// pool returns the stream's pool for ep of cl.
func (st *httpStream) pool(cl *model.Cluster, ep model.Endpoint) (*connPool, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, errStreamClosed
	}
	k := poolKey{cl.Name, ep.Destination.String(), cl.Upstream}
	if p := st.pools[k]; p != nil {
		return p, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &connPool{p: st.p, st: st, up: cl.Upstream, cs: st.p.clusterState(cl.Name), ctx: ctx, end: cancel, cl: cl, ep: ep}
	st.pools[k] = p
	return p, nil
}

// acquire returns a connection with a slot reserved for one request, the
// request counted in the cluster's requests in flight (released by
// done), and whether the connection served requests before; or an
// *overflowError, a *connectError, errStreamClosed or ctx's error.
func (p *connPool) acquire(ctx context.Context, cl *model.Cluster, ep model.Endpoint) (*http.ClientConn, bool, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, errStreamClosed
	}
	p.cl, p.ep = cl, ep
	if r, ok := p.takeReadyLocked(); ok {
		p.mu.Unlock()
		return r.cc, r.reused, r.err
	}
	if !tryAcquire(&p.cs.pending, cl.Limit(model.LimitPending)) {
		p.mu.Unlock()
		return nil, false, &overflowError{model.LimitPending}
	}
	w := make(chan waitResult, 1)
	p.waiters = append(p.waiters, w)
	p.connectLocked()
	p.mu.Unlock()
	select {
	case r := <-w:
		return r.cc, r.reused, r.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
		p.cs.pending.Add(-1)
		p.mu.Unlock()
		return nil, false, ctx.Err()
	}
	p.mu.Unlock()
	if r := <-w; r.cc != nil { // handed over meanwhile: give it back
		r.cc.Release()
		p.done()
	}
	return nil, false, ctx.Err()
}

// done ends one request of the pool (max_requests).
func (p *connPool) done() { p.cs.active.Add(-1) }

// takeReadyLocked reserves a slot on a pooled connection; ok is false
// when none has one.
func (p *connPool) takeReadyLocked() (r waitResult, ok bool) {
	for _, c := range p.conns {
		if c.draining || c.cc.Reserve() != nil {
			continue
		}
		if !tryAcquire(&p.cs.active, p.cl.Limit(model.LimitRequests)) {
			c.cc.Release()
			return waitResult{err: &overflowError{model.LimitRequests}}, true
		}
		r = waitResult{cc: c.cc, reused: c.served > 0}
		c.served++
		if n := p.cl.MaxRequestsPerConnection; n > 0 && c.served >= n {
			c.draining = true
		}
		c.stopIdle()
		return r, true
	}
	return waitResult{}, false
}

// connectLocked opens connections for the pending requests that the
// connections being opened will not serve.
func (p *connPool) connectLocked() {
	for {
		capacity := p.connecting // HTTP/1.1: one request per connection
		if p.up == model.UpstreamHTTP2 && p.connecting > 0 {
			capacity = len(p.waiters)
		}
		if len(p.waiters) <= capacity {
			return
		}
		if !tryAcquire(&p.cs.connections, p.cl.Limit(model.LimitConnections)) {
			p.p.cfg.Metrics.overflow(p.cl.Name, model.LimitConnections)
			if len(p.conns) > 0 || p.connecting > 0 {
				return // wait for a connection of the pool to be free
			}
			p.cs.connections.Add(1)
		}
		p.connecting++
		go p.dial(p.cl, p.ep)
	}
}

// dial opens one connection and hands it to the pending requests.
func (p *connPool) dial(cl *model.Cluster, ep model.Endpoint) {
	cc, err := p.newClientConn(cl, ep)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connecting--
	if err != nil {
		p.cs.connections.Add(-1)
		var ce *connectError
		if !errors.As(err, &ce) {
			err = &connectError{err}
		}
		for _, w := range p.waiters {
			p.cs.pending.Add(-1)
			w <- waitResult{err: err}
		}
		p.waiters = nil
		return
	}
	if p.closed {
		p.cs.connections.Add(-1)
		go cc.Close()
		return
	}
	p.conns = append(p.conns, &poolConn{cc: cc})
	cc.SetStateHook(p.stateChanged)
	p.dispatchLocked()
}

func (p *connPool) newClientConn(cl *model.Cluster, ep model.Endpoint) (*http.ClientConn, error) {
	tr, err := p.st.transport(p.up)
	if err != nil {
		return nil, err
	}
	ctx := context.WithValue(p.ctx, upstreamKey{}, &upstream{ep: ep, cluster: cl})
	return tr.NewClientConn(ctx, "http", ep.Destination.String())
}

func (p *connPool) dispatch() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dispatchLocked()
}

// stateChanged is the connections' state hook: a request ended, a slot
// freed or a connection broke. It is called synchronously from
// Response.Body.Close — the common case, dispatched here, on the request's
// goroutine — and from ClientConn.Release, which takeReadyLocked may call
// with p.mu held: then the dispatch runs on a goroutine of its own.
func (p *connPool) stateChanged(*http.ClientConn) {
	if p.mu.TryLock() {
		p.dispatchLocked()
		p.mu.Unlock()
		return
	}
	go p.dispatch()
}

// dispatchLocked forgets broken connections, closes drained ones, gives
// free slots to the pending requests in order, arms the idle timers and
// opens connections for the requests still pending.
func (p *connPool) dispatchLocked() {
	if p.closed {
		return
	}
	alive := p.conns[:0]
	for _, c := range p.conns {
		switch {
		case c.cc.Err() != nil:
		case c.draining && c.cc.InFlight() == 0:
			go c.cc.Close()
		default:
			alive = append(alive, c)
			continue
		}
		c.stopIdle()
		p.cs.connections.Add(-1)
	}
	clear(p.conns[len(alive):])
	p.conns = alive
	for len(p.waiters) > 0 {
		r, ok := p.takeReadyLocked()
		if !ok {
			break
		}
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.cs.pending.Add(-1)
		w <- r
	}
	for _, c := range p.conns {
		if !c.idleArmed && !c.draining && c.cc.InFlight() == 0 {
			c.idleArmed, c.idleSince = true, time.Now()
			if c.idle == nil {
				c.idle = time.AfterFunc(upstreamIdleTimeout, func() { p.closeIdle(c) })
			} else {
				c.idle.Reset(upstreamIdleTimeout)
			}
		}
	}
	if len(p.waiters) > 0 {
		p.connectLocked()
	}
}

// closeIdle closes c if it is still idle.
func (p *connPool) closeIdle(c *poolConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.conns, c)
	if i < 0 || !c.idleArmed || time.Since(c.idleSince) < upstreamIdleTimeout || c.cc.InFlight() > 0 {
		return
	}
	p.conns = slices.Delete(p.conns, i, i+1)
	p.cs.connections.Add(-1)
	go c.cc.Close()
}

// close closes the pool's connections and fails its pending requests.
func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.end()
	for _, w := range p.waiters {
		p.cs.pending.Add(-1)
		w <- waitResult{err: errStreamClosed}
	}
	p.waiters = nil
	for _, c := range p.conns {
		c.stopIdle()
		p.cs.connections.Add(-1)
		go c.cc.Close()
	}
	p.conns = nil
}
