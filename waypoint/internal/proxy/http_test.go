package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// echoed is what an echo backend saw of a request.
type echoed struct {
	URI    string
	Host   string
	Header http.Header
	Body   string
}

// echo answers 200 with the request it saw (JSON) and two headers the
// routes change.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Internal", "secret")
	w.Header().Set("X-Multi", "a")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(echoed{URI: r.RequestURI, Host: r.Host, Header: r.Header, Body: string(b)})
}

func (r response) echoed(t *testing.T) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("not an echo (%d): %q", r.code, r.body)
	}
	return e
}

func mustRE(t *testing.T, re string) *regexp.Regexp {
	t.Helper()
	r, err := model.CompileFullMatch(re)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func exact(v string) model.StringMatch { return model.StringMatch{Exact: v} }

// TestHTTPRoutes serves an HTTPRoute-shaped route table (XDS.md §7.1)
// through a real waypoint to loopback backends: header, method and query
// matches, redirects, a direct response, path and host rewrites and
// header modifiers as the backend and the source see them.
func TestHTTPRoutes(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	web := startBackend(t, m, "127.0.0.1", "web", id, echo)
	mobile := startBackend(t, m, "::1", "mobile", id, echo)
	writer := startBackend(t, m, "127.0.0.1", "writer", id, echo)
	debug := startBackend(t, m, "::1", "debug", id, echo)
	full := "/item"
	routes := []model.Route{
		{Name: "mobile", Match: model.RouteMatch{Path: "/", Headers: []model.HeaderMatcher{{Name: "user-agent", Value: model.StringMatch{Regex: mustRE(t, ".*Mobile.*")}}}},
			Cluster: "mobile"},
		{Name: "writer", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/api", Headers: []model.HeaderMatcher{{Name: ":method", Value: exact("POST")}}},
			Cluster: "writer"},
		{Name: "debug", Match: model.RouteMatch{Path: "/", QueryParams: []model.QueryParamMatcher{{Name: "debug", Value: exact("1")}}}, Cluster: "debug"},
		{Name: "old", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/old"}, Action: model.ActionRedirect,
			Redirect:        &model.Redirect{PrefixRewrite: "/new", Code: http.StatusFound},
			ResponseHeaders: model.HeaderMutation{Add: []model.HeaderValue{{Name: "x-redirected", Value: "yes"}}}},
		{Name: "moved", Match: model.RouteMatch{Kind: model.PathExact, Path: "/moved"}, Action: model.ActionRedirect,
			Redirect: &model.Redirect{Scheme: "https", Host: "new.demo", Port: 8443, Path: "/here", Code: http.StatusMovedPermanently}},
		{Name: "broken", Match: model.RouteMatch{Kind: model.PathExact, Path: "/broken"}, Action: model.ActionDirect, DirectStatus: 500},
		{Name: "rewrite", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/v1"}, Cluster: "web",
			Rewrite: model.Rewrite{PrefixRewrite: "/v2", Host: "api.internal"},
			RequestHeaders: model.HeaderMutation{Remove: []string{"x-debug"}, Add: []model.HeaderValue{
				{Name: "x-set", Value: "s", Action: model.OverwriteIfExistsOrAdd}, {Name: "x-add", Value: "b"}}},
			ResponseHeaders: model.HeaderMutation{Remove: []string{"x-internal"}, Add: []model.HeaderValue{
				{Name: "x-served-by", Value: "waypoint", Action: model.OverwriteIfExistsOrAdd}, {Name: "x-multi", Value: "b"}}}},
		{Name: "regex", Match: model.RouteMatch{Kind: model.PathRegex, Regex: mustRE(t, "/items/[0-9]+")}, Cluster: "web", Rewrite: model.Rewrite{FullPath: &full}},
		{Name: "web", Match: model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/web"}, Cluster: "web"},
	}
	tp := startProxy(t, m, httpConfig(routes, cluster("web", web), cluster("mobile", mobile), cluster("writer", writer), cluster("debug", debug)))
	c := newClient(t, m, tp, vip)
	const base = "http://web.demo.svc.cluster.local"

	tests := []struct {
		name, method, path string
		header             []string
		code               int
		endpoint           string // "" for local replies
		check              func(t *testing.T, r response)
	}{
		{name: "mobile user agent", method: "GET", path: "/web/x", header: []string{"User-Agent", "Mozilla/5.0 (iPhone) Mobile/15E148"}, code: 200, endpoint: "mobile"},
		{name: "desktop user agent", method: "GET", path: "/web/x", header: []string{"User-Agent", "Mozilla/5.0 (X11)"}, code: 200, endpoint: "web"},
		{name: "POST /api", method: "POST", path: "/api/items", code: 200, endpoint: "writer"},
		{name: "GET /api: no route", method: "GET", path: "/api/items", code: 404},
		{name: "POST /apix: not under /api", method: "POST", path: "/apix", code: 404},
		{name: "query match", method: "GET", path: "/anything?x=2&debug=1", code: 200, endpoint: "debug"},
		{name: "query mismatch", method: "GET", path: "/web?debug=2", code: 200, endpoint: "web"},
		{name: "redirect with prefix rewrite, query kept", method: "GET", path: "/old/a/b?q=1", code: 302, check: func(t *testing.T, r response) {
			if got := r.header.Get("Location"); got != base+"/new/a/b?q=1" || r.header.Get("X-Redirected") != "yes" {
				t.Fatalf("Location %q, headers %v", got, r.header)
			}
		}},
		{name: "redirect elsewhere", method: "GET", path: "/moved?z", code: 301, check: func(t *testing.T, r response) {
			if got := r.header.Get("Location"); got != "https://new.demo:8443/here?z" {
				t.Fatalf("Location %q", got)
			}
		}},
		{name: "direct response", method: "GET", path: "/broken", code: 500},
		{name: "rewrites and header modifiers", method: "GET", path: "/v1/users?id=7",
			header: []string{"X-Debug", "1", "X-Set", "client", "X-Add", "a", "X-Forwarded-Client-Cert", "By=forged", "X-Forwarded-For", "10.0.0.1"},
			code:   200, endpoint: "web", check: func(t *testing.T, r response) {
				e := r.echoed(t)
				if e.URI != "/v2/users?id=7" || e.Host != "api.internal" {
					t.Errorf("backend saw %s with Host %s", e.URI, e.Host)
				}
				if _, ok := e.Header["X-Debug"]; ok || !slices.Equal(e.Header["X-Set"], []string{"s"}) || !slices.Equal(e.Header["X-Add"], []string{"a", "b"}) {
					t.Errorf("backend saw headers %v", e.Header)
				}
				if _, ok := e.Header["X-Forwarded-Client-Cert"]; ok || e.Header.Get("X-Forwarded-For") != "10.0.0.1" {
					t.Errorf("XFCC not removed or XFF not passed through: %v", e.Header)
				}
				if r.header.Get("X-Internal") != "" || r.header.Get("X-Served-By") != "waypoint" || !slices.Equal(r.header.Values("X-Multi"), []string{"a", "b"}) {
					t.Errorf("response headers %v", r.header)
				}
			}},
		{name: "regex path, full path rewrite", method: "GET", path: "/items/42?v=1", code: 200, endpoint: "web", check: func(t *testing.T, r response) {
			if e := r.echoed(t); e.URI != "/item?v=1" || e.Host != "web.demo.svc.cluster.local" {
				t.Fatalf("backend saw %s with Host %s", e.URI, e.Host)
			}
		}},
		{name: "regex must match the whole path", method: "GET", path: "/items/42/x", code: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.do(t, tt.method, base+tt.path, nil, tt.header...)
			if r.code != tt.code || r.header.Get("X-Endpoint") != tt.endpoint {
				t.Fatalf("%s %s: %d from %q, want %d from %q (%s)", tt.method, tt.path, r.code, r.header.Get("X-Endpoint"), tt.code, tt.endpoint, r.body)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
	if got := tp.metric(t, "istio_requests_total", map[string]string{"response_code": "302"}); got != 1 {
		t.Errorf("redirects counted: %v", got)
	}
	if got := tp.metric(t, "istio_requests_total", map[string]string{"response_code": "200", "destination_workload": "mobile"}); got != 1 {
		t.Errorf("requests to mobile counted: %v", got)
	}
}

// TestWeightedSplit sends 2000 requests to a 90/10 weighted route: each
// backend's share is within ±4% of its weight.
func TestWeightedSplit(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	stable := startBackend(t, m, "127.0.0.1", "stable", id, echo)
	canary := startBackend(t, m, "::1", "canary", id, echo)
	routes := []model.Route{{Name: "split", Match: model.RouteMatch{Path: "/"}, Action: model.ActionWeighted,
		WeightedClusters: []model.WeightedCluster{{Name: "stable", Weight: 90}, {Name: "canary", Weight: 10}}}}
	tp := startProxy(t, m, httpConfig(routes, cluster("stable", stable), cluster("canary", canary)))
	c := newClient(t, m, tp, vip)
	const n = 2000
	var wg sync.WaitGroup
	var mu sync.Mutex
	count := map[string]int{}
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				r := c.get(t, "http://web/")
				mu.Lock()
				count[r.header.Get("X-Endpoint")]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if count["stable"]+count["canary"] != n {
		t.Fatalf("answers %v", count)
	}
	if share := float64(count["canary"]) / n; share < 0.06 || share > 0.14 {
		t.Fatalf("canary got %.1f%% of %d requests (%v), want 10±4%%", 100*share, n, count)
	}
	if got := tp.metric(t, "istio_requests_total", map[string]string{"destination_service": "canary.demo.svc.cluster.local"}); got != float64(count["canary"]) {
		t.Fatalf("requests to canary counted %v, answered %d", got, count["canary"])
	}
}

// flaky answers 503 to a fraction of the requests.
func flaky(fraction float64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if rand.Float64() < fraction {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		echo(w, r)
	}
}

// httpRouteRetry is an HTTPRoute retry of XDS.md §7.1 (attempts 4, no
// codes) with a short back-off.
func httpRouteRetry(n int) *model.RetryPolicy {
	return &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryReset | model.Retry5xx,
		NumRetries: n, BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond}
}

// TestRetries503: backends that fail 30% of the requests with 503 give
// at least 99% successes with 4 retries; a POST body is sent again on
// each attempt.
func TestRetries503(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	a := startBackend(t, m, "127.0.0.1", "a", id, flaky(0.3))
	b := startBackend(t, m, "::1", "b", id, flaky(0.3))
	routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web", Retry: httpRouteRetry(4)}}
	web := cluster("web", a, b)
	web.RetryBudget = &model.RetryBudget{Percent: 20, MinConcurrency: 3}
	tp := startProxy(t, m, httpConfig(routes, web))
	c := newClient(t, m, tp, vip)
	const n = 1000
	ok := 0
	for i := range n {
		body := fmt.Sprintf("request %d", i)
		r := c.do(t, http.MethodPost, "http://web/echo", strings.NewReader(body))
		if r.code == http.StatusOK {
			ok++
			if e := r.echoed(t); e.Body != body {
				t.Fatalf("backend got body %q, want %q", e.Body, body)
			}
		} else if r.code != http.StatusServiceUnavailable {
			t.Fatalf("answer %d %q", r.code, r.body)
		}
	}
	if ok < n*99/100 {
		t.Fatalf("%d of %d requests succeeded, want at least 99%%", ok, n)
	}
	retries := tp.metric(t, "ambit_waypoint_upstream_retries_total", map[string]string{"cluster": "web"})
	if attempts := a.hits.Load() + b.hits.Load(); retries < 0.3*n || float64(attempts) != n+retries {
		t.Fatalf("%v retries, %d attempts for %d requests", retries, attempts, n)
	}
	// The handler counts a request once it returns, which can be just
	// after the source has read the whole answer.
	eventuallyProxy(t, func() bool {
		return tp.metric(t, "istio_requests_total", map[string]string{"response_code": "200"}) == float64(ok)
	})
	if got := tp.metric(t, "ambit_waypoint_upstream_retry_overflow_total", nil); got != 0 {
		t.Fatalf("sequential requests overflowed the budget %v times", got)
	}
}

// TestRetryBody: a body larger than the retry buffer is streamed and not
// retried; a smaller one is.
func TestRetryBody(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	var calls atomic.Int64
	// Every odd attempt fails after reading the body.
	b := startBackend(t, m, "127.0.0.1", "b", id, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%2 == 1 {
			io.Copy(io.Discard, r.Body)
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		echo(w, r)
	})
	routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web", Retry: httpRouteRetry(2)}}
	tp := startProxy(t, m, httpConfig(routes, cluster("web", b)))
	c := newClient(t, m, tp, vip)
	small := strings.Repeat("s", MaxRetryBody)
	if r := c.do(t, http.MethodPut, "http://web/", strings.NewReader(small)); r.code != 200 || r.echoed(t).Body != small {
		t.Fatalf("64 KiB body: %d", r.code)
	}
	large := bytes.Repeat([]byte("l"), MaxRetryBody+1)
	if r := c.do(t, http.MethodPut, "http://web/", bytes.NewReader(large)); r.code != http.StatusServiceUnavailable {
		t.Fatalf("64 KiB + 1 body: %d, want the first attempt's 503 (not retried)", r.code)
	}
	if got := tp.metric(t, "ambit_waypoint_upstream_retries_total", nil); got != 1 {
		t.Fatalf("%v retries, want 1", got)
	}
}

// slow answers after d, or gives up when the request is abandoned.
func slow(d time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
			echo(w, r)
		case <-r.Context().Done():
		}
	}
}

// TestPerTryTimeout: an attempt to a hanging endpoint times out and is
// retried on the other endpoint.
func TestPerTryTimeout(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	hang := startBackend(t, m, "127.0.0.1", "hang", id, slow(10*time.Second))
	fast := startBackend(t, m, "::1", "fast", id, echo)
	p := httpRouteRetry(1)
	p.PerTryTimeout = 100 * time.Millisecond
	routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web", Retry: p, Timeout: 5 * time.Second}}
	tp := startProxy(t, m, httpConfig(routes, cluster("web", hang, fast)))
	c := newClient(t, m, tp, vip)
	start := time.Now()
	for i := range 4 {
		if r := c.get(t, "http://web/"); r.code != 200 || r.header.Get("X-Endpoint") != "fast" {
			t.Fatalf("request %d: %d from %q", i, r.code, r.header.Get("X-Endpoint"))
		}
	}
	// Round robin counts every pick, retries included (as Envoy's does):
	// with two endpoints each request starts on hang.
	if hang.hits.Load() != 4 || fast.hits.Load() != 4 {
		t.Fatalf("hang saw %d attempts, fast %d; want 4 and 4 (each timed-out attempt retried on fast)", hang.hits.Load(), fast.hits.Load())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s: the per-try timeout did not cut the hanging attempts", d)
	}
	if got := tp.metric(t, "ambit_waypoint_upstream_retries_total", nil); got != 4 {
		t.Fatalf("%v retries, want 4", got)
	}
	// With one endpoint, the last attempt's timeout is a 504.
	tp.p.SetConfig(indexed(httpConfig(routes, cluster("web", hang))))
	if r := c.get(t, "http://web/"); r.code != http.StatusGatewayTimeout {
		t.Fatalf("every attempt timed out: %d %q, want 504", r.code, r.body)
	}
}

func indexed(c *model.Config) *model.Config {
	c.Index()
	return c
}

// TestRouteTimeout: the route timeout bounds the whole request, retries
// included: 504.
func TestRouteTimeout(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	hang := startBackend(t, m, "127.0.0.1", "hang", id, slow(10*time.Second))
	p := httpRouteRetry(5)
	p.PerTryTimeout = 100 * time.Millisecond
	routes := []model.Route{
		{Name: "plain", Match: model.RouteMatch{Kind: model.PathExact, Path: "/plain"}, Cluster: "web", Timeout: 150 * time.Millisecond},
		{Name: "retried", Match: model.RouteMatch{Path: "/"}, Cluster: "web", Timeout: 250 * time.Millisecond, Retry: p,
			ResponseHeaders: model.HeaderMutation{Add: []model.HeaderValue{{Name: "x-route", Value: "retried"}}}},
	}
	tp := startProxy(t, m, httpConfig(routes, cluster("web", hang)))
	c := newClient(t, m, tp, vip)
	for _, path := range []string{"/plain", "/retried"} {
		start := time.Now()
		r := c.get(t, "http://web"+path)
		if r.code != http.StatusGatewayTimeout || !strings.Contains(r.body, "upstream request timeout") {
			t.Fatalf("%s: %d %q, want 504", path, r.code, r.body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s took %s", path, d)
		}
		if path == "/retried" && r.header.Get("X-Route") != "retried" {
			t.Fatalf("local reply without the route's response headers: %v", r.header)
		}
	}
	if hang.hits.Load() < 3 {
		t.Fatalf("%d attempts: the retried route should have tried at least twice", hang.hits.Load())
	}
}

// TestConnectFailureRetried: the default retry policy (XDS.md §7.1) moves
// a request whose endpoint cannot be reached to another one.
func TestConnectFailureRetried(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	up := startBackend(t, m, "::1", "up", id, echo)
	web := cluster("web", up)
	// A ztunnel that is gone: nothing listens on its address any more.
	gone := model.Endpoint{Identity: id, Healthy: true, Workload: "gone", Namespace: "demo"}
	web.Endpoints = append([]model.Endpoint{gone}, web.Endpoints...)
	def := &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryGRPCUnavailable | model.RetryGRPCCancelled | model.RetryStatusCodes,
		NumRetries: 2, StatusCodes: []int{503}, BackoffBase: model.DefaultBackoffBase, BackoffMax: 10 * model.DefaultBackoffBase}
	routes := []model.Route{{Name: "default", Match: model.RouteMatch{Path: "/"}, Cluster: "web", Retry: def}}
	cfg := httpConfig(routes, web)
	ln := mustClosedPort(t)
	cfg.Clusters["web"].Endpoints[0].Tunnel = ln
	cfg.Clusters["web"].Endpoints[0].Destination = netip.AddrPortFrom(ln.Addr(), ln.Port()+1)
	tp := startProxy(t, m, cfg)
	c := newClient(t, m, tp, vip)
	for i := range 4 {
		if r := c.get(t, "http://web/"); r.code != 200 || r.header.Get("X-Endpoint") != "up" {
			t.Fatalf("request %d: %d %q", i, r.code, r.body)
		}
	}
	if got := tp.metric(t, "ambit_waypoint_upstream_retries_total", nil); got != 4 {
		t.Fatalf("%v retries, want 4 (round robin counts retries: every request starts at the gone endpoint)", got)
	}
}

// mustClosedPort returns a loopback address nothing listens on.
func mustClosedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	ln.Close()
	return ap
}

// TestRetryBudget: ten requests fail together; the budget (min 1, 0%)
// lets one retry be in flight, so the other nine return their 503 and
// count as overflows.
func TestRetryBudget(t *testing.T) {
	m := newTestMesh(t)
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	const n = 10
	var arrived sync.WaitGroup
	arrived.Add(n)
	var first atomic.Int64
	b := startBackend(t, m, "127.0.0.1", "b", id, func(w http.ResponseWriter, r *http.Request) {
		if first.Add(1) <= n {
			// The first attempts answer together.
			arrived.Done()
			arrived.Wait()
		} else {
			// The retry stays in flight a while.
			time.Sleep(500 * time.Millisecond)
		}
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	web := cluster("web", b)
	web.RetryBudget = &model.RetryBudget{Percent: 0, MinConcurrency: 1}
	routes := []model.Route{{Name: "r", Match: model.RouteMatch{Path: "/"}, Cluster: "web", Retry: httpRouteRetry(1)}}
	tp := startProxy(t, m, httpConfig(routes, web))
	c := newClient(t, m, tp, vip)
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() { codes[i] = c.get(t, "http://web/").code })
	}
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusServiceUnavailable {
			t.Fatalf("request %d: %d, want the failed attempt's 503", i, code)
		}
	}
	retries := tp.metric(t, "ambit_waypoint_upstream_retries_total", map[string]string{"cluster": "web"})
	overflows := tp.metric(t, "ambit_waypoint_upstream_retry_overflow_total", map[string]string{"cluster": "web"})
	if retries != 1 || overflows != n-1 || b.hits.Load() != n+1 {
		t.Fatalf("%v retries, %v overflows, %d attempts; want 1, %d, %d", retries, overflows, b.hits.Load(), n-1, n+1)
	}
}
