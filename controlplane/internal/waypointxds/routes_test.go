package waypointxds

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func ptr[T any](v T) *T { return &v }

// httprouteInput is a bound service web.demo whose port 80 carries
// HTTPRoute routes using every feature of XDS.md §7.1, splitting /api
// 90/10 between two unbound Backends services (one IPv4, one IPv6).
func httprouteInput() Input {
	id := "spiffe://cluster.local/ns/demo/sa/web"
	v1, v2 := "web-v1.demo.svc.cluster.local", "web-v2.demo.svc.cluster.local"
	port := Port{Name: "http", Port: 80, TargetPort: 8080}
	routed := port
	routed.Routes = []Route{
		{
			Name:     "demo.web.1.0",
			Match:    RouteMatch{PathType: PathExact, Path: "/login", Method: "POST", QueryParams: []ValueMatch{{Name: "debug", Value: "1"}}},
			Backends: []Backend{{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 1}},
			RequestHeaders: HeaderModifier{
				Set:    []Header{{Name: "X-Env", Value: "prod"}},
				Add:    []Header{{Name: "x-trace", Value: "on"}},
				Remove: []string{"X-Debug"},
			},
			ResponseHeaders: HeaderModifier{Set: []Header{{Name: "cache-control", Value: "no-store"}}, Remove: []string{"server"}},
			Timeout:         2 * time.Second,
			Retry:           &Retry{Attempts: 0},
		},
		{
			Name:     "demo.web.2.0",
			Match:    RouteMatch{PathType: PathRegex, Path: `/static/.*\.css`},
			Backends: []Backend{{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 1}},
			Rewrite:  &Rewrite{Hostname: "assets.demo", Path: &PathModifier{FullPath: ptr("/style.css")}},
		},
		{
			Name: "demo.web.0.0",
			Match: RouteMatch{PathType: PathPrefix, Path: "/api/",
				Headers: []ValueMatch{{Name: "User-Agent", Value: ".*Mobile.*", Regex: true}, {Name: "x-canary", Value: "yes"}}},
			Backends: []Backend{{Hostname: v1, Port: 80, Weight: 90}, {Hostname: v2, Port: 80, Weight: 10}},
			Timeout:  10 * time.Second,
			Retry:    &Retry{Attempts: 3, Codes: []int{502, 503}, Backoff: 50 * time.Millisecond, PerTryTimeout: time.Second},
		},
		{
			Name:     "demo.web.3.0",
			Match:    RouteMatch{PathType: PathPrefix, Path: "/old"},
			Redirect: &Redirect{Scheme: "https", Hostname: "new.demo", Port: 8443, Path: &PathModifier{PrefixMatch: ptr("/new")}, StatusCode: 301},
		},
		{
			Name:     "demo.web.4.0",
			Match:    RouteMatch{PathType: PathPrefix, Path: "/v2"},
			Backends: []Backend{{Hostname: v2, Port: 80, Weight: 1}},
			Rewrite:  &Rewrite{Path: &PathModifier{PrefixMatch: ptr("/api/v2/")}}, // → prefix_rewrite /api/v2
			Retry:    &Retry{Attempts: 1, Backoff: 100 * time.Millisecond},
		},
		{
			Name:     "demo.web.5.0",
			Match:    RouteMatch{PathType: PathPrefix, Path: "/moved"},
			Redirect: &Redirect{Path: &PathModifier{FullPath: ptr("/here")}},
		},
		{Name: "demo.web.6.0", DirectStatus: 500},
	}
	return Input{
		Waypoint: Waypoint{Namespace: "demo", Name: "waypoint", Addresses: []netip.Addr{addr("10.244.1.9")}},
		Services: []Service{{
			Namespace: "demo", Name: "web",
			VIPs:  []netip.Addr{addr("10.96.0.10"), addr("fd00:10:96::a")},
			Ports: []Port{routed},
			Endpoints: []Endpoint{{Name: "web-1", Namespace: "demo", Addresses: []netip.Addr{addr("10.244.1.5")}, Node: "node-1",
				Identity: id, Healthy: true}},
		}},
		Backends: []Service{
			{
				Namespace: "demo", Name: "web-v1", VIPs: []netip.Addr{addr("10.96.0.11")}, Ports: []Port{port},
				Endpoints: []Endpoint{{Name: "web-v1-1", Namespace: "demo", Addresses: []netip.Addr{addr("10.244.1.6")}, Node: "node-1",
					Identity: id, Healthy: true}},
			},
			{
				Namespace: "demo", Name: "web-v2", Ports: []Port{port}, // no VIP: a backend needs none
				Endpoints: []Endpoint{{Name: "web-v2-1", Namespace: "demo", Addresses: []netip.Addr{addr("fd00:10:244:2::7")}, Node: "node-2",
					Identity: id, Healthy: true}},
			},
		},
	}
}

