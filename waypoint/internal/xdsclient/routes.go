package xdsclient

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"

	"ambit.dev/waypoint/internal/model"
)

// DefaultRouteTimeout is Envoy's route timeout when timeout is unset.
const DefaultRouteTimeout = 15 * time.Second

// fullPathRewrite is the only regex_rewrite pattern the waypoint takes:
// HTTPRoute ReplaceFullPath (XDS.md §7.1).
const fullPathRewrite = "^/.*$"

// parseRouteEntry checks one Route of a RouteConfiguration against XDS.md
// §7 and §7.1.
func parseRouteEntry(r *routev3.Route) (model.Route, error) {
	if err := checkFields(r, "route"); err != nil {
		return model.Route{}, err
	}
	mr := model.Route{Name: r.GetName()}
	var err error
	if mr.Match, err = parseMatch(r.GetMatch()); err != nil {
		return model.Route{}, err
	}
	if mr.RequestHeaders, err = parseHeaderMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), "request_headers"); err != nil {
		return model.Route{}, err
	}
	if mr.ResponseHeaders, err = parseHeaderMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), "response_headers"); err != nil {
		return model.Route{}, err
	}
	if err = parseRouteFilters(r.GetTypedPerFilterConfig(), &mr); err != nil {
		return model.Route{}, err
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		err = parseRouteAction(a.Route, &mr)
	case *routev3.Route_Redirect:
		mr.Action = model.ActionRedirect
		mr.Redirect, err = parseRedirect(a.Redirect)
	case *routev3.Route_DirectResponse:
		mr.Action = model.ActionDirect
		if err = checkFields(a.DirectResponse, "direct_response"); err == nil {
			mr.DirectStatus = int(a.DirectResponse.GetStatus()) // [200, 600): checked by Validate
		}
	default:
		err = errors.New("the route has no route, redirect or direct_response action")
	}
	if err != nil {
		return model.Route{}, err
	}
	return mr, nil
}

func parseMatch(m *routev3.RouteMatch) (model.RouteMatch, error) {
	if err := checkFields(m, "match"); err != nil {
		return model.RouteMatch{}, err
	}
	var mm model.RouteMatch
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_ConnectMatcher_:
		return model.RouteMatch{}, errors.New("connect_matcher is only valid on connect_terminate")
	case *routev3.RouteMatch_Prefix:
		mm.Kind, mm.Path = model.PathPrefix, p.Prefix // "" matches everything too
	case *routev3.RouteMatch_Path:
		mm.Kind, mm.Path = model.PathExact, p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		mm.Kind, mm.Path = model.PathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := parseRegex(p.SafeRegex, "match safe_regex")
		if err != nil {
			return model.RouteMatch{}, err
		}
		mm.Kind, mm.Path, mm.Regex = model.PathRegex, p.SafeRegex.GetRegex(), re
	default:
		return model.RouteMatch{}, errors.New("match has no path, prefix, path_separated_prefix or safe_regex")
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		mm.IgnoreCase = true
	}
	for _, h := range m.GetHeaders() {
		where := fmt.Sprintf("match header %q", h.GetName())
		if err := checkFields(h, where); err != nil {
			return model.RouteMatch{}, err
		}
		if h.GetStringMatch() == nil {
			return model.RouteMatch{}, fmt.Errorf("%s: only string_match (exact or safe_regex) is supported", where)
		}
		sm, err := parseStringMatch(h.GetStringMatch(), where)
		if err != nil {
			return model.RouteMatch{}, err
		}
		mm.Headers = append(mm.Headers, model.HeaderMatcher{Name: strings.ToLower(h.GetName()), Value: sm})
	}
	for _, q := range m.GetQueryParameters() {
		where := fmt.Sprintf("match query parameter %q", q.GetName())
		if err := checkFields(q, where); err != nil {
			return model.RouteMatch{}, err
		}
		if q.GetStringMatch() == nil {
			return model.RouteMatch{}, fmt.Errorf("%s: only string_match (exact or safe_regex) is supported", where)
		}
		sm, err := parseStringMatch(q.GetStringMatch(), where)
		if err != nil {
			return model.RouteMatch{}, err
		}
		mm.QueryParams = append(mm.QueryParams, model.QueryParamMatcher{Name: q.GetName(), Value: sm})
	}
	return mm, nil
}

