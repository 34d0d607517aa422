package model

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
)

func TestPickWeighted(t *testing.T) {
	ab := []WeightedCluster{{Name: "a", Weight: 90}, {Name: "b", Weight: 10}}
	tests := []struct {
		name string
		cs   []WeightedCluster
		n    uint64
		want string
	}{
		{"first interval start", ab, 0, "a"},
		{"first interval end", ab, 89, "a"},
		{"second interval start", ab, 90, "b"},
		{"second interval end", ab, 99, "b"},
		{"modulo the total", ab, 190, "b"},
		{"large random", ab, 1<<64 - 1, "a"}, // (2^64-1) % 100 = 15
		{"zero weight is never picked", []WeightedCluster{{Name: "a", Weight: 0}, {Name: "b", Weight: 1}}, 0, "b"},
		{"one cluster", []WeightedCluster{{Name: "a", Weight: 7}}, 12345, "a"},
		{"total 0", []WeightedCluster{{Name: "a", Weight: 0}}, 3, ""},
		{"none", nil, 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PickWeighted(tt.cs, tt.n); got != tt.want {
				t.Fatalf("PickWeighted(%v, %d) = %q, want %q", tt.cs, tt.n, got, tt.want)
			}
		})
	}
	// With uniform random numbers, the shares follow the weights.
	r := rand.New(rand.NewPCG(1, 2))
	count := map[string]int{}
	for range 10000 {
		count[PickWeighted(ab, r.Uint64())]++
	}
	if count["a"] < 8800 || count["a"] > 9200 {
		t.Fatalf("90/10 split over 10000 picks: %v", count)
	}
}