// routeJSON builds the route of r on a bound http service web.demo with
// backend ports web.demo:80 and other.demo:8080.
func routeJSON(t *testing.T, r Route) (*routev3.Route, error) {
	t.Helper()
	known := func(b Backend) bool {
		return slices.Contains([]Backend{{Hostname: "web.demo.svc.cluster.local", Port: 80}, {Hostname: "other.demo.svc.cluster.local", Port: 8080}},
			Backend{Hostname: b.Hostname, Port: b.Port})
	}
	er, err := route(r, known)
	if err != nil {
		return nil, err
	}
	return er, er.ValidateAll()
}

func TestRouteMapping(t *testing.T) {
	web := []Backend{{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 1}}
	// Most cases share the default action; they list what differs.
	const defaultRetry = `{"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", "num_retries": 2, "retriable_status_codes": [503]}`
	const action = `"route": {"cluster": "outbound|80||web.demo.svc.cluster.local", "timeout": "0s", "retry_policy": ` + defaultRetry + `}`
	for _, tc := range []struct {
		name string
		in   Route
		want string // protojson of the Envoy route
	}{
		{"zero match is prefix /", Route{Name: "r", Backends: web},
			`{"name": "r", "match": {"prefix": "/"}, ` + action + `}`},
		{"prefix /", Route{Name: "r", Match: RouteMatch{PathType: PathPrefix, Path: "/"}, Backends: web},
			`{"name": "r", "match": {"prefix": "/"}, ` + action + `}`},
		{"prefix /a", Route{Name: "r", Match: RouteMatch{PathType: PathPrefix, Path: "/a"}, Backends: web},
			`{"name": "r", "match": {"path_separated_prefix": "/a"}, ` + action + `}`},
		{"prefix /a/ drops the slash", Route{Name: "r", Match: RouteMatch{Path: "/a/"}, Backends: web},
			`{"name": "r", "match": {"path_separated_prefix": "/a"}, ` + action + `}`},
		{"exact", Route{Name: "r", Match: RouteMatch{PathType: PathExact, Path: "/a/b"}, Backends: web},
			`{"name": "r", "match": {"path": "/a/b"}, ` + action + `}`},
		{"regex", Route{Name: "r", Match: RouteMatch{PathType: PathRegex, Path: "/v[0-9]+/.*"}, Backends: web},
			`{"name": "r", "match": {"safe_regex": {"regex": "/v[0-9]+/.*"}}, ` + action + `}`},
		{"headers exact and regex, lower-cased", Route{Name: "r", Match: RouteMatch{Headers: []ValueMatch{
			{Name: "X-Canary", Value: "yes"}, {Name: "User-Agent", Value: ".*Mobile.*", Regex: true}}}, Backends: web},
			`{"name": "r", "match": {"prefix": "/", "headers": [
				{"name": "x-canary", "string_match": {"exact": "yes"}},
				{"name": "user-agent", "string_match": {"safe_regex": {"regex": ".*Mobile.*"}}}]}, ` + action + `}`},
		{"method", Route{Name: "r", Match: RouteMatch{Method: "GET"}, Backends: web},
			`{"name": "r", "match": {"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]}, ` + action + `}`},
		{"query parameters", Route{Name: "r", Match: RouteMatch{QueryParams: []ValueMatch{
			{Name: "Debug", Value: "1"}, {Name: "v", Value: "[0-9]+", Regex: true}}}, Backends: web},
			`{"name": "r", "match": {"prefix": "/", "query_parameters": [
				{"name": "Debug", "string_match": {"exact": "1"}},
				{"name": "v", "string_match": {"safe_regex": {"regex": "[0-9]+"}}}]}, ` + action + `}`},
		{"weighted clusters, weight 0 left out", Route{Name: "r", Backends: []Backend{
			{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 90},
			{Hostname: "other.demo.svc.cluster.local", Port: 8080, Weight: 10},
			{Hostname: "other.demo.svc.cluster.local", Port: 8080, Weight: 0}}},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
				{"name": "outbound|80||web.demo.svc.cluster.local", "weight": 90},
				{"name": "outbound|8080||other.demo.svc.cluster.local", "weight": 10}]},
				"timeout": "0s", "retry_policy": ` + defaultRetry + `}}`},
		{"one backend left by weights is a cluster", Route{Name: "r", Backends: []Backend{
			{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 0},
			{Hostname: "other.demo.svc.cluster.local", Port: 8080, Weight: 3}}},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "outbound|8080||other.demo.svc.cluster.local",
				"timeout": "0s", "retry_policy": ` + defaultRetry + `}}`},
		{"all weights 0 is a direct response 500", Route{Name: "r", Backends: []Backend{
			{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 0},
			{Hostname: "other.demo.svc.cluster.local", Port: 8080, Weight: 0}}},
			`{"name": "r", "match": {"prefix": "/"}, "direct_response": {"status": 500}}`},
		{"direct response", Route{Name: "r", DirectStatus: 500},
			`{"name": "r", "match": {"prefix": "/"}, "direct_response": {"status": 500}}`},
		{"redirect default 302", Route{Name: "r", Redirect: &Redirect{Hostname: "example.com"}},
			`{"name": "r", "match": {"prefix": "/"}, "redirect": {"host_redirect": "example.com", "response_code": "FOUND"}}`},
		{"redirect 301 is the enum's default", Route{Name: "r", Redirect: &Redirect{Scheme: "https", Port: 8443, StatusCode: 301}},
			`{"name": "r", "match": {"prefix": "/"}, "redirect": {"scheme_redirect": "https", "port_redirect": 8443}}`},
		{"redirect 303 full path", Route{Name: "r", Redirect: &Redirect{Path: &PathModifier{FullPath: ptr("/x")}, StatusCode: 303}},
			`{"name": "r", "match": {"prefix": "/"}, "redirect": {"path_redirect": "/x", "response_code": "SEE_OTHER"}}`},
		{"redirect 307", Route{Name: "r", Redirect: &Redirect{StatusCode: 307}},
			`{"name": "r", "match": {"prefix": "/"}, "redirect": {"response_code": "TEMPORARY_REDIRECT"}}`},
		{"redirect 308 prefix", Route{Name: "r", Match: RouteMatch{Path: "/old"}, Redirect: &Redirect{Path: &PathModifier{PrefixMatch: ptr("/new")}, StatusCode: 308}},
			`{"name": "r", "match": {"path_separated_prefix": "/old"}, "redirect": {"prefix_rewrite": "/new", "response_code": "PERMANENT_REDIRECT"}}`},
		{"header modifiers", Route{Name: "r", Backends: web,
			RequestHeaders:  HeaderModifier{Set: []Header{{Name: "X-A", Value: "1"}}, Add: []Header{{Name: "x-b", Value: "2"}}, Remove: []string{"X-C"}},
			ResponseHeaders: HeaderModifier{Add: []Header{{Name: "x-d", Value: "3"}}, Remove: []string{"server"}}},
			`{"name": "r", "match": {"prefix": "/"}, ` + action + `,
				"request_headers_to_add": [
					{"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
					{"header": {"key": "x-b", "value": "2"}}],
				"request_headers_to_remove": ["x-c"],
				"response_headers_to_add": [{"header": {"key": "x-d", "value": "3"}}],
				"response_headers_to_remove": ["server"]}`},
		{"rewrite host and prefix", Route{Name: "r", Match: RouteMatch{Path: "/v2"}, Backends: web,
			Rewrite: &Rewrite{Hostname: "internal", Path: &PathModifier{PrefixMatch: ptr("/api/v2")}}},
			`{"name": "r", "match": {"path_separated_prefix": "/v2"}, "route": {"cluster": "outbound|80||web.demo.svc.cluster.local",
				"host_rewrite_literal": "internal", "prefix_rewrite": "/api/v2", "timeout": "0s", "retry_policy": ` + defaultRetry + `}}`},
		{"rewrite prefix of / keeps the separator", Route{Name: "r", Backends: web,
			Rewrite: &Rewrite{Path: &PathModifier{PrefixMatch: ptr("/app")}}},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||web.demo.svc.cluster.local",
				"prefix_rewrite": "/app/", "timeout": "0s", "retry_policy": ` + defaultRetry + `}}`},
		{"rewrite full path", Route{Name: "r", Backends: web, Rewrite: &Rewrite{Path: &PathModifier{FullPath: ptr("/index.html")}}},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||web.demo.svc.cluster.local",
				"regex_rewrite": {"pattern": {"regex": "^/.*$"}, "substitution": "/index.html"}, "timeout": "0s", "retry_policy": ` + defaultRetry + `}}`},
		{"timeout", Route{Name: "r", Backends: web, Timeout: 1500 * time.Millisecond},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||web.demo.svc.cluster.local",
				"timeout": "1.500s", "retry_policy": ` + defaultRetry + `}}`},
		{"retry with codes, backoff and per-try timeout", Route{Name: "r", Backends: web,
			Retry: &Retry{Attempts: 4, Codes: []int{502, 503}, Backoff: 50 * time.Millisecond, PerTryTimeout: 2 * time.Second}},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||web.demo.svc.cluster.local", "timeout": "0s",
				"retry_policy": {"retry_on": "connect-failure,refused-stream,reset,retriable-status-codes", "num_retries": 4,
					"per_try_timeout": "2s", "retriable_status_codes": [502, 503],
					"retry_back_off": {"base_interval": "0.050s", "max_interval": "0.500s"}}}}`},
		{"retry without codes is 5xx", Route{Name: "r", Backends: web, Retry: &Retry{Attempts: 2}},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||web.demo.svc.cluster.local", "timeout": "0s",
				"retry_policy": {"retry_on": "connect-failure,refused-stream,reset,5xx", "num_retries": 2}}}`},
		{"retry attempts 0 turns retries off", Route{Name: "r", Backends: web, Retry: &Retry{}},
			`{"name": "r", "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||web.demo.svc.cluster.local", "timeout": "0s",
				"retry_policy": {"retry_on": "connect-failure,refused-stream,reset,5xx", "num_retries": 0}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := routeJSON(t, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			want := &routev3.Route{}
			if err := protojson.Unmarshal([]byte(tc.want), want); err != nil {
				t.Fatalf("bad want: %v", err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("got  %s\nwant %s", protojson.Format(got), protojson.Format(want))
			}
		})
	}
}