func parseStringMatch(sm *matcherv3.StringMatcher, where string) (model.StringMatch, error) {
	if err := checkFields(sm, where+" string_match"); err != nil {
		return model.StringMatch{}, err
	}
	if sm.GetIgnoreCase() {
		return model.StringMatch{}, fmt.Errorf("%s: string_match ignore_case is not supported in routes", where)
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return model.StringMatch{Exact: p.Exact}, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := parseRegex(p.SafeRegex, where)
		return model.StringMatch{Regex: re}, err
	}
	return model.StringMatch{}, fmt.Errorf("%s: string_match must be exact or safe_regex", where)
}

// parseRegex compiles a safe_regex to match whole values. The google_re2
// engine field (deprecated, RE2 is the only engine) may be set or not.
func parseRegex(rm *matcherv3.RegexMatcher, where string) (*regexp.Regexp, error) {
	if err := checkFields(rm, where); err != nil {
		return nil, err
	}
	re, err := model.CompileFullMatch(rm.GetRegex())
	if err != nil {
		return nil, fmt.Errorf("%s: regex %q: Go's regexp (RE2 syntax) cannot compile it: %w", where, rm.GetRegex(), err)
	}
	return re, nil
}

// parseHeaderMutation checks headers_to_add / headers_to_remove. Like
// Envoy, it refuses to change pseudo-headers and Host; values are Envoy
// format strings, of which only literal text ("%%" for "%") is supported.
func parseHeaderMutation(adds []*corev3.HeaderValueOption, removes []string, what string) (model.HeaderMutation, error) {
	var m model.HeaderMutation
	for _, name := range removes {
		n := strings.ToLower(name)
		if strings.HasPrefix(n, ":") || n == "host" {
			return model.HeaderMutation{}, fmt.Errorf("%s_to_remove %q: pseudo-headers and host may not be removed (as in Envoy)", what, name)
		}
		if !httpguts.ValidHeaderFieldName(n) {
			return model.HeaderMutation{}, fmt.Errorf("%s_to_remove %q: not a valid header name (RFC 9110 token)", what, name)
		}
		m.Remove = append(m.Remove, n)
	}
	for _, o := range adds {
		where := fmt.Sprintf("%s_to_add %q", what, o.GetHeader().GetKey())
		if err := checkFields(o, where); err != nil {
			return model.HeaderMutation{}, err
		}
		if err := checkFields(o.GetHeader(), where); err != nil {
			return model.HeaderMutation{}, err
		}
		n := strings.ToLower(o.GetHeader().GetKey())
		if strings.HasPrefix(n, ":") || n == "host" {
			return model.HeaderMutation{}, fmt.Errorf("%s: pseudo-headers and host may not be modified (as in Envoy; use host_rewrite_literal)", where)
		}
		if !httpguts.ValidHeaderFieldName(n) {
			return model.HeaderMutation{}, fmt.Errorf("%s: not a valid header name (RFC 9110 token)", where)
		}
		v, err := literalFormat(o.GetHeader().GetValue())
		if err != nil {
			return model.HeaderMutation{}, fmt.Errorf("%s: %w", where, err)
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			return model.HeaderMutation{}, fmt.Errorf("%s: value %q has control characters, which a header value may not", where, v)
		}
		var act model.AppendAction
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			act = model.AppendIfExistsOrAdd
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			act = model.AddIfAbsent
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			act = model.OverwriteIfExistsOrAdd
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			act = model.OverwriteIfExists
		default:
			return model.HeaderMutation{}, fmt.Errorf("%s: append_action %s is not supported", where, o.GetAppendAction())
		}
		m.Add = append(m.Add, model.HeaderValue{Name: n, Value: v, Action: act})
	}
	return m, nil
}

// literalFormat returns the text of an Envoy header value format string
// that has no substitution command: "%%" is a literal "%".
func literalFormat(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("value %q uses an Envoy substitution command (%%...%%), which the Go waypoint does not support (a literal %% is written %%%%)", s)
	}
	return b.String(), nil
}

