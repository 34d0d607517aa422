package xdsclient

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/xdstest"
)

const webCluster = "outbound|80||web.demo.svc.cluster.local"

// oneRoute returns the example's route configuration with its only route
// replaced by r.
func oneRoute(r *routev3.Route) *routev3.RouteConfiguration {
	rc := xdstest.Route(xdstest.Example())
	rc.VirtualHosts[0].Routes = []*routev3.Route{r}
	return rc
}

// fwd is a route {match: {prefix: /}, route: {cluster: web}} with mutate
// applied to its action.
func fwd(mutate func(*routev3.RouteAction)) *routev3.Route {
	a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: webCluster}, Timeout: durationpb.New(0)}
	if mutate != nil {
		mutate(a)
	}
	return &routev3.Route{Name: "demo.r.0.0", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: a}}
}

// withMatch is fwd with its match replaced.
func withMatch(m *routev3.RouteMatch) *routev3.Route {
	r := fwd(nil)
	r.Match = m
	return r
}

func exactSM(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func regexSM(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

func header(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func query(name string, sm *matcherv3.StringMatcher) *routev3.QueryParameterMatcher {
	return &routev3.QueryParameterMatcher{Name: name, QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}}
}

func hv(key, value string, act corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: act}
}

func weighted(ws ...any) *routev3.RouteAction_WeightedClusters {
	wc := &routev3.WeightedCluster{}
	for i := 0; i < len(ws); i += 2 {
		c := &routev3.WeightedCluster_ClusterWeight{Name: ws[i].(string)}
		if w, ok := ws[i+1].(int); ok {
			c.Weight = wrapperspb.UInt32(uint32(w))
		}
		wc.Clusters = append(wc.Clusters, c)
	}
	return &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
}

// defaultRetry is the default retry_policy of XDS.md §7.1.
func defaultRetry() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{RetryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503}}
}

// plain replaces compiled regexes by their source, so that routes compare
// with reflect.DeepEqual.
func plain(r model.Route) model.Route {
	sm := func(m model.StringMatch) model.StringMatch {
		if m.Regex != nil {
			return model.StringMatch{Exact: "re:" + m.Regex.String()}
		}
		return m
	}
	if r.Match.Regex != nil {
		r.Match.Path = "re:" + r.Match.Regex.String()
		r.Match.Regex = nil
	}
	r.Match.Headers = slices.Clone(r.Match.Headers)
	for i := range r.Match.Headers {
		r.Match.Headers[i].Value = sm(r.Match.Headers[i].Value)
	}
	r.Match.QueryParams = slices.Clone(r.Match.QueryParams)
	for i := range r.Match.QueryParams {
		r.Match.QueryParams[i].Value = sm(r.Match.QueryParams[i].Value)
	}
	return r
}

