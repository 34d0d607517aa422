package proxy

import (
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// TestFaultInjection serves routes with faults (XDS.md §15) through a real
// waypoint: an abort of every request answers without reaching the
// backend, a 50% abort aborts about half, a delay holds the request, a
// gRPC abort is a trailers-only answer; a chain without the fault filter
// ignores the routes' faults. The metric counts each kind.
func TestFaultInjection(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	var hitCount atomic.Int64
	hits := func() int64 { return hitCount.Load() }
	web := startBackend(t, m, "127.0.0.1", "web", id, func(w http.ResponseWriter, r *http.Request) { hitCount.Add(1); echo(w, r) })
	delay := 150 * time.Millisecond
	routes := []model.Route{
		{Name: "abort", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/abort"}, Cluster: "web",
			Fault:           &model.Fault{Abort: &model.Abort{HTTPStatus: 418}, AbortPerMillion: model.PerMillion},
			ResponseHeaders: model.HeaderMutation{Add: []model.HeaderValue{{Name: "x-route", Value: "abort"}}}},
		{Name: "half", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/half"}, Cluster: "web",
			Fault: &model.Fault{Abort: &model.Abort{HTTPStatus: 503}, AbortPerMillion: model.PerMillion / 2}},
		{Name: "slow", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/slow"}, Cluster: "web",
			Fault: &model.Fault{Delay: &delay, DelayPerMillion: model.PerMillion}},
		{Name: "grpc", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/grpc"}, Cluster: "web",
			Fault: &model.Fault{Abort: &model.Abort{GRPC: true, GRPCStatus: 14}, AbortPerMillion: model.PerMillion}},
	}
	cfg := httpConfig(routes, cluster("web", web))
	cfg.Chains[0].Fault = true
	tp := startProxy(t, m, cfg)
	c := newClient(t, m, tp, vip)

	r := c.get(t, "http://web/abort")
	if r.code != 418 || strings.TrimSpace(r.body) != "fault filter abort" || r.header.Get("X-Route") != "abort" || hits() != 0 {
		t.Fatalf("abort: %d %q x-route=%q, backend hits %d; want 418 from the waypoint with the route's headers", r.code, r.body, r.header.Get("X-Route"), hits())
	}
	r = c.get(t, "http://web/grpc")
	if r.code != 200 || r.header.Get("Grpc-Status") != "14" || r.header.Get("Content-Type") != "application/grpc" || hits() != 0 {
		t.Fatalf("grpc abort: %d %v", r.code, r.header)
	}
	start := time.Now()
	r = c.get(t, "http://web/slow")
	if took := time.Since(start); r.code != 200 || took < delay || hits() != 1 {
		t.Fatalf("delay: %d after %s (hits %d), want 200 after ≥ %s", r.code, took, hits(), delay)
	}
	const n = 400
	aborted := 0
	for range n {
		if c.get(t, "http://web/half").code == 503 {
			aborted++
		}
	}
	if aborted < n*40/100 || aborted > n*60/100 {
		t.Fatalf("50%% abort aborted %d of %d", aborted, n)
	}
	if got := tp.metric(t, "ambit_waypoint_faults_injected_total", map[string]string{"kind": "abort"}); got != float64(aborted+2) {
		t.Errorf("aborts counted %v, want %d", got, aborted+2)
	}
	if got := tp.metric(t, "ambit_waypoint_faults_injected_total", map[string]string{"kind": "delay"}); got != 1 {
		t.Errorf("delays counted %v, want 1", got)
	}
	if got := tp.metric(t, "istio_requests_total", map[string]string{"response_code": "418"}); got != 1 {
		t.Errorf("aborted request counted %v times with its code, want 1", got)
	}

	// Without the fault filter on the chain, the routes' faults do nothing.
	off := httpConfig(routes, cluster("web", web))
	tp2 := startProxy(t, m, off)
	if r := newClient(t, m, tp2, vip).get(t, "http://web/abort"); r.code != 200 {
		t.Fatalf("abort without the fault filter: %d, want 200 from the backend", r.code)
	}
}

// TestTraceHeadersUpstream checks what the backend sees of the trace
// context (XDS.md §16): a new trace with a request id, or the caller's
// trace continued with the waypoint's span as the parent.
func TestTraceHeadersUpstream(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	web := startBackend(t, m, "127.0.0.1", "web", id, echo)
	cfg := httpConfig([]model.Route{{Name: "all", Match: model.RouteMatch{Path: "/"}, Cluster: "web"}}, cluster("web", web))
	cfg.Chains[0].Trace = &model.TraceConfig{GenerateRequestID: true, Tracing: true, SamplePerMillion: model.PerMillion}
	tp := startProxy(t, m, cfg)
	c := newClient(t, m, tp, vip)
	tpRE := regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`)

	h := c.get(t, "http://web/").echoed(t).Header
	got := tpRE.FindStringSubmatch(h.Get("Traceparent"))
	if got == nil || h.Get("X-Request-Id") == "" || h.Get("X-B3-Traceid") != got[1] || h.Get("X-B3-Spanid") != got[2] ||
		h.Get("X-B3-Sampled") != "1" || h.Get("X-B3-Parentspanid") != "" {
		t.Fatalf("new trace: backend saw %v", h)
	}
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	h = c.get(t, "http://web/", "traceparent", caller, "x-request-id", "req-1").echoed(t).Header
	got = tpRE.FindStringSubmatch(h.Get("Traceparent"))
	if got == nil || got[1] != "4bf92f3577b34da6a3ce929d0e0e4736" || got[2] == "00f067aa0ba902b7" ||
		h.Get("X-B3-Parentspanid") != "00f067aa0ba902b7" || h.Get("X-Request-Id") != "req-1" {
		t.Fatalf("continued trace: backend saw %v", h)
	}
}