// TestPrefixRewrite checks that Envoy's literal replacement of the
// matched characters by prefix_rewrite gives Gateway API's
// ReplacePrefixMatch result (HTTPPathModifier's table), where it can.
func TestPrefixRewrite(t *testing.T) {
	// envoy applies prefix_rewrite as Envoy does: the matched prefix
	// ("/" for prefix "/", else the path_separated_prefix) is replaced.
	envoy := func(match, rewrite, path string) string {
		n := len(strings.TrimRight(match, "/"))
		if n == 0 {
			n = 1
		}
		return rewrite + path[n:]
	}
	for _, tc := range []struct {
		match, repl string
		want        string   // prefix_rewrite
		paths       []string // request path, Gateway API result, ...
	}{
		{"/foo", "/xyz", "/xyz", []string{"/foo/bar", "/xyz/bar", "/foo", "/xyz", "/foo/", "/xyz/"}},
		{"/foo", "/xyz/", "/xyz", []string{"/foo/bar", "/xyz/bar", "/foo", "/xyz"}},
		{"/foo/", "/xyz", "/xyz", []string{"/foo/bar", "/xyz/bar"}},
		{"/foo/", "/xyz/", "/xyz", []string{"/foo/bar", "/xyz/bar"}},
		{"/", "/xyz", "/xyz/", []string{"/foo", "/xyz/foo", "/a/b", "/xyz/a/b"}},
		{"/", "/xyz/", "/xyz/", []string{"/foo", "/xyz/foo"}},
		{"/", "/", "/", []string{"/foo", "/foo"}},
		{"/", "", "/", []string{"/foo", "/foo"}},
		// Stripping the prefix is right for the prefix itself only
		// (/foo/bar gives //bar): not expressible with prefix_rewrite.
		{"/foo", "/", "/", []string{"/foo", "/"}},
		{"/foo", "", "/", []string{"/foo", "/"}},
	} {
		t.Run(tc.match+" with "+tc.repl, func(t *testing.T) {
			got := prefixRewrite(tc.match, tc.repl)
			if got != tc.want {
				t.Fatalf("prefixRewrite(%q, %q) = %q, want %q", tc.match, tc.repl, got, tc.want)
			}
			for i := 0; i < len(tc.paths); i += 2 {
				if p := envoy(tc.match, got, tc.paths[i]); p != tc.paths[i+1] {
					t.Errorf("%s rewrites to %s, Gateway API says %s", tc.paths[i], p, tc.paths[i+1])
				}
			}
		})
	}
}

