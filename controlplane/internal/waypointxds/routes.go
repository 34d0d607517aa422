package waypointxds

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The retry policies of XDS.md §7.1.
const (
	// DefaultRetryOn is the retry_on of a route without a retry stanza
	// (Istio's default).
	DefaultRetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	// RetryOnCodes is the retry_on of an HTTPRoute retry with codes.
	RetryOnCodes = "connect-failure,refused-stream,reset,retriable-status-codes"
	// RetryOn5xx is the retry_on of an HTTPRoute retry without codes.
	RetryOn5xx = "connect-failure,refused-stream,reset,5xx"

	defaultRetries = 2
	// fullPathRegex is the pattern of a ReplaceFullPath rewrite: the whole path.
	fullPathRegex = "^/.*$"
)

// defaultRetryCodes are the retriable status codes of the default policy.
var defaultRetryCodes = []uint32{503}

// defaultRoute is the route of a service port without HTTPRoutes
// (XDS.md §7): every request to the port's cluster, with the default
// retry policy and no overall deadline.
func defaultRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			// No overall deadline by default (long polls, streams).
			Timeout:     durationpb.New(0),
			RetryPolicy: retryPolicy(nil),
		}},
	}
}

// routes converts the HTTPRoute routes of port p of service s to Envoy
// routes, in the given order, checking each (XDS.md §7.1). known tells
// whether a backend "<hostname>:<port>" has a cluster.
func routes(s service, p Port, known func(Backend) bool) ([]*routev3.Route, error) {
	where := fmt.Sprintf("waypointxds: service %s/%s port %d", s.Namespace, s.Name, p.Port)
	if len(p.Routes) > 0 && !p.protocol().IsHTTP() {
		return nil, fmt.Errorf("%s: has HTTP routes but is a %s port (routes need an http, http2 or grpc port; check its name or appProtocol)", where, p.protocol())
	}
	var errs []error
	seen := map[string]bool{}
	out := make([]*routev3.Route, 0, len(p.Routes))
	for i, r := range p.Routes {
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s: route %d has no name", where, i))
			continue
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("%s: route name %q is used twice (names must be unique per port)", where, r.Name))
			continue
		}
		seen[r.Name] = true
		er, err := route(r, known)
		if err == nil {
			// The field rules Envoy applies (header names and values,
			// status range, ...), said for the route that breaks them.
			err = er.ValidateAll()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s route %s: %w", where, r.Name, err))
			continue
		}
		out = append(out, er)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// route converts one Route.
func route(r Route, known func(Backend) bool) (*routev3.Route, error) {
	actions := 0
	for _, set := range []bool{len(r.Backends) > 0, r.Redirect != nil, r.DirectStatus != 0} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		return nil, fmt.Errorf("has %d actions: set exactly one of Backends, Redirect or DirectStatus", actions)
	}
	m, err := routeMatch(r.Match)
	if err != nil {
		return nil, err
	}
	out := &routev3.Route{
		Name:                    r.Name,
		Match:                   m,
		RequestHeadersToAdd:     headersToAdd(r.RequestHeaders),
		RequestHeadersToRemove:  lower(r.RequestHeaders.Remove),
		ResponseHeadersToAdd:    headersToAdd(r.ResponseHeaders),
		ResponseHeadersToRemove: lower(r.ResponseHeaders.Remove),
	}
	switch {
	case r.DirectStatus != 0:
		if r.DirectStatus < 200 || r.DirectStatus > 599 {
			return nil, fmt.Errorf("DirectStatus %d is not an HTTP status (200-599)", r.DirectStatus)
		}
		out.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: uint32(r.DirectStatus)}}
	case r.Redirect != nil:
		red, err := redirect(*r.Redirect, r.Match)
		if err != nil {
			return nil, err
		}
		out.Action = &routev3.Route_Redirect{Redirect: red}
	default:
		a, err := routeAction(r, known)
		if err != nil {
			return nil, err
		}
		if a == nil {
			// Every backend has weight 0: no usable backend (XDS.md §7.1).
			out.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 500}}
			break
		}
		out.Action = &routev3.Route_Route{Route: a}
	}
	if err := setFault(out, r.Fault); err != nil {
		return nil, err
	}
	return out, nil
}