func TestRewritePath(t *testing.T) {
	full := func(s string) *string { return &s }
	tests := []struct {
		name, path, want string
		r                Route
	}{
		{name: "no rewrite", path: "/a/b", want: "/a/b", r: Route{Match: RouteMatch{Path: "/a"}}},
		{name: "prefix", path: "/a/b", want: "/x/b", r: Route{Match: RouteMatch{Path: "/a"}, Rewrite: Rewrite{PrefixRewrite: "/x"}}},
		{name: "separated prefix", path: "/api/v1", want: "/v2/v1",
			r: Route{Match: RouteMatch{Kind: PathSeparatedPrefix, Path: "/api"}, Rewrite: Rewrite{PrefixRewrite: "/v2"}}},
		{name: "separated prefix to / keeps the slash (Envoy)", path: "/api/v1", want: "//v1",
			r: Route{Match: RouteMatch{Kind: PathSeparatedPrefix, Path: "/api"}, Rewrite: Rewrite{PrefixRewrite: "/"}}},
		{name: "prefix ignoring case", path: "/API/v1", want: "/x/v1",
			r: Route{Match: RouteMatch{Path: "/api", IgnoreCase: true}, Rewrite: Rewrite{PrefixRewrite: "/x"}}},
		{name: "prefix rewrite of an exact match replaces the path", path: "/a", want: "/b",
			r: Route{Match: RouteMatch{Kind: PathExact, Path: "/a"}, Rewrite: Rewrite{PrefixRewrite: "/b"}}},
		{name: "full path", path: "/any/thing", want: "/fixed", r: Route{Match: RouteMatch{Path: "/"}, Rewrite: Rewrite{FullPath: full("/fixed")}}},
		{name: "full path needs a path", path: "*", want: "*", r: Route{Rewrite: Rewrite{FullPath: full("/fixed")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.RewritePath(tt.path); got != tt.want {
				t.Fatalf("RewritePath(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

func TestRedirectLocation(t *testing.T) {
	prefix := RouteMatch{Kind: PathSeparatedPrefix, Path: "/old"}
	req := func(host, path, query string, kv ...string) Request {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return Request{Host: host, Path: path, Query: query, Header: h}
	}
	tests := []struct {
		name string
		r    Redirect
		req  Request
		want string
	}{
		{name: "path, query kept", r: Redirect{Path: "/new"}, req: req("web.demo", "/old/x", "a=1"), want: "http://web.demo/new?a=1"},
		{name: "path with its own query", r: Redirect{Path: "/new?b=2"}, req: req("web.demo", "/old", "a=1"), want: "http://web.demo/new?b=2"},
		{name: "host keeps nothing of the request host", r: Redirect{Host: "other.example"}, req: req("web.demo:8080", "/x", ""), want: "http://other.example/x"},
		{name: "host and port", r: Redirect{Host: "other.example", Port: 8443}, req: req("web.demo:8080", "/x", ""), want: "http://other.example:8443/x"},
		{name: "port replaces the request's", r: Redirect{Port: 8443}, req: req("web.demo:8080", "/x", "q"), want: "http://web.demo:8443/x?q"},
		{name: "IPv6 host port replaced", r: Redirect{Port: 81}, req: req("[fd00:10:96::a]:80", "/x", ""), want: "http://[fd00:10:96::a]:81/x"},
		{name: "IPv6 host without port kept", r: Redirect{Port: 81}, req: req("[fd00:10:96::a]", "/x", ""), want: "http://[fd00:10:96::a]:81/x"},
		{name: "IPv4 host port kept", r: Redirect{Path: "/y"}, req: req("10.96.0.10:80", "/x", ""), want: "http://10.96.0.10:80/y"},
		{name: "scheme https drops :80 of an http request", r: Redirect{Scheme: "https"}, req: req("web.demo:80", "/x", "", "X-Forwarded-Proto", "http"),
			want: "https://web.demo/x"},
		{name: "scheme https keeps other ports", r: Redirect{Scheme: "https"}, req: req("web.demo:8080", "/x", "", "X-Forwarded-Proto", "http"),
			want: "https://web.demo:8080/x"},
		{name: "scheme https without X-Forwarded-Proto keeps :80 (Envoy)", r: Redirect{Scheme: "https"}, req: req("web.demo:80", "/x", ""),
			want: "https://web.demo:80/x"},
		{name: "prefix rewrite", r: Redirect{PrefixRewrite: "/new"}, req: req("web.demo", "/old/a", "q=1"), want: "http://web.demo/new/a?q=1"},
		{name: "nothing: same URL", r: Redirect{}, req: req("web.demo", "/a", ""), want: "http://web.demo/a"},
		{name: "path without leading slash", r: Redirect{Path: "new"}, req: req("web.demo", "/a", ""), want: "http://web.demo/new"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Location(tt.req, prefix); got != tt.want {
				t.Fatalf("Location = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHeaderMutation(t *testing.T) {
	base := func() http.Header {
		return http.Header{"X-Keep": {"k"}, "X-Drop": {"d"}, "X-Set": {"old"}, "X-Add": {"1"}}
	}
	tests := []struct {
		name string
		m    HeaderMutation
		want http.Header
	}{
		{name: "nothing", want: base()},
		{name: "remove", m: HeaderMutation{Remove: []string{"x-drop", "x-absent"}},
			want: http.Header{"X-Keep": {"k"}, "X-Set": {"old"}, "X-Add": {"1"}}},
		{name: "set overwrites", m: HeaderMutation{Add: []HeaderValue{{Name: "x-set", Value: "new", Action: OverwriteIfExistsOrAdd}}},
			want: http.Header{"X-Keep": {"k"}, "X-Drop": {"d"}, "X-Set": {"new"}, "X-Add": {"1"}}},
		{name: "set adds", m: HeaderMutation{Add: []HeaderValue{{Name: "x-new", Value: "n", Action: OverwriteIfExistsOrAdd}}},
			want: http.Header{"X-Keep": {"k"}, "X-Drop": {"d"}, "X-Set": {"old"}, "X-Add": {"1"}, "X-New": {"n"}}},
		{name: "add appends", m: HeaderMutation{Add: []HeaderValue{{Name: "x-add", Value: "2"}}},
			want: http.Header{"X-Keep": {"k"}, "X-Drop": {"d"}, "X-Set": {"old"}, "X-Add": {"1", "2"}}},
		{name: "remove before add", m: HeaderMutation{Remove: []string{"x-add"}, Add: []HeaderValue{{Name: "x-add", Value: "2"}}},
			want: http.Header{"X-Keep": {"k"}, "X-Drop": {"d"}, "X-Set": {"old"}, "X-Add": {"2"}}},
		{name: "overwrites before additions whatever the order", m: HeaderMutation{Add: []HeaderValue{
			{Name: "x-set", Value: "a"}, {Name: "x-set", Value: "b", Action: OverwriteIfExistsOrAdd}}},
			want: http.Header{"X-Keep": {"k"}, "X-Drop": {"d"}, "X-Set": {"b", "a"}, "X-Add": {"1"}}},
		{name: "add if absent", m: HeaderMutation{Add: []HeaderValue{
			{Name: "x-keep", Value: "no", Action: AddIfAbsent}, {Name: "x-new", Value: "yes", Action: AddIfAbsent}}},
			want: http.Header{"X-Keep": {"k"}, "X-Drop": {"d"}, "X-Set": {"old"}, "X-Add": {"1"}, "X-New": {"yes"}}},
		{name: "overwrite if exists", m: HeaderMutation{Add: []HeaderValue{
			{Name: "x-keep", Value: "yes", Action: OverwriteIfExists}, {Name: "x-new", Value: "no", Action: OverwriteIfExists}}},
			want: http.Header{"X-Keep": {"yes"}, "X-Drop": {"d"}, "X-Set": {"old"}, "X-Add": {"1"}}},
		{name: "presence is decided after removals", m: HeaderMutation{Remove: []string{"x-keep"}, Add: []HeaderValue{
			{Name: "x-keep", Value: "again", Action: AddIfAbsent}}},
			want: http.Header{"X-Keep": {"again"}, "X-Drop": {"d"}, "X-Set": {"old"}, "X-Add": {"1"}}},
		{name: "empty values are not added", m: HeaderMutation{Add: []HeaderValue{{Name: "x-set", Value: "", Action: OverwriteIfExistsOrAdd}}},
			want: base()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := base()
			tt.m.Apply(h)
			if len(h) != len(tt.want) {
				t.Fatalf("headers %v, want %v", h, tt.want)
			}
			for k, v := range tt.want {
				if !slices.Equal(h[k], v) {
					t.Fatalf("headers %v, want %v", h, tt.want)
				}
			}
		})
	}
}

func TestClusterNames(t *testing.T) {
	rt := &RouteTable{VirtualHosts: []VirtualHost{{Routes: []Route{
		{Cluster: "b"},
		{Action: ActionWeighted, WeightedClusters: []WeightedCluster{{Name: "c", Weight: 1}, {Name: "a", Weight: 1}}},
		{Action: ActionRedirect, Redirect: &Redirect{Code: 302}},
		{Action: ActionDirect, DirectStatus: 500},
		{Cluster: "a"},
	}}}}
	if got := rt.ClusterNames(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("ClusterNames = %v", got)
	}
}
