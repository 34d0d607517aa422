package proxy

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// concurrency is a backend handler that counts the requests in flight
// and their peak, holding each until release is closed.
type concurrency struct {
	inFlight, peak atomic.Int64
	arrived        chan struct{}
	release        chan struct{}
}

func newConcurrency() *concurrency {
	return &concurrency{arrived: make(chan struct{}, 100), release: make(chan struct{})}
}

func (c *concurrency) handle(w http.ResponseWriter, _ *http.Request) {
	n := c.inFlight.Add(1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	c.arrived <- struct{}{}
	<-c.release
	c.inFlight.Add(-1)
	w.Write([]byte("ok"))
}

// TestConnectionPool checks the pool semantics of XDS.md §11 with one
// downstream stream (an h2c source multiplexing its requests): HTTP/1.1
// upstream connections carry one request at a time, so max_connections 1
// queues the others as pending on the one connection; h2c upstream
// carries them all on one connection; without limits HTTP/1.1 opens one
// connection per concurrent request.
func TestConnectionPool(t *testing.T) {
	tests := []struct {
		name      string
		upstream  model.UpstreamProtocol
		limits    *model.Thresholds
		wantPeak  int64 // requests in flight at the backend at once
		wantConns int64 // upstream connections opened
	}{
		{name: "HTTP/1.1, no limits: a connection per request", upstream: model.UpstreamHTTP1, wantPeak: 4, wantConns: 4},
		{name: "HTTP/1.1, max_connections 1: queued on one", upstream: model.UpstreamHTTP1,
			limits: &model.Thresholds{MaxConnections: 1, MaxPendingRequests: 10, MaxRequests: 10}, wantPeak: 1, wantConns: 1},
		{name: "HTTP/1.1, max_connections 2", upstream: model.UpstreamHTTP1,
			limits: &model.Thresholds{MaxConnections: 2, MaxPendingRequests: 10, MaxRequests: 10}, wantPeak: 2, wantConns: 2},
		{name: "h2c, max_connections 1: multiplexed", upstream: model.UpstreamHTTP2,
			limits: &model.Thresholds{MaxConnections: 1, MaxPendingRequests: 10, MaxRequests: 10}, wantPeak: 4, wantConns: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMesh(t)
			cc := newConcurrency()
			b := startBackend(t, m, "127.0.0.1", "b", mustID(t, "spiffe://cluster.local/ns/demo/sa/web"), cc.handle)
			web := cluster("web", b)
			web.Upstream, web.Limits = tt.upstream, tt.limits
			routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}
			tp := startProxy(t, m, httpConfig(routes, web))
			c := newClient(t, m, tp, vip, true)
			const n = 4
			var wg sync.WaitGroup
			codes := make([]int, n)
			for i := range n {
				wg.Go(func() { codes[i] = c.get(t, "http://web/").code })
			}
			for range tt.wantPeak {
				<-cc.arrived
			}
			// The ones that can run at once have arrived; give any other a
			// moment to arrive too (it must not), then let them all go.
			time.Sleep(50 * time.Millisecond)
			close(cc.release)
			wg.Wait()
			for i, code := range codes {
				if code != http.StatusOK {
					t.Fatalf("request %d: %d", i, code)
				}
			}
			if p, n := cc.peak.Load(), b.conns.Load(); p != tt.wantPeak || n != tt.wantConns {
				t.Fatalf("peak concurrency %d over %d connections, want %d over %d", p, n, tt.wantPeak, tt.wantConns)
			}
		})
	}
}