// TestParseRouteForms checks every form of XDS.md §7 and §7.1 the
// waypoint accepts, and what it makes of it.
func TestParseRouteForms(t *testing.T) {
	str := func(s string) *string { return &s }
	base := func(mutate func(*model.Route)) model.Route {
		r := model.Route{Name: "demo.r.0.0", Match: model.RouteMatch{Path: "/"}, Cluster: webCluster}
		if mutate != nil {
			mutate(&r)
		}
		return r
	}
	redirect := func(rd *routev3.RedirectAction) *routev3.Route {
		r := fwd(nil)
		r.Action = &routev3.Route_Redirect{Redirect: rd}
		return r
	}
	tests := []struct {
		name string
		r    *routev3.Route
		want model.Route
	}{
		{name: "prefix /", r: fwd(nil), want: base(nil)},
		{name: "path exact", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a/b"}}),
			want: base(func(r *model.Route) { r.Match = model.RouteMatch{Kind: model.PathExact, Path: "/a/b"} })},
		{name: "path_separated_prefix", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/a"}}),
			want: base(func(r *model.Route) { r.Match = model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/a"} })},
		{name: "safe_regex path", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/v[12]/.*"}}}),
			want: base(func(r *model.Route) { r.Match = model.RouteMatch{Kind: model.PathRegex, Path: `re:\A(?:/v[12]/.*)\z`} })},
		{name: "safe_regex with the deprecated google_re2 engine", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			Regex: "/x", EngineType: &matcherv3.RegexMatcher_GoogleRe2{GoogleRe2: &matcherv3.RegexMatcher_GoogleRE2{MaxProgramSize: wrapperspb.UInt32(100)}}}}}),
			want: base(func(r *model.Route) { r.Match = model.RouteMatch{Kind: model.PathRegex, Path: `re:\A(?:/x)\z`} })},
		{name: "headers: exact, regex, method; query: exact, regex", r: withMatch(&routev3.RouteMatch{
			PathSpecifier:   &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"},
			Headers:         []*routev3.HeaderMatcher{header(":method", exactSM("GET")), header("User-Agent", regexSM(".*Mobile.*")), header("x-version", exactSM("v2"))},
			QueryParameters: []*routev3.QueryParameterMatcher{query("debug", exactSM("1")), query("v", regexSM("[0-9]+"))}}),
			want: base(func(r *model.Route) {
				r.Match = model.RouteMatch{Kind: model.PathSeparatedPrefix, Path: "/api",
					Headers: []model.HeaderMatcher{{Name: ":method", Value: model.StringMatch{Exact: "GET"}},
						{Name: "user-agent", Value: model.StringMatch{Exact: `re:\A(?:.*Mobile.*)\z`}}, {Name: "x-version", Value: model.StringMatch{Exact: "v2"}}},
					QueryParams: []model.QueryParamMatcher{{Name: "debug", Value: model.StringMatch{Exact: "1"}}, {Name: "v", Value: model.StringMatch{Exact: `re:\A(?:[0-9]+)\z`}}}}
			})},
		{name: "weighted clusters", r: fwd(func(a *routev3.RouteAction) { a.ClusterSpecifier = weighted("a", 90, "b", 10, "c", 0) }),
			want: base(func(r *model.Route) {
				r.Action, r.Cluster = model.ActionWeighted, ""
				r.WeightedClusters = []model.WeightedCluster{{Name: "a", Weight: 90}, {Name: "b", Weight: 10}, {Name: "c", Weight: 0}}
			})},
		{name: "direct_response 500", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500}}
			return r
		}(), want: base(func(r *model.Route) { r.Action, r.Cluster, r.DirectStatus = model.ActionDirect, "", 500 })},
		{name: "redirect: everything, default code 301", r: redirect(&routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}, HostRedirect: "other.example", PortRedirect: 8443,
			PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}),
			want: base(func(r *model.Route) {
				r.Action, r.Cluster = model.ActionRedirect, ""
				r.Redirect = &model.Redirect{Scheme: "https", Host: "other.example", Port: 8443, Path: "/new", Code: 301}
			})},
		{name: "redirect: prefix_rewrite, 302", r: redirect(&routev3.RedirectAction{ResponseCode: routev3.RedirectAction_FOUND,
			PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/v2"}}),
			want: base(func(r *model.Route) {
				r.Action, r.Cluster, r.Redirect = model.ActionRedirect, "", &model.Redirect{PrefixRewrite: "/v2", Code: 302}
			})},
		{name: "redirect 303", r: redirect(&routev3.RedirectAction{ResponseCode: routev3.RedirectAction_SEE_OTHER}),
			want: base(func(r *model.Route) {
				r.Action, r.Cluster, r.Redirect = model.ActionRedirect, "", &model.Redirect{Code: 303}
			})},
		{name: "redirect 307", r: redirect(&routev3.RedirectAction{ResponseCode: routev3.RedirectAction_TEMPORARY_REDIRECT}),
			want: base(func(r *model.Route) {
				r.Action, r.Cluster, r.Redirect = model.ActionRedirect, "", &model.Redirect{Code: 307}
			})},
		{name: "redirect 308", r: redirect(&routev3.RedirectAction{ResponseCode: routev3.RedirectAction_PERMANENT_REDIRECT}),
			want: base(func(r *model.Route) {
				r.Action, r.Cluster, r.Redirect = model.ActionRedirect, "", &model.Redirect{Code: 308}
			})},
		{name: "header modifiers", r: func() *routev3.Route {
			r := fwd(nil)
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{
				hv("X-Set", "s", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD), hv("x-add", "a 100%%", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}
			r.RequestHeadersToRemove = []string{"X-Debug"}
			r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv("x-served-by", "waypoint", corev3.HeaderValueOption_ADD_IF_ABSENT),
				hv("x-o", "o", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS)}
			r.ResponseHeadersToRemove = []string{"server"}
			return r
		}(), want: base(func(r *model.Route) {
			r.RequestHeaders = model.HeaderMutation{Remove: []string{"x-debug"}, Add: []model.HeaderValue{
				{Name: "x-set", Value: "s", Action: model.OverwriteIfExistsOrAdd}, {Name: "x-add", Value: "a 100%", Action: model.AppendIfExistsOrAdd}}}
			r.ResponseHeaders = model.HeaderMutation{Remove: []string{"server"}, Add: []model.HeaderValue{
				{Name: "x-served-by", Value: "waypoint", Action: model.AddIfAbsent}, {Name: "x-o", Value: "o", Action: model.OverwriteIfExists}}}
		})},
		{name: "prefix_rewrite and host_rewrite_literal", r: fwd(func(a *routev3.RouteAction) {
			a.PrefixRewrite = "/v2"
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "api.internal"}
		}), want: base(func(r *model.Route) { r.Rewrite = model.Rewrite{PrefixRewrite: "/v2", Host: "api.internal"} })},
		{name: "regex_rewrite of the full path", r: fwd(func(a *routev3.RouteAction) {
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: "/fixed"}
		}), want: base(func(r *model.Route) { r.Rewrite = model.Rewrite{FullPath: str("/fixed")} })},
		{name: "timeout unset: Envoy's 15s", r: fwd(func(a *routev3.RouteAction) { a.Timeout = nil }),
			want: base(func(r *model.Route) { r.Timeout = 15 * time.Second })},
		{name: "timeout", r: fwd(func(a *routev3.RouteAction) { a.Timeout = durationpb.New(5 * time.Second) }),
			want: base(func(r *model.Route) { r.Timeout = 5 * time.Second })},
		{name: "default retry policy", r: fwd(func(a *routev3.RouteAction) { a.RetryPolicy = defaultRetry() }),
			want: base(func(r *model.Route) {
				r.Retry = &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryGRPCUnavailable | model.RetryGRPCCancelled | model.RetryStatusCodes,
					NumRetries: 2, StatusCodes: []int{503}, BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond}
			})},
		{name: "HTTPRoute retry with codes, backoff and backendRequest", r: fwd(func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "connect-failure,refused-stream,reset,retriable-status-codes", NumRetries: wrapperspb.UInt32(4),
				RetriableStatusCodes: []uint32{500, 503}, PerTryTimeout: durationpb.New(250 * time.Millisecond),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond), MaxInterval: durationpb.New(100 * time.Millisecond)}}
		}), want: base(func(r *model.Route) {
			r.Retry = &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryReset | model.RetryStatusCodes,
				NumRetries: 4, StatusCodes: []int{500, 503}, PerTryTimeout: 250 * time.Millisecond, BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
		})},
		{name: "retry 0 attempts, 5xx, gateway-error, back-off base only, spaces", r: fwd(func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: " 5xx, gateway-error,", NumRetries: wrapperspb.UInt32(0),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(40 * time.Millisecond)}}
		}), want: base(func(r *model.Route) {
			r.Retry = &model.RetryPolicy{On: model.Retry5xx | model.RetryGatewayError, BackoffBase: 40 * time.Millisecond, BackoffMax: 400 * time.Millisecond}
		})},
		{name: "num_retries unset: Envoy's 1", r: fwd(func(a *routev3.RouteAction) { a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx"} }),
			want: base(func(r *model.Route) {
				r.Retry = &model.RetryPolicy{On: model.Retry5xx, NumRetries: 1, BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond}
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, err := ParseRoute(roundTrip(t, oneRoute(tt.r)))
			if err != nil {
				t.Fatal(err)
			}
			if got := plain(rt.VirtualHosts[0].Routes[0]); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("route\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseRouteRejects(t *testing.T) {
	withHeaders := func(hs ...*routev3.HeaderMatcher) *routev3.Route {
		return withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: hs})
	}
	tests := []struct {
		name string
		r    *routev3.Route
		want string
	}{
		{name: "unknown retry_on condition", r: fwd(func(a *routev3.RouteAction) { a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,retriable-4xx"} }),
			want: `retry_on condition "retriable-4xx" is not supported (the Go waypoint understands 5xx, cancelled, connect-failure, gateway-error, refused-stream, reset, retriable-status-codes, unavailable)`},
		{name: "path regex Go cannot compile", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/(?<!x)y"}}}),
			want: `match safe_regex: regex "/(?<!x)y": Go's regexp (RE2 syntax) cannot compile it`},
		{name: "header regex Go cannot compile", r: withHeaders(header("user-agent", regexSM("(Mobile"))),
			want: `match header "user-agent": regex "(Mobile": Go's regexp (RE2 syntax) cannot compile it`},
		{name: "query regex Go cannot compile", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			QueryParameters: []*routev3.QueryParameterMatcher{query("v", regexSM("a{2,1}"))}}), want: `match query parameter "v": regex "a{2,1}"`},
		{name: "regex_rewrite with another pattern", r: fwd(func(a *routev3.RouteAction) {
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/api/(.*)$"}, Substitution: `/\1`}
		}), want: `regex_rewrite pattern "^/api/(.*)$": the Go waypoint only rewrites the full path (pattern "^/.*$"`},
		{name: "regex_rewrite substitution with escapes", r: fwd(func(a *routev3.RouteAction) {
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: `/x\0`}
		}), want: `regex_rewrite substitution "/x\\0": \ escapes are not supported`},
		{name: "prefix_rewrite and regex_rewrite", r: fwd(func(a *routev3.RouteAction) {
			a.PrefixRewrite = "/a"
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: "/b"}
		}), want: "sets both prefix_rewrite and regex_rewrite"},
		{name: "weighted total weight 0", r: fwd(func(a *routev3.RouteAction) { a.ClusterSpecifier = weighted("a", 0, "b", 0) }),
			want: "weighted_clusters: the total weight is 0"},
		{name: "weighted cluster without weight", r: fwd(func(a *routev3.RouteAction) { a.ClusterSpecifier = weighted("a", 1, "b", nil) }),
			want: `weighted_clusters cluster 1 "b" has no weight`},
		{name: "weighted cluster header", r: fwd(func(a *routev3.RouteAction) {
			w := weighted("a", 1)
			w.WeightedClusters.Clusters[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x", "y", 0)}
			a.ClusterSpecifier = w
		}), want: `weighted_clusters cluster 0 "a" sets request_headers_to_add`},
		{name: "weighted total_weight", r: fwd(func(a *routev3.RouteAction) {
			w := weighted("a", 1)
			w.WeightedClusters.TotalWeight = wrapperspb.UInt32(1)
			a.ClusterSpecifier = w
		}), want: "weighted_clusters sets total_weight"},
		{name: "header present_match", r: withHeaders(&routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}),
			want: `match header "x": only string_match`},
		{name: "header invert_match", r: withHeaders(func() *routev3.HeaderMatcher { h := header("x", exactSM("1")); h.InvertMatch = true; return h }()),
			want: `match header "x" sets invert_match`},
		{name: "header without matcher", r: withHeaders(&routev3.HeaderMatcher{Name: "x"}), want: `match header "x": only string_match`},
		{name: "header prefix string_match", r: withHeaders(header("x", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "a"}})),
			want: `match header "x": string_match must be exact or safe_regex`},
		{name: "string_match ignore_case", r: withHeaders(func() *routev3.HeaderMatcher { s := exactSM("a"); s.IgnoreCase = true; return header("x", s) }()),
			want: "string_match ignore_case is not supported in routes"},
		{name: "query present_match", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			QueryParameters: []*routev3.QueryParameterMatcher{{Name: "q", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}}}}),
			want: `match query parameter "q" sets present_match`},
		{name: "runtime fraction", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 1}}}), want: "match sets runtime_fraction"},
		{name: "cluster_header", r: fwd(func(a *routev3.RouteAction) {
			a.ClusterSpecifier = &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}
		}), want: "route action sets cluster_header"},
		{name: "mirror", r: fwd(func(a *routev3.RouteAction) {
			a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "m"}}
		}), want: "route action sets request_mirror_policies"},
		{name: "auto_host_rewrite", r: fwd(func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}), want: "route action sets auto_host_rewrite"},
		{name: "retry host predicate", r: fwd(func(a *routev3.RouteAction) {
			a.RetryPolicy = defaultRetry()
			a.RetryPolicy.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}
		}), want: "retry_policy sets retry_host_predicate"},
		{name: "per-try idle timeout", r: fwd(func(a *routev3.RouteAction) {
			a.RetryPolicy = defaultRetry()
			a.RetryPolicy.PerTryIdleTimeout = durationpb.New(time.Second)
		}), want: "retry_policy sets per_try_idle_timeout"},
		{name: "back-off max below base", r: fwd(func(a *routev3.RouteAction) {
			a.RetryPolicy = defaultRetry()
			a.RetryPolicy.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}
		}), want: "max_interval 1ms must be at least base_interval 1s"},
		{name: "https_redirect", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}}
			return r
		}(), want: "redirect sets https_redirect"},
		{name: "redirect strip_query", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{StripQuery: true}}
			return r
		}(), want: "redirect sets strip_query"},
		{name: "direct response body", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500,
				Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "x"}}}}
			return r
		}(), want: "direct_response sets body"},
		{name: "deprecated append", r: func() *routev3.Route {
			r := fwd(nil)
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", Value: "y"}, Append: wrapperspb.Bool(true)}}
			return r
		}(), want: `request_headers_to_add "x" sets append`},
		{name: "raw_value", r: func() *routev3.Route {
			r := fwd(nil)
			r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x", RawValue: []byte("y")}}}
			return r
		}(), want: `response_headers_to_add "x" sets raw_value`},
		{name: "substitution command in a header value", r: func() *routev3.Route {
			r := fwd(nil)
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-client", "%DOWNSTREAM_REMOTE_ADDRESS%", 0)}
			return r
		}(), want: "uses an Envoy substitution command"},
		{name: "set a pseudo-header", r: func() *routev3.Route {
			r := fwd(nil)
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv(":path", "/x", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)}
			return r
		}(), want: "pseudo-headers and host may not be modified"},
		{name: "remove host", r: func() *routev3.Route {
			r := fwd(nil)
			r.RequestHeadersToRemove = []string{"Host"}
			return r
		}(), want: "pseudo-headers and host may not be removed"},
		{name: "direct response status 0", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{}}
			return r
		}(), want: "DirectResponseAction.Status: value must be inside range [200, 600)"},
		{name: "direct response status 103", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 103}}
			return r
		}(), want: "DirectResponseAction.Status: value must be inside range [200, 600)"},
		{name: "path_separated_prefix with a trailing slash", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/"}}),
			want: `RouteMatch.PathSeparatedPrefix: value does not match regex pattern "^[^?#]+[^?#/]$"`},
		{name: "path_separated_prefix with a query", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/a?b"}}),
			want: `RouteMatch.PathSeparatedPrefix: value does not match regex pattern`},
		{name: "header matcher without a name", r: withHeaders(header("", exactSM("1"))), want: "HeaderMatcher.Name: value length must be at least 1"},
		{name: "query matcher without a name", r: withMatch(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			QueryParameters: []*routev3.QueryParameterMatcher{query("", exactSM("1"))}}), want: "QueryParameterMatcher.Name: value length must be at least 1"},
		{name: "header to add with an invalid name", r: func() *routev3.Route {
			r := fwd(nil)
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x y", "1", 0)}
			return r
		}(), want: `request_headers_to_add "x y": not a valid header name`},
		{name: "header to add with a control character in its value", r: func() *routev3.Route {
			r := fwd(nil)
			r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv("x-a", "1\x01", 0)}
			return r
		}(), want: `response_headers_to_add "x-a": value "1\x01" has control characters`},
		{name: "header to remove with an invalid name", r: func() *routev3.Route {
			r := fwd(nil)
			r.ResponseHeadersToRemove = []string{"x(y)"}
			return r
		}(), want: `response_headers_to_remove "x(y)": not a valid header name`},
		{name: "negative timeout", r: fwd(func(a *routev3.RouteAction) { a.Timeout = durationpb.New(-time.Second) }),
			want: "route action timeout -1s: negative"},
		{name: "negative per_try_timeout", r: fwd(func(a *routev3.RouteAction) {
			a.RetryPolicy = defaultRetry()
			a.RetryPolicy.PerTryTimeout = durationpb.New(-time.Second)
		}), want: "retry_policy per_try_timeout -1s: negative"},
		{name: "back-off without base", r: fwd(func(a *routev3.RouteAction) {
			a.RetryPolicy = defaultRetry()
			a.RetryPolicy.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{MaxInterval: durationpb.New(time.Second)}
		}), want: "RetryPolicy_RetryBackOff.BaseInterval: value is required"},
		{name: "host_rewrite_literal with a space", r: fwd(func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "a b"}
		}), want: `host_rewrite_literal "a b": not a valid Host`},
		{name: "prefix_rewrite with a DEL", r: fwd(func(a *routev3.RouteAction) { a.PrefixRewrite = "/a\x7f" }),
			want: `prefix_rewrite "/a\x7f" has control characters`},
		{name: "redirect host with a space", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{HostRedirect: "a b"}}
			return r
		}(), want: `host_redirect "a b": not a valid host`},
		{name: "redirect port beyond 65535", r: func() *routev3.Route {
			r := fwd(nil)
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PortRedirect: 70000}}
			return r
		}(), want: "port_redirect 70000 is not a port"},
		{name: "per-filter config", r: func() *routev3.Route {
			r := fwd(nil)
			r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": xdstest.Any(&routev3.Route{})}
			return r
		}(), want: `typed_per_filter_config for "envoy.filters.http.rbac" is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRoute(roundTrip(t, oneRoute(tt.r)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseRoute error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseClusterRetryBudget(t *testing.T) {
	cluster := func(cb *clusterv3.CircuitBreakers) *clusterv3.Cluster {
		c := xdstest.Cluster(xdstest.Example())
		c.CircuitBreakers = cb
		return c
	}
	budget := func(pct *float64, min *uint32) *clusterv3.CircuitBreakers {
		rb := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}
		if pct != nil {
			rb.BudgetPercent = &typev3.Percent{Value: *pct}
		}
		if min != nil {
			rb.MinRetryConcurrency = wrapperspb.UInt32(*min)
		}
		return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{RetryBudget: rb}}}
	}
	f := func(v float64) *float64 { return &v }
	u := func(v uint32) *uint32 { return &v }
	tests := []struct {
		name string
		c    *clusterv3.Cluster
		want *model.RetryBudget
		err  string
	}{
		{name: "none: Envoy's default threshold", c: cluster(nil)},
		{name: "XDS.md §5.2", c: cluster(budget(f(20), u(3))), want: &model.RetryBudget{Percent: 20, MinConcurrency: 3}},
		{name: "budget defaults", c: cluster(budget(nil, nil)), want: &model.RetryBudget{Percent: 20, MinConcurrency: 3}},
		{name: "no minimum", c: cluster(budget(f(0), u(0))), want: &model.RetryBudget{}},
		{name: "empty DEFAULT threshold", c: cluster(&clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}}})},
		{name: "HIGH priority", c: cluster(&clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{Priority: corev3.RoutingPriority_HIGH}}}),
			err: "priority HIGH: the Go waypoint only has priority DEFAULT"},
		{name: "two DEFAULT thresholds", c: cluster(&clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}, {}}}),
			err: "two thresholds of priority DEFAULT"},
		{name: "max_retries", c: cluster(&clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: wrapperspb.UInt32(5)}}}),
			err: "circuit_breakers threshold sets max_retries"},
		{name: "max_connections beside the budget", c: cluster(&clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(5)}}})},
		{name: "track_remaining", c: cluster(&clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{TrackRemaining: true}}}),
			err: "circuit_breakers threshold sets track_remaining"},
		{name: "per-host thresholds", c: cluster(&clusterv3.CircuitBreakers{PerHostThresholds: []*clusterv3.CircuitBreakers_Thresholds{{}}}),
			err: "circuit_breakers sets per_host_thresholds"},
		{name: "budget percent above 100", c: cluster(budget(f(120), u(3))), err: "Percent.Value: value must be inside range [0, 100]"},
		{name: "negative budget percent", c: cluster(budget(f(-1), u(3))), err: "Percent.Value: value must be inside range [0, 100]"},
		{name: "budget interval", c: func() *clusterv3.Cluster {
			cb := budget(f(20), u(3))
			cb.Thresholds[0].RetryBudget.BudgetInterval = durationpb.New(time.Second)
			return cluster(cb)
		}(), err: "retry_budget sets budget_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseClusterCase(t, tt.c, tt.err)
			if got == nil {
				return
			}
			if !reflect.DeepEqual(got.RetryBudget, tt.want) {
				t.Fatalf("retry budget %+v, want %+v", got.RetryBudget, tt.want)
			}
		})
	}
}

// TestBuildMissingRouteClusters: clusters named by routes, single or
// weighted, are references like the tcp chains' clusters.
func TestBuildMissingRouteClusters(t *testing.T) {
	web := xdstest.Example()
	r := parseAll(t, []xdstest.Service{web})
	rc := oneRoute(fwd(func(a *routev3.RouteAction) {
		a.ClusterSpecifier = weighted(webCluster, 90, "outbound|80||canary.demo.svc.cluster.local", 10)
	}))
	rc.VirtualHosts[0].Routes = append(rc.VirtualHosts[0].Routes, fwd(func(a *routev3.RouteAction) {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "outbound|80||old.demo.svc.cluster.local"}
	}))
	rt, err := ParseRoute(roundTrip(t, rc))
	if err != nil {
		t.Fatal(err)
	}
	r.Routes[web.RouteName()] = rt
	cfg := Build(r)
	want := []string{"CDS outbound|80||canary.demo.svc.cluster.local", "CDS outbound|80||old.demo.svc.cluster.local"}
	if !slices.Equal(cfg.Missing, want) {
		t.Fatalf("Missing = %q, want %q", cfg.Missing, want)
	}
}