func TestDefaultRoute(t *testing.T) {
	r, err := Build(exampleInput())
	if err != nil {
		t.Fatal(err)
	}
	rc := r[resource.RouteType]["web.demo.svc.cluster.local:80"].(*routev3.RouteConfiguration)
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	if len(routes) != 1 || routes[0].GetName() != "default" {
		t.Fatalf("routes = %v, want the default route only", routes)
	}
	rp := routes[0].GetRoute().GetRetryPolicy()
	if rp.GetRetryOn() != DefaultRetryOn || rp.GetNumRetries().GetValue() != 2 || !slices.Equal(rp.GetRetriableStatusCodes(), []uint32{503}) {
		t.Errorf("default retry policy = %v", rp)
	}
}

func TestRetryBudget(t *testing.T) {
	r, err := Build(mixedInput())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, res := range r[resource.ClusterType] {
		c := res.(*clusterv3.Cluster)
		th := c.GetCircuitBreakers().GetThresholds()
		if !strings.HasPrefix(name, "outbound|") {
			if th != nil {
				t.Errorf("fixed cluster %s has circuit breakers", name)
			}
			continue
		}
		n++
		if len(th) != 1 || th[0].GetRetryBudget().GetBudgetPercent().GetValue() != 20 || th[0].GetRetryBudget().GetMinRetryConcurrency().GetValue() != 3 {
			t.Errorf("cluster %s: circuit breakers %v, want the retry budget 20%%, min 3", name, c.GetCircuitBreakers())
		}
	}
	if n == 0 {
		t.Fatal("no outbound cluster")
	}
}