// TestPendingOverflow: with the one connection busy and one request
// pending, a third overflows max_pending_requests: 503 with
// x-envoy-overloaded, no upstream attempt.
func TestPendingOverflow(t *testing.T) {
	m := newTestMesh(t)
	cc := newConcurrency()
	b := startBackend(t, m, "127.0.0.1", "b", mustID(t, "spiffe://cluster.local/ns/demo/sa/web"), cc.handle)
	web := cluster("web", b)
	web.Limits = &model.Thresholds{MaxConnections: 1, MaxPendingRequests: 1, MaxRequests: 10}
	routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web", Retry: httpRouteRetry(2)}}
	tp := startProxy(t, m, httpConfig(routes, web))
	c := newClient(t, m, tp, vip, true)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	wg.Go(func() { codes[0] = c.get(t, "http://web/").code })
	<-cc.arrived
	wg.Go(func() { codes[1] = c.get(t, "http://web/").code })
	eventuallyProxy(t, func() bool { return tp.p.clusterState("web").pending.Load() == 1 })
	r := c.get(t, "http://web/")
	if r.code != http.StatusServiceUnavailable || r.header.Get("X-Envoy-Overloaded") != "true" {
		t.Fatalf("third request: %d %v %q", r.code, r.header, r.body)
	}
	close(cc.release)
	wg.Wait()
	if codes[0] != http.StatusOK || codes[1] != http.StatusOK {
		t.Fatalf("held and pending requests: %v", codes)
	}
	if got := tp.metric(t, "ambit_waypoint_upstream_overflow_total", map[string]string{"cluster": "web", "limit": "max_pending_requests"}); got != 1 {
		t.Fatalf("pending overflows %v, want 1", got)
	}
	if got := tp.metric(t, "ambit_waypoint_upstream_retries_total", nil); got != 0 {
		t.Fatalf("%v retries: an overflow is not retried", got)
	}
	if b.hits.Load() != 2 {
		t.Fatalf("backend saw %d requests, want 2", b.hits.Load())
	}
}

// TestMaxRequestsPerConnection: a connection takes at most that many
// requests; the next one opens a new connection.
func TestMaxRequestsPerConnection(t *testing.T) {
	m := newTestMesh(t)
	b := startBackend(t, m, "127.0.0.1", "b", mustID(t, "spiffe://cluster.local/ns/demo/sa/web"), echo)
	web := cluster("web", b)
	web.MaxRequestsPerConnection = 2
	routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}
	tp := startProxy(t, m, httpConfig(routes, web))
	c := newClient(t, m, tp, vip)
	for i := range 5 {
		if r := c.get(t, "http://web/"); r.code != http.StatusOK {
			t.Fatalf("request %d: %d", i, r.code)
		}
	}
	if n := b.conns.Load(); n != 3 {
		t.Fatalf("%d upstream connections for 5 requests, want 3", n)
	}
	// The source leaving closes the pool: nothing stays counted.
	c.tr.CloseIdleConnections()
	cs := tp.p.clusterState("web")
	eventuallyProxy(t, func() bool { return cs.connections.Load() == 0 && cs.pending.Load() == 0 && cs.active.Load() == 0 })
}

// eventuallyProxy waits up to 5 s for cond.
func eventuallyProxy(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStaleConnection: a request whose kept-alive upstream connection
// the endpoint closes under it is sent once more on a new connection,
// not failed (net/http's Transport rule), and not counted as a retry.
func TestStaleConnection(t *testing.T) {
	m := newTestMesh(t)
	var died atomic.Bool
	b := startBackend(t, m, "127.0.0.1", "b", mustID(t, "spiffe://cluster.local/ns/demo/sa/web"), func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/die" && died.CompareAndSwap(false, true) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close() // no answer: the connection just closes
			}
			return
		}
		w.Write([]byte("ok"))
	})
	web := cluster("web", b)
	routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}
	tp := startProxy(t, m, httpConfig(routes, web))
	c := newClient(t, m, tp, vip)
	for _, path := range []string{"/", "/die", "/"} {
		if r := c.get(t, "http://web"+path); r.code != http.StatusOK || r.body != "ok" {
			t.Fatalf("GET %s: %d %q", path, r.code, r.body)
		}
	}
	if !died.Load() || b.conns.Load() != 2 {
		t.Fatalf("died %v, %d upstream connections; want the second request's connection replaced", died.Load(), b.conns.Load())
	}
	if got := tp.metric(t, "ambit_waypoint_upstream_retries_total", nil); got != 0 {
		t.Fatalf("%v retries", got)
	}
}