func routeMatch(m RouteMatch) (*routev3.RouteMatch, error) {
	out := &routev3.RouteMatch{}
	switch m.PathType {
	case "", PathPrefix:
		// Gateway API: "/a/" matches like "/a" (the trailing slash is
		// dropped); path_separated_prefix matches "/a" and "/a/…", not "/ab".
		if p := strings.TrimRight(m.Path, "/"); p == "" {
			out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
		} else {
			if !strings.HasPrefix(p, "/") {
				return nil, fmt.Errorf("path prefix %q must start with /", m.Path)
			}
			out.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: p}
		}
	case PathExact:
		if !strings.HasPrefix(m.Path, "/") {
			return nil, fmt.Errorf("exact path %q must start with /", m.Path)
		}
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	case PathRegex:
		if err := checkRegex("path", m.Path); err != nil {
			return nil, err
		}
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Path}}
	default:
		return nil, fmt.Errorf("path type %q is not %s, %s or %s", m.PathType, PathPrefix, PathExact, PathRegex)
	}
	for _, h := range m.Headers {
		sm, err := stringMatch("header "+h.Name, h)
		if err != nil {
			return nil, err
		}
		out.Headers = append(out.Headers, &routev3.HeaderMatcher{
			Name:                 strings.ToLower(h.Name),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm},
		})
	}
	if m.Method != "" {
		out.Headers = append(out.Headers, &routev3.HeaderMatcher{
			Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Method},
			}},
		})
	}
	for _, q := range m.QueryParams {
		sm, err := stringMatch("query parameter "+q.Name, q)
		if err != nil {
			return nil, err
		}
		out.QueryParameters = append(out.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         q.Name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm},
		})
	}
	return out, nil
}

func stringMatch(what string, v ValueMatch) (*matcherv3.StringMatcher, error) {
	if v.Name == "" {
		return nil, fmt.Errorf("a %s match has no name", strings.Fields(what)[0])
	}
	if !v.Regex {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v.Value}}, nil
	}
	if err := checkRegex(what, v.Value); err != nil {
		return nil, err
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v.Value}}}, nil
}

// checkRegex refuses what RE2 (Go's regexp is RE2) cannot compile.
func checkRegex(what, re string) error {
	if re == "" {
		return fmt.Errorf("%s regular expression is empty", what)
	}
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%s regular expression %q: %w", what, re, err)
	}
	return nil
}

// redirectCodes maps a RequestRedirect statusCode to Envoy's enum.
var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func redirect(r Redirect, m RouteMatch) (*routev3.RedirectAction, error) {
	status := r.StatusCode
	if status == 0 {
		status = 302
	}
	code, ok := redirectCodes[status]
	if !ok {
		return nil, fmt.Errorf("redirect StatusCode %d is not one of 301, 302, 303, 307, 308", r.StatusCode)
	}
	out := &routev3.RedirectAction{HostRedirect: r.Hostname, PortRedirect: uint32(r.Port), ResponseCode: code}
	if r.Scheme != "" {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.Scheme}
	}
	full, prefix, err := pathModifier("redirect", r.Path, m)
	if err != nil {
		return nil, err
	}
	switch {
	case full != nil:
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: *full}
	case prefix != nil:
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: *prefix}
	}
	return out, nil
}

// pathModifier checks pm: at most one of its paths, and PrefixMatch only
// with a PathPrefix match m. prefix is the prefix_rewrite for PrefixMatch
// (see prefixRewrite).
func pathModifier(what string, pm *PathModifier, m RouteMatch) (full, prefix *string, err error) {
	if pm == nil {
		return nil, nil, nil
	}
	if pm.FullPath != nil && pm.PrefixMatch != nil {
		return nil, nil, fmt.Errorf("%s path sets both FullPath and PrefixMatch", what)
	}
	if pm.PrefixMatch == nil {
		return pm.FullPath, nil, nil
	}
	if m.PathType != "" && m.PathType != PathPrefix {
		return nil, nil, fmt.Errorf("%s path PrefixMatch needs a PathPrefix match", what)
	}
	p := prefixRewrite(m.Path, *pm.PrefixMatch)
	return nil, &p, nil
}

// prefixRewrite returns the prefix_rewrite that makes Envoy's literal
// replacement of the matched characters give Gateway API's
// ReplacePrefixMatch, which replaces whole path elements:
//   - match prefix "/" (Envoy prefix "/", which consumes the slash): the
//     replacement ends with "/" (/foo with "/xyz" → /xyz/foo);
//   - match /p (path_separated_prefix /p, the rest is empty or starts
//     with "/"): the replacement's trailing slashes are dropped (/p/foo
//     with "/xyz/" → /xyz/foo).
//
// Stripping the prefix (replacement "/" or "") on a match other than "/"
// gives "/" here, so /p → / but /p/foo → //foo: a single prefix_rewrite
// cannot express it (Envoy issue 26055), and XDS.md §7.1 has no other
// field for it yet.
func prefixRewrite(matchPath, repl string) string {
	if strings.TrimRight(matchPath, "/") == "" {
		if !strings.HasSuffix(repl, "/") {
			repl += "/"
		}
		return repl
	}
	if r := strings.TrimRight(repl, "/"); r != "" {
		return r
	}
	return "/"
}

