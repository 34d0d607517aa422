package proxy

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// TestOutlierEjection: an endpoint answering 503 is ejected after
// consecutive_5xx answers and gets nothing while ejected — unless the
// panic threshold puts the cluster in panic mode —, and is back once the
// ejection time has passed, which the ejected hosts gauge shows at the
// next scrape without any traffic.
func TestOutlierEjection(t *testing.T) {
	tests := []struct {
		name      string
		panic     uint32
		wantWhile int64 // requests the bad endpoint gets while ejected (of 10)
	}{
		{name: "panic threshold 0: never picked while ejected", panic: 0, wantWhile: 0},
		{name: "panic threshold 50: 1 of 2 usable is not below it", panic: 50, wantWhile: 0},
		{name: "panic threshold 100: panic, picked among all", panic: 100, wantWhile: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMesh(t)
			id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
			bad := startBackend(t, m, "127.0.0.1", "bad", id, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			good := startBackend(t, m, "127.0.0.1", "good", id, echo)
			web := cluster("web", bad, good)
			web.LB.PanicThreshold = tt.panic
			web.Outlier = &model.OutlierDetection{Consecutive5xx: 2, Interval: time.Second, BaseEjectionTime: 10 * time.Second,
				MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50, Enforcing5xx: 100}
			var clock atomic.Int64
			clock.Store(time.Unix(1000, 0).UnixNano())
			now := func() time.Time { return time.Unix(0, clock.Load()) }
			routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}
			tp := startProxyClock(t, m, httpConfig(routes, web), now)
			c := newClient(t, m, tp, vip)
			gauge := func() float64 {
				return tp.metric(t, "ambit_waypoint_outlier_ejected_hosts", map[string]string{"cluster": "web"})
			}
			for range 4 { // round robin: bad answers 2 of them
				c.get(t, "http://web/")
			}
			if bad.hits.Load() != 2 || gauge() != 1 || tp.metric(t, "ambit_waypoint_outlier_ejections_total", nil) != 1 {
				t.Fatalf("bad got %d requests, gauge %v: want 2 and ejected", bad.hits.Load(), gauge())
			}
			for range 10 {
				c.get(t, "http://web/")
			}
			if got := bad.hits.Load() - 2; got != tt.wantWhile {
				t.Fatalf("bad got %d of 10 requests while ejected, want %d", got, tt.wantWhile)
			}
			// 9 s on: still ejected; 11 s: the tick after 10 s unejects.
			clock.Add(int64(9 * time.Second))
			if gauge() != 1 {
				t.Fatalf("gauge %v after 9 s, want 1", gauge())
			}
			clock.Add(int64(2 * time.Second))
			if gauge() != 0 {
				t.Fatalf("gauge %v after 11 s, want 0 (back in service)", gauge())
			}
			before := bad.hits.Load()
			for range 2 {
				c.get(t, "http://web/")
			}
			if bad.hits.Load() != before+1 {
				t.Fatalf("bad got %d of 2 requests after its ejection, want 1", bad.hits.Load()-before)
			}
		})
	}
}

// TestLoadBalancers: sequential requests to a slow and a fast endpoint —
// round robin shares them; least request too (nothing is in flight when
// a request picks, so every draw ties); peak EWMA sends nearly all to the
// fast one once the slow one answered once.
func TestLoadBalancers(t *testing.T) {
	tests := []struct {
		name     string
		policy   model.LBPolicy
		min, max int64 // requests the slow endpoint gets, of 20
	}{
		{name: "round robin", policy: model.LBRoundRobin, min: 10, max: 10},
		{name: "least request", policy: model.LBLeastRequest, min: 1, max: 19},
		{name: "EWMA", policy: model.LBPeakEWMA, min: 0, max: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMesh(t)
			id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
			slow := startBackend(t, m, "127.0.0.1", "slow", id, func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(100 * time.Millisecond)
				echo(w, r)
			})
			fast := startBackend(t, m, "127.0.0.1", "fast", id, echo)
			web := cluster("web", slow, fast)
			web.LB = model.LoadBalancing{Policy: tt.policy, ChoiceCount: 10}
			routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}
			tp := startProxy(t, m, httpConfig(routes, web))
			c := newClient(t, m, tp, vip)
			for i := range 20 {
				if r := c.get(t, "http://web/"); r.code != http.StatusOK {
					t.Fatalf("request %d: %d", i, r.code)
				}
			}
			if n := slow.hits.Load(); n < tt.min || n > tt.max || n+fast.hits.Load() != 20 {
				t.Fatalf("slow endpoint got %d of 20 (fast %d), want %d..%d", n, fast.hits.Load(), tt.min, tt.max)
			}
		})
	}
}
