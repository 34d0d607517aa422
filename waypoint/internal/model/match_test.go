package model

import (
	"net/http"
	"regexp"
	"testing"
)

func mustRE(t *testing.T, re string) *regexp.Regexp {
	t.Helper()
	r, err := CompileFullMatch(re)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRouteMatch(t *testing.T) {
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	exact := func(v string) StringMatch { return StringMatch{Exact: v} }
	regex := func(re string) StringMatch { return StringMatch{Regex: mustRE(t, re)} }
	tests := []struct {
		name  string
		m     RouteMatch
		req   Request
		match bool
	}{
		{name: "prefix", m: RouteMatch{Path: "/api"}, req: Request{Path: "/apix"}, match: true},
		{name: "empty prefix matches all", m: RouteMatch{}, req: Request{Path: "/x"}, match: true},
		{name: "prefix is case sensitive", m: RouteMatch{Path: "/api"}, req: Request{Path: "/API"}},
		{name: "prefix ignoring case", m: RouteMatch{Path: "/api", IgnoreCase: true}, req: Request{Path: "/API/v1"}, match: true},
		{name: "exact", m: RouteMatch{Kind: PathExact, Path: "/a/b"}, req: Request{Path: "/a/b"}, match: true},
		{name: "exact is not a prefix", m: RouteMatch{Kind: PathExact, Path: "/a/b"}, req: Request{Path: "/a/b/"}},
		{name: "exact is matched without the query", m: RouteMatch{Kind: PathExact, Path: "/a"}, req: Request{Path: "/a", Query: "x=1"}, match: true},
		{name: "empty exact path matches nothing", m: RouteMatch{Kind: PathExact}, req: Request{Path: "/"}},
		{name: "separated prefix itself", m: RouteMatch{Kind: PathSeparatedPrefix, Path: "/a"}, req: Request{Path: "/a"}, match: true},
		{name: "separated prefix and a segment", m: RouteMatch{Kind: PathSeparatedPrefix, Path: "/a"}, req: Request{Path: "/a/b"}, match: true},
		{name: "separated prefix and a slash", m: RouteMatch{Kind: PathSeparatedPrefix, Path: "/a"}, req: Request{Path: "/a/"}, match: true},
		{name: "separated prefix is not a string prefix", m: RouteMatch{Kind: PathSeparatedPrefix, Path: "/a"}, req: Request{Path: "/ab"}},
		{name: "separated prefix ignoring case", m: RouteMatch{Kind: PathSeparatedPrefix, Path: "/a", IgnoreCase: true}, req: Request{Path: "/A/x"}, match: true},
		{name: "regex matches the whole path", m: RouteMatch{Kind: PathRegex, Regex: mustRE(t, "/v[12]/.*")}, req: Request{Path: "/v1/x"}, match: true},
		{name: "regex is anchored at the start", m: RouteMatch{Kind: PathRegex, Regex: mustRE(t, "/v[12]/.*")}, req: Request{Path: "/x/v1/x"}},
		{name: "regex is anchored at the end", m: RouteMatch{Kind: PathRegex, Regex: mustRE(t, "/v[12]")}, req: Request{Path: "/v1/x"}},
		{name: "regex alternation must cover the whole path", m: RouteMatch{Kind: PathRegex, Regex: mustRE(t, "/a|/ab")}, req: Request{Path: "/ab"}, match: true},
		{name: "regex ignores case_sensitive", m: RouteMatch{Kind: PathRegex, Regex: mustRE(t, "/a"), IgnoreCase: true}, req: Request{Path: "/A"}},
		{name: "header regex", m: RouteMatch{Headers: []HeaderMatcher{{Name: "user-agent", Value: regex(".*Mobile.*")}}},
			req: Request{Path: "/", Header: h("User-Agent", "Mozilla/5.0 (iPhone) Mobile/15E148")}, match: true},
		{name: "header regex is anchored", m: RouteMatch{Headers: []HeaderMatcher{{Name: "user-agent", Value: regex("Mobile")}}},
			req: Request{Path: "/", Header: h("User-Agent", "Mozilla Mobile")}},
		{name: "header exact", m: RouteMatch{Headers: []HeaderMatcher{{Name: "x-version", Value: exact("v2")}}},
			req: Request{Path: "/", Header: h("X-Version", "v2")}, match: true},
		{name: "header exact is case sensitive in value", m: RouteMatch{Headers: []HeaderMatcher{{Name: "x-version", Value: exact("v2")}}},
			req: Request{Path: "/", Header: h("X-Version", "V2")}},
		{name: "absent header", m: RouteMatch{Headers: []HeaderMatcher{{Name: "x-version", Value: exact("")}}}, req: Request{Path: "/", Header: h()}},
		{name: "repeated header matches joined with a comma", m: RouteMatch{Headers: []HeaderMatcher{{Name: "x-env", Value: exact("a,b")}}},
			req: Request{Path: "/", Header: h("X-Env", "a", "X-Env", "b")}, match: true},
		{name: "repeated header does not match one value", m: RouteMatch{Headers: []HeaderMatcher{{Name: "x-env", Value: exact("a")}}},
			req: Request{Path: "/", Header: h("X-Env", "a", "X-Env", "b")}},
		{name: "every header must match", m: RouteMatch{Headers: []HeaderMatcher{{Name: "a", Value: exact("1")}, {Name: "b", Value: exact("2")}}},
			req: Request{Path: "/", Header: h("A", "1", "B", "3")}},
		{name: "method", m: RouteMatch{Headers: []HeaderMatcher{{Name: ":method", Value: exact("POST")}}}, req: Request{Method: "POST", Path: "/"}, match: true},
		{name: "other method", m: RouteMatch{Headers: []HeaderMatcher{{Name: ":method", Value: exact("POST")}}}, req: Request{Method: "GET", Path: "/"}},
		{name: ":authority", m: RouteMatch{Headers: []HeaderMatcher{{Name: ":authority", Value: regex("web(:80)?")}}}, req: Request{Host: "web:80", Path: "/"}, match: true},
		{name: ":path has the query", m: RouteMatch{Headers: []HeaderMatcher{{Name: ":path", Value: exact("/a?b=1")}}}, req: Request{Path: "/a", Query: "b=1"}, match: true},
		{name: "query exact", m: RouteMatch{QueryParams: []QueryParamMatcher{{Name: "debug", Value: exact("1")}}}, req: Request{Path: "/", Query: "a=2&debug=1"}, match: true},
		{name: "query first value counts", m: RouteMatch{QueryParams: []QueryParamMatcher{{Name: "v", Value: exact("2")}}}, req: Request{Path: "/", Query: "v=1&v=2"}},
		{name: "query regex", m: RouteMatch{QueryParams: []QueryParamMatcher{{Name: "v", Value: regex("[0-9]+")}}}, req: Request{Path: "/", Query: "v=42"}, match: true},
		{name: "query value is not decoded", m: RouteMatch{QueryParams: []QueryParamMatcher{{Name: "q", Value: exact("a b")}}}, req: Request{Path: "/", Query: "q=a%20b"}},
		{name: "query without value", m: RouteMatch{QueryParams: []QueryParamMatcher{{Name: "flag", Value: exact("")}}}, req: Request{Path: "/", Query: "flag"}, match: true},
		{name: "query absent", m: RouteMatch{QueryParams: []QueryParamMatcher{{Name: "flag", Value: exact("")}}}, req: Request{Path: "/", Query: "flags=1"}},
		{name: "path and headers and query", m: RouteMatch{Kind: PathSeparatedPrefix, Path: "/api",
			Headers:     []HeaderMatcher{{Name: ":method", Value: exact("GET")}},
			QueryParams: []QueryParamMatcher{{Name: "x", Value: exact("1")}}}, req: Request{Method: "GET", Path: "/ap", Query: "x=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.Matches(tt.req); got != tt.match {
				t.Fatalf("Matches(%+v) = %v, want %v", tt.req, got, tt.match)
			}
		})
	}
}

func TestCompileFullMatch(t *testing.T) {
	for _, re := range []string{"(", "a{2,1}", `\C`, "(?<!x)y"} {
		if _, err := CompileFullMatch(re); err == nil {
			t.Errorf("%q compiled", re)
		}
	}
	// Flags inside the expression do not escape the anchors.
	if r := mustRE(t, "(?m)a$"); r.MatchString("a\nb") {
		t.Error("multi-line flag leaked out of the group")
	}
}