func TestBackends(t *testing.T) {
	id := "spiffe://cluster.local/ns/demo/sa/web"
	ep := func(ip string) []Endpoint {
		return []Endpoint{{Addresses: []netip.Addr{addr(ip)}, Identity: id, Healthy: true}}
	}
	port := []Port{{Name: "http", Port: 80, TargetPort: 8080}}
	route := func(hosts ...string) []Port {
		p := port[0]
		for i, h := range hosts {
			p.Routes = append(p.Routes, Route{Name: "demo.r.0." + string(rune('0'+i)), Backends: []Backend{{Hostname: h, Port: 80, Weight: 1}}})
		}
		return []Port{p}
	}
	for _, tc := range []struct {
		name string
		in   Input
		// backends are the hostnames that must get clusters and
		// endpoints but no chain or route configuration.
		backends []string
		clusters int // outbound clusters in all
	}{
		{"IPv4 backend", Input{
			Services: []Service{{Namespace: "demo", Name: "web", VIPs: []netip.Addr{addr("10.96.0.1")}, Ports: route("b.demo.svc.cluster.local")}},
			Backends: []Service{{Namespace: "demo", Name: "b", Ports: port, Endpoints: ep("10.244.0.5")}},
		}, []string{"b.demo.svc.cluster.local"}, 2},
		{"IPv6 backend", Input{
			Services: []Service{{Namespace: "demo", Name: "web", VIPs: []netip.Addr{addr("fd00::1")}, Ports: route("b.demo.svc.cluster.local")}},
			Backends: []Service{{Namespace: "demo", Name: "b", VIPs: []netip.Addr{addr("fd00::2")}, Ports: port, Endpoints: ep("fd00:244::5")}},
		}, []string{"b.demo.svc.cluster.local"}, 2},
		{"backend that is bound is the bound one", Input{
			Services: []Service{
				{Namespace: "demo", Name: "web", VIPs: []netip.Addr{addr("10.96.0.1")}, Ports: route("b.demo.svc.cluster.local")},
				{Namespace: "demo", Name: "b", VIPs: []netip.Addr{addr("10.96.0.2")}, Ports: port, Endpoints: ep("10.244.0.5")},
			},
			Backends: []Service{{Namespace: "demo", Name: "b", Ports: port}},
		}, nil, 2},
		{"unreferenced backend still gets its clusters", Input{
			Services: []Service{{Namespace: "demo", Name: "web", VIPs: []netip.Addr{addr("10.96.0.1")}, Ports: port}},
			Backends: []Service{{Namespace: "demo", Name: "b", Ports: append(slices.Clone(port), Port{Name: "tcp", Port: 5432})}},
		}, []string{"b.demo.svc.cluster.local"}, 3},
		{"headless bound service named by a route", Input{
			Services: []Service{
				{Namespace: "demo", Name: "web", VIPs: []netip.Addr{addr("10.96.0.1")}, Ports: route("h.demo.svc.cluster.local")},
				{Namespace: "demo", Name: "h", Ports: port, Endpoints: ep("fd00:244::6")},
			},
		}, []string{"h.demo.svc.cluster.local"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Waypoint = Waypoint{Namespace: "demo", Name: "wp"}
			r, err := Build(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			n := 0
			for name := range r[resource.ClusterType] {
				if strings.HasPrefix(name, "outbound|") {
					n++
				}
			}
			if n != tc.clusters {
				t.Errorf("%d outbound clusters, want %d: %v", n, tc.clusters, r.Names(resource.ClusterType))
			}
			chains := r[resource.ListenerType][ListenerMainInternal].(*listenerv3.Listener).GetFilterChains()
			for _, h := range tc.backends {
				name := ClusterName(h, 80)
				if r[resource.ClusterType][name] == nil {
					t.Errorf("no cluster %s", name)
				}
				if cla, ok := r[resource.EndpointType][name].(*endpointv3.ClusterLoadAssignment); !ok || cla.GetClusterName() != name {
					t.Errorf("no endpoints %s", name)
				}
				if r[resource.RouteType][RouteName(h, 80)] != nil {
					t.Errorf("backend %s has a route configuration", h)
				}
				for _, c := range chains {
					if strings.HasSuffix(c.GetName(), "|"+h) {
						t.Errorf("backend %s has filter chain %s", h, c.GetName())
					}
				}
			}
		})
	}
}

func TestBuildRefusesBadRoutes(t *testing.T) {
	id := "spiffe://cluster.local/ns/demo/sa/web"
	wp := Waypoint{Namespace: "demo", Name: "wp"}
	vip := []netip.Addr{addr("10.96.0.1")}
	web := []Backend{{Hostname: "web.demo.svc.cluster.local", Port: 80, Weight: 1}}
	in := func(rs ...Route) Input {
		return Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "web", VIPs: vip,
			Ports: []Port{{Name: "http", Port: 80, TargetPort: 8080, Routes: rs}}}}}
	}
	for _, tc := range []struct {
		name string
		in   Input
		want string
	}{
		{"routes on a tcp port", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "db", VIPs: vip,
			Ports: []Port{{Name: "postgres", Port: 5432, Routes: []Route{{Name: "r", Backends: web}}}}}}},
			"service demo/db port 5432: has HTTP routes but is a tcp port"},
		{"unknown backend", in(Route{Name: "demo.r.0.0", Backends: []Backend{{Hostname: "nope.demo.svc.cluster.local", Port: 80, Weight: 1}}}),
			"service demo/web port 80 route demo.r.0.0: backend nope.demo.svc.cluster.local:80 is neither"},
		{"unknown backend port", in(Route{Name: "r", Backends: []Backend{{Hostname: "web.demo.svc.cluster.local", Port: 81, Weight: 1}}}),
			"backend web.demo.svc.cluster.local:81 is neither"},
		{"no action", in(Route{Name: "r"}), "route r: has 0 actions"},
		{"two actions", in(Route{Name: "r", Backends: web, DirectStatus: 500}), "route r: has 2 actions"},
		{"bad path regex", in(Route{Name: "r", Match: RouteMatch{PathType: PathRegex, Path: "/(a"}, Backends: web}), "path regular expression \"/(a\""},
		{"bad header regex", in(Route{Name: "r", Match: RouteMatch{Headers: []ValueMatch{{Name: "user-agent", Value: "*x", Regex: true}}}, Backends: web}),
			"header user-agent regular expression"},
		{"bad query regex", in(Route{Name: "r", Match: RouteMatch{QueryParams: []ValueMatch{{Name: "q", Value: "a{2,1}", Regex: true}}}, Backends: web}),
			"query parameter q regular expression"},
		{"prefix rewrite without prefix match", in(Route{Name: "r", Match: RouteMatch{PathType: PathExact, Path: "/a"}, Backends: web,
			Rewrite: &Rewrite{Path: &PathModifier{PrefixMatch: ptr("/b")}}}), "rewrite path PrefixMatch needs a PathPrefix match"},
		{"prefix redirect without prefix match", in(Route{Name: "r", Match: RouteMatch{PathType: PathRegex, Path: "/a.*"},
			Redirect: &Redirect{Path: &PathModifier{PrefixMatch: ptr("/b")}}}), "redirect path PrefixMatch needs a PathPrefix match"},
		{"redirect status", in(Route{Name: "r", Redirect: &Redirect{StatusCode: 304}}), "redirect StatusCode 304 is not one of"},
		{"duplicate route name", in(Route{Name: "r", Backends: web}, Route{Name: "r", DirectStatus: 500}), "route name \"r\" is used twice"},
		{"route without name", in(Route{Backends: web}), "route 0 has no name"},
		{"direct status out of range", in(Route{Name: "r", DirectStatus: 99}), "DirectStatus 99"},
		{"negative retries", in(Route{Name: "r", Backends: web, Retry: &Retry{Attempts: -1}}), "Retry.Attempts -1"},
		{"unknown backend of weight 0", in(Route{Name: "r", Backends: []Backend{{Hostname: "nope.demo.svc.cluster.local", Port: 80}}}),
			"backend nope.demo.svc.cluster.local:80 is neither"},
		{"invalid header value (Envoy's rules)", in(Route{Name: "r", Backends: web,
			RequestHeaders: HeaderModifier{Set: []Header{{Name: "x-a", Value: "a\nb"}}}}), "route r: invalid Route.RequestHeadersToAdd"},
		{"backend with a bad endpoint", Input{Waypoint: wp,
			Backends: []Service{{Namespace: "demo", Name: "b", Ports: []Port{{Name: "http", Port: 80}},
				Endpoints: []Endpoint{{Addresses: []netip.Addr{addr("fd00::5")}, Identity: "spiffe://other.org/ns/demo/sa/b"}}}}},
			"backend: waypointxds: service demo/b endpoint fd00::5: identity spiffe://other.org/ns/demo/sa/b is not in the mesh trust domain"},
		{"backend without identity", Input{Waypoint: wp,
			Backends: []Service{{Namespace: "demo", Name: "b", Ports: []Port{{Name: "http", Port: 80}},
				Endpoints: []Endpoint{{Addresses: []netip.Addr{addr("10.0.0.5")}}}}}}, "identity is needed"},
		{"two backends with one hostname", Input{Waypoint: wp, Backends: []Service{
			{Namespace: "demo", Name: "a", Hostname: "h", Ports: []Port{{Port: 80}}},
			{Namespace: "demo", Name: "b", Hostname: "h", Ports: []Port{{Port: 80}}, Endpoints: []Endpoint{{Addresses: []netip.Addr{addr("10.0.0.5")}, Identity: id}}}}},
			"backends demo/a and demo/b both have hostname h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build() err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
