package app

import (
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"ambit.dev/waypoint/internal/xdstest"
)

// hold is an endpoint behaviour: requests to /hold wait until release
// is closed (counted in inFlight meanwhile).
type hold struct {
	inFlight atomic.Int64
	release  chan struct{}
	once     sync.Once
}

// open lets the held requests finish.
func (h *hold) open() { h.once.Do(func() { close(h.release) }) }

func newHold() *hold { return &hold{release: make(chan struct{})} }

func (h *hold) handler(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != "/hold" {
		return false
	}
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	select {
	case <-h.release:
	case <-r.Context().Done():
	}
	fmt.Fprint(w, "released")
	return true
}

// TestBackendPolicyEndToEnd: the cluster fields of a BackendPolicy
// (XDS.md §5.2) over xDS, through a whole waypoint: outlier detection
// ejects an endpoint that always answers 503 and max_ejection_percent
// keeps the second one in; max_requests turns concurrent requests beyond
// it into local 503s with x-envoy-overloaded; LEAST_REQUEST sends new
// requests to the idle endpoint.
func TestBackendPolicyEndToEnd(t *testing.T) {
	m := newMesh(t)
	wpID := mustID(t, "spiffe://cluster.local/ns/demo/sa/waypoint")
	clientID := mustID(t, "spiffe://cluster.local/ns/demo/sa/client")
	webID := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	cp := startControlPlane(t, m, wpID)

	always503 := func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	}
	bad1, bad2 := startZtunnel(t, m, "127.0.0.1", "bad-1", webID), startZtunnel(t, m, "::1", "bad-2", webID)
	bad1.handle(always503)
	bad2.handle(always503)
	good := startZtunnel(t, m, "127.0.0.2", "good", webID)
	slow := startZtunnel(t, m, "::1", "slow", webID)
	slowHold := newHold()
	slow.handle(slowHold.handler)
	lr1, lr2 := startZtunnel(t, m, "127.0.0.1", "lr-1", webID), startZtunnel(t, m, "::1", "lr-2", webID)
	lrHold := newHold()
	lr1.handle(lrHold.handler)
	lr2.handle(lrHold.handler)
	release := func() {
		slowHold.open()
		lrHold.open()
	}

	svc := func(name, vip string, eps ...*ztunnel) xdstest.Service {
		s := xdstest.Service{Name: name, Namespace: "demo", Port: 80, Protocol: "http", VIPs: []netip.Addr{netip.MustParseAddr(vip)}}
		for _, z := range eps {
			s.Endpoints = append(s.Endpoints, z.endpoint(8080))
		}
		return s
	}
	flaky := svc("flaky", "10.96.0.20", bad1, bad2, good)
	busy := svc("busy", "fd00:10:96::21", slow)
	lr := svc("lr", "10.96.0.22", lr1, lr2)
	flakyVIP, busyVIP, lrVIP := netip.AddrPortFrom(flaky.VIPs[0], 80), netip.AddrPortFrom(busy.VIPs[0], 80), netip.AddrPortFrom(lr.VIPs[0], 80)
	u := wrapperspb.UInt32
	cp.set(t, []xdstest.Service{flaky, busy, lr}, func(res map[resource.Type][]types.Resource) {
		for _, r := range res[resource.ClusterType] {
			c := r.(*clusterv3.Cluster)
			switch c.GetName() {
			case flaky.ClusterName():
				// What the control plane emits for a BackendPolicy with
				// outlier detection (panic threshold 0 is already set).
				c.OutlierDetection = &clusterv3.OutlierDetection{
					Consecutive_5Xx: u(3), ConsecutiveGatewayFailure: u(3), Interval: durationpb.New(time.Second),
					BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: u(50),
					EnforcingConsecutive_5Xx: u(100), EnforcingConsecutiveGatewayFailure: u(100), EnforcingSuccessRate: u(0),
				}
			case busy.ClusterName():
				th := c.CircuitBreakers.Thresholds[0]
				th.MaxConnections, th.MaxPendingRequests, th.MaxRequests = u(1), u(1), u(2)
			case lr.ClusterName():
				c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
				c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: u(20)}}
				c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: 50}
			}
		}
		for _, r := range res[resource.RouteType] {
			// No retries: each request is one attempt to one endpoint.
			rc := r.(*routev3.RouteConfiguration)
			rc.VirtualHosts[0].Routes[0].GetRoute().RetryPolicy.NumRetries = u(0)
		}
	})

	a := runWaypoint(t, m, cp)
	t.Cleanup(release) // before the waypoint stops: held requests end
	eventually(t, "ready", a.Ready)
	src := newSource(t, m, a, clientID, wpID)

	t.Run("outlier detection ejects, within max_ejection_percent", func(t *testing.T) {
		cluster := map[string]string{"cluster": flaky.ClusterName()}
		// Round robin: each endpoint gets every third request; the first
		// bad one to reach 3 consecutive 503s is ejected (1 of 3 hosts ≤
		// 50 %), the second may not be (2 of 3 > 50 %).
		codes := map[int]int{}
		for i := range 30 {
			code, _ := src.get(t, flakyVIP, "flaky", fmt.Sprintf("/%d", i), false)
			codes[code]++
		}
		if got := a.metric(t, "ambit_waypoint_outlier_ejections_total", cluster); got != 1 {
			t.Fatalf("ejections = %v, want 1 (answers %v)", got, codes)
		}
		if got := a.metric(t, "ambit_waypoint_outlier_ejected_hosts", cluster); got != 1 {
			t.Fatalf("ejected hosts = %v, want 1", got)
		}
		n1, n2, ng := len(bad1.requests()), len(bad2.requests()), len(good.requests())
		ejected, kept := n1, n2
		if n2 < n1 {
			ejected, kept = n2, n1
		}
		// Ejected after its 3rd request, within the first 9; the other
		// two share the remaining requests.
		if ejected != 3 || kept+ng != 27 || ng < 12 {
			t.Fatalf("requests seen: bad-1 %d, bad-2 %d, good %d; want the ejected one to see 3 only", n1, n2, ng)
		}
		if codes[http.StatusOK] != ng {
			t.Fatalf("answers %v, want %d 200s", codes, ng)
		}
		// The ejected endpoint stays out (base_ejection_time 1 min).
		for range 6 {
			src.get(t, flakyVIP, "flaky", "/", false)
		}
		if n := min(len(bad1.requests()), len(bad2.requests())); n != 3 {
			t.Fatalf("the ejected endpoint got %d requests, want still 3", n)
		}
	})

	t.Run("max_requests overflows under concurrency", func(t *testing.T) {
		// One after the other: max_pending_requests 1 would refuse the
		// second while the first waits for its connection.
		results := make(chan string, 2)
		var held sync.WaitGroup
		defer func() { // also when the test fails: no request outlives it
			slowHold.open()
			held.Wait()
		}()
		for i := range int64(2) {
			held.Add(1)
			go func() {
				defer held.Done()
				code, body := src.get(t, busyVIP, "busy", "/hold", false)
				results <- fmt.Sprint(code, " ", body)
			}()
			eventually(t, "requests held by the endpoint", func() error {
				if n := slowHold.inFlight.Load(); n != i+1 {
					return fmt.Errorf("%d in flight", n)
				}
				return nil
			})
		}
		for range 3 {
			code, h, body := src.getWith(t, busyVIP, "busy", "/hold", false, nil)
			if code != http.StatusServiceUnavailable || h.Get("X-Envoy-Overloaded") != "true" || body != "upstream connect error or disconnect/reset before headers. reset reason: overflow" {
				t.Fatalf("third request in flight: %d %v %q", code, h, body)
			}
		}
		if got := a.metric(t, "ambit_waypoint_upstream_overflow_total", map[string]string{"cluster": busy.ClusterName(), "limit": "max_requests"}); got != 3 {
			t.Fatalf("max_requests overflows = %v, want 3", got)
		}
		slowHold.open()
		for range 2 {
			if r := <-results; r != "200 released" {
				t.Fatalf("held request: %s", r)
			}
		}
		// Below the limit again.
		if code, body := src.get(t, busyVIP, "busy", "/", false); code != http.StatusOK {
			t.Fatalf("after the release: %d %q", code, body)
		}
	})

	t.Run("least request prefers the idle endpoint", func(t *testing.T) {
		held := make(chan string, 1)
		go func() {
			_, body := src.get(t, lrVIP, "lr", "/hold", false)
			held <- body
		}()
		defer func() { // also when the test fails: no request outlives it
			lrHold.open()
			if body := <-held; body != "released" {
				t.Errorf("held request: %q", body)
			}
		}()
		eventually(t, "one request held", func() error {
			if n := lrHold.inFlight.Load(); n != 1 {
				return fmt.Errorf("%d in flight", n)
			}
			return nil
		})
		busyEP := "lr-1"
		if len(lr2.requests()) > 0 {
			busyEP = "lr-2"
		}
		for i := range 20 {
			if _, body := src.get(t, lrVIP, "lr", "/", false); field(body, "endpoint") == busyEP {
				t.Fatalf("request %d went to %s, which has a request in flight: %q", i, busyEP, body)
			}
		}
	})
}