// routeAction returns the action of a route to r.Backends, nil when every
// backend has weight 0.
func routeAction(r Route, known func(Backend) bool) (*routev3.RouteAction, error) {
	if r.Timeout < 0 {
		return nil, fmt.Errorf("Timeout %s is negative", r.Timeout)
	}
	var weighted []*routev3.WeightedCluster_ClusterWeight
	for _, b := range r.Backends {
		if !known(b) {
			return nil, fmt.Errorf("backend %s:%d is neither a port of a bound service nor of a service in Backends", b.Hostname, b.Port)
		}
		if b.Weight == 0 {
			continue // no share (XDS.md §7.1)
		}
		weighted = append(weighted, &routev3.WeightedCluster_ClusterWeight{
			Name:   ClusterName(b.Hostname, b.Port),
			Weight: wrapperspb.UInt32(b.Weight),
		})
	}
	rp, err := retryFor(r.Retry)
	if err != nil {
		return nil, err
	}
	out := &routev3.RouteAction{Timeout: durationpb.New(r.Timeout), RetryPolicy: rp}
	switch len(weighted) {
	case 0:
		return nil, nil
	case 1:
		out.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: weighted[0].Name}
	default:
		out.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: weighted}}
	}
	if rw := r.Rewrite; rw != nil {
		if rw.Hostname != "" {
			out.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Hostname}
		}
		full, prefix, err := pathModifier("rewrite", rw.Path, r.Match)
		if err != nil {
			return nil, err
		}
		switch {
		case full != nil:
			out.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: fullPathRegex},
				Substitution: *full,
			}
		case prefix != nil:
			out.PrefixRewrite = *prefix
		}
	}
	return out, nil
}

// retryFor checks r and returns its policy.
func retryFor(r *Retry) (*routev3.RetryPolicy, error) {
	if r == nil {
		return retryPolicy(nil), nil
	}
	switch {
	case r.Attempts < 0:
		return nil, fmt.Errorf("Retry.Attempts %d is negative", r.Attempts)
	case r.Backoff < 0:
		return nil, fmt.Errorf("Retry.Backoff %s is negative", r.Backoff)
	case r.PerTryTimeout < 0:
		return nil, fmt.Errorf("Retry.PerTryTimeout %s is negative", r.PerTryTimeout)
	}
	for _, c := range r.Codes {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("Retry.Codes: %d is not an HTTP status", c)
		}
	}
	return retryPolicy(r), nil
}

// retryPolicy returns the Envoy retry policy of r (nil: the default),
// XDS.md §7.1. r must be valid.
func retryPolicy(r *Retry) *routev3.RetryPolicy {
	if r == nil {
		return &routev3.RetryPolicy{
			RetryOn:              DefaultRetryOn,
			NumRetries:           wrapperspb.UInt32(defaultRetries),
			RetriableStatusCodes: defaultRetryCodes,
		}
	}
	out := &routev3.RetryPolicy{RetryOn: RetryOn5xx, NumRetries: wrapperspb.UInt32(uint32(r.Attempts))}
	if len(r.Codes) > 0 {
		out.RetryOn = RetryOnCodes
		for _, c := range r.Codes {
			out.RetriableStatusCodes = append(out.RetriableStatusCodes, uint32(c))
		}
	}
	if r.Backoff > 0 {
		out.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(r.Backoff),
			MaxInterval:  durationpb.New(10 * r.Backoff),
		}
	}
	if r.PerTryTimeout > 0 {
		out.PerTryTimeout = durationpb.New(r.PerTryTimeout)
	}
	return out
}

// headersToAdd converts the Set (overwrite) and Add (append) headers of m.
func headersToAdd(m HeaderModifier) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	add := func(hs []Header, action corev3.HeaderValueOption_HeaderAppendAction) {
		for _, h := range hs {
			out = append(out, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: strings.ToLower(h.Name), Value: h.Value},
				AppendAction: action,
			})
		}
	}
	add(m.Set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	add(m.Add, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	return out
}

func lower(names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, strings.ToLower(n))
	}
	return out
}