func parseRouteAction(a *routev3.RouteAction, mr *model.Route) error {
	if err := checkFields(a, "route action"); err != nil {
		return err
	}
	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		mr.Action, mr.Cluster = model.ActionCluster, c.Cluster
	case *routev3.RouteAction_WeightedClusters:
		wc, err := parseWeighted(c.WeightedClusters)
		if err != nil {
			return err
		}
		mr.Action, mr.WeightedClusters = model.ActionWeighted, wc
	default:
		return errors.New("route action has neither cluster nor weighted_clusters")
	}
	mr.Timeout = DefaultRouteTimeout
	if t := a.GetTimeout(); t != nil {
		d, err := duration(t, "route action timeout")
		if err != nil {
			return err
		}
		mr.Timeout = d
	}
	if a.GetPrefixRewrite() != "" && a.GetRegexRewrite() != nil {
		return errors.New("route action sets both prefix_rewrite and regex_rewrite")
	}
	if err := checkPath(a.GetPrefixRewrite(), "route action prefix_rewrite"); err != nil {
		return err
	}
	mr.Rewrite.PrefixRewrite = a.GetPrefixRewrite()
	if rr := a.GetRegexRewrite(); rr != nil {
		if err := checkFields(rr, "regex_rewrite"); err != nil {
			return err
		}
		if err := checkFields(rr.GetPattern(), "regex_rewrite pattern"); err != nil {
			return err
		}
		if p := rr.GetPattern().GetRegex(); p != fullPathRewrite {
			return fmt.Errorf("regex_rewrite pattern %q: the Go waypoint only rewrites the full path (pattern %q, XDS.md §7.1)", p, fullPathRewrite)
		}
		sub := rr.GetSubstitution()
		if strings.Contains(sub, `\`) {
			return fmt.Errorf(`regex_rewrite substitution %q: \ escapes are not supported (pattern %q has no groups)`, sub, fullPathRewrite)
		}
		if err := checkPath(sub, "regex_rewrite substitution"); err != nil {
			return err
		}
		mr.Rewrite.FullPath = &sub
	}
	if h := a.GetHostRewriteLiteral(); h != "" && !httpguts.ValidHostHeader(h) {
		return fmt.Errorf("route action host_rewrite_literal %q: not a valid Host", h)
	}
	mr.Rewrite.Host = a.GetHostRewriteLiteral()
	if rp := a.GetRetryPolicy(); rp != nil {
		p, err := parseRetryPolicy(rp)
		if err != nil {
			return err
		}
		mr.Retry = p
	}
	return nil
}

// The checks below are those Envoy makes beyond its proto validation
// rules (which Validate already applied), or that Go's net/http makes
// per request and that are better refused once, here.

// duration returns a valid, non-negative protobuf duration (Envoy
// rejects negative ones).
func duration(d *durationpb.Duration, where string) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %w", where, err)
	}
	if d.AsDuration() < 0 {
		return 0, fmt.Errorf("%s %s: negative", where, d.AsDuration())
	}
	return d.AsDuration(), nil
}

// checkPath refuses a path (or rewrite of one) with control characters
// (Validate refuses NUL, CR and LF; Go's client refuses the others).
func checkPath(p, where string) error {
	if !httpguts.ValidHeaderFieldValue(p) {
		return fmt.Errorf("%s %q has control characters", where, p)
	}
	return nil
}

func parseWeighted(wc *routev3.WeightedCluster) ([]model.WeightedCluster, error) {
	if err := checkFields(wc, "weighted_clusters"); err != nil {
		return nil, err
	}
	var out []model.WeightedCluster
	var total uint64
	for i, c := range wc.GetClusters() {
		where := fmt.Sprintf("weighted_clusters cluster %d %q", i, c.GetName())
		if err := checkFields(c, where); err != nil {
			return nil, err
		}
		if c.GetName() == "" {
			return nil, fmt.Errorf("%s has no name", where)
		}
		if c.GetWeight() == nil {
			return nil, fmt.Errorf("%s has no weight (required, as in Envoy)", where)
		}
		total += uint64(c.GetWeight().GetValue())
		out = append(out, model.WeightedCluster{Name: c.GetName(), Weight: c.GetWeight().GetValue()})
	}
	switch {
	case total == 0:
		return nil, errors.New("weighted_clusters: the total weight is 0 (an unusable backend is a direct_response 500, XDS.md §7.1)")
	case total > math.MaxUint32:
		return nil, fmt.Errorf("weighted_clusters: the total weight %d exceeds %d", total, uint32(math.MaxUint32))
	}
	return out, nil
}

func retryConditionNames() string {
	names := slices.Sorted(maps.Keys(model.RetryConditions))
	return strings.Join(names, ", ")
}

func parseRetryPolicy(rp *routev3.RetryPolicy) (*model.RetryPolicy, error) {
	if err := checkFields(rp, "retry_policy"); err != nil {
		return nil, err
	}
	p := &model.RetryPolicy{NumRetries: 1, BackoffBase: model.DefaultBackoffBase, BackoffMax: 10 * model.DefaultBackoffBase}
	for c := range strings.SplitSeq(rp.GetRetryOn(), ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		on, ok := model.RetryConditions[c]
		if !ok {
			return nil, fmt.Errorf("retry_policy: retry_on condition %q is not supported (the Go waypoint understands %s)", c, retryConditionNames())
		}
		p.On |= on
	}
	if n := rp.GetNumRetries(); n != nil {
		p.NumRetries = int(n.GetValue())
	}
	if t := rp.GetPerTryTimeout(); t != nil {
		d, err := duration(t, "retry_policy per_try_timeout")
		if err != nil {
			return nil, err
		}
		p.PerTryTimeout = d
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.StatusCodes = append(p.StatusCodes, int(c))
	}
	if b := rp.GetRetryBackOff(); b != nil {
		if err := checkFields(b, "retry_policy retry_back_off"); err != nil {
			return nil, err
		}
		var err error
		if p.BackoffBase, err = duration(b.GetBaseInterval(), "retry_policy retry_back_off base_interval"); err != nil {
			return nil, err
		}
		p.BackoffMax = 10 * p.BackoffBase
		if m := b.GetMaxInterval(); m != nil {
			if p.BackoffMax, err = duration(m, "retry_policy retry_back_off max_interval"); err != nil {
				return nil, err
			}
		}
		if p.BackoffBase <= 0 || p.BackoffMax < p.BackoffBase {
			return nil, fmt.Errorf("retry_policy retry_back_off: max_interval %s must be at least base_interval %s (> 0)", p.BackoffMax, p.BackoffBase)
		}
	}
	return p, nil
}

// redirectCodes are the RedirectAction response codes.
var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  301,
	routev3.RedirectAction_FOUND:              302,
	routev3.RedirectAction_SEE_OTHER:          303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307,
	routev3.RedirectAction_PERMANENT_REDIRECT: 308,
}

func parseRedirect(rd *routev3.RedirectAction) (*model.Redirect, error) {
	if err := checkFields(rd, "redirect"); err != nil {
		return nil, err
	}
	code, ok := redirectCodes[rd.GetResponseCode()]
	if !ok {
		return nil, fmt.Errorf("redirect: response_code %s is not supported", rd.GetResponseCode())
	}
	if h := rd.GetHostRedirect(); h != "" && !httpguts.ValidHostHeader(h) {
		return nil, fmt.Errorf("redirect: host_redirect %q: not a valid host", h)
	}
	if err := checkPath(rd.GetPathRedirect(), "redirect path_redirect"); err != nil {
		return nil, err
	}
	if err := checkPath(rd.GetPrefixRewrite(), "redirect prefix_rewrite"); err != nil {
		return nil, err
	}
	if p := rd.GetPortRedirect(); p > 65535 {
		return nil, fmt.Errorf("redirect: port_redirect %d is not a port", p)
	}
	return &model.Redirect{
		Scheme:        rd.GetSchemeRedirect(),
		Host:          rd.GetHostRedirect(),
		Port:          rd.GetPortRedirect(),
		Path:          rd.GetPathRedirect(),
		PrefixRewrite: rd.GetPrefixRewrite(),
		Code:          code,
	}, nil
}

// parseCircuitBreakers takes the one threshold of XDS.md §5.2: priority
// DEFAULT with a retry_budget. A DEFAULT threshold without one is Envoy's
// default (max_retries 3): nil.
func parseCircuitBreakers(cb *clusterv3.CircuitBreakers, where string) (*model.RetryBudget, error) {
	where += ": circuit_breakers"
	if err := checkFields(cb, where); err != nil {
		return nil, err
	}
	var budget *model.RetryBudget
	seen := false
	for _, t := range cb.GetThresholds() {
		if err := checkFields(t, where+" threshold"); err != nil {
			return nil, err
		}
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			return nil, fmt.Errorf("%s: priority %s: the Go waypoint only has priority DEFAULT", where, t.GetPriority())
		}
		if seen {
			return nil, fmt.Errorf("%s: two thresholds of priority DEFAULT", where)
		}
		seen = true
		rb := t.GetRetryBudget()
		if rb == nil {
			continue
		}
		if err := checkFields(rb, where+" retry_budget"); err != nil {
			return nil, err
		}
		budget = &model.RetryBudget{Percent: model.DefaultBudgetPercent, MinConcurrency: model.DefaultMinRetryConcurrency}
		if p := rb.GetBudgetPercent(); p != nil {
			budget.Percent = p.GetValue()
		}
		if m := rb.GetMinRetryConcurrency(); m != nil {
			budget.MinConcurrency = m.GetValue()
		}
	}
	return budget, nil
}
