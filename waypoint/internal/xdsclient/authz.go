package xdsclient

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"ambit.dev/waypoint/internal/model"
)

// This file translates L7 authorization (XDS.md §12) and access logs
// (§13): RBAC filters and file access loggers. What the Go waypoint
// cannot evaluate is refused (the resource is NACKed), never ignored.

const (
	filterHTTPRBAC     = "envoy.filters.http.rbac"
	filterNetworkRBAC  = "envoy.filters.network.rbac"
	accessLoggerFile   = "envoy.access_loggers.file"
	peerPrincipalState = "io.istio.peer_principal"
	accessLogStdout    = "/dev/stdout"
)

// parseHTTPRBAC translates one envoy.filters.http.rbac filter config:
// shadow rules (if any) first, then the enforced rules, as Envoy
// evaluates them.
func parseHTTPRBAC(rb *httprbacv3.RBAC) ([]model.RBAC, error) {
	if err := checkFields(rb, "http rbac"); err != nil {
		return nil, err
	}
	return rbacPair(rb.GetRules(), rb.GetShadowRules())
}

// parseNetworkRBAC translates one envoy.filters.network.rbac config.
func parseNetworkRBAC(rb *netrbacv3.RBAC) ([]model.RBAC, error) {
	if err := checkFields(rb, "network rbac"); err != nil {
		return nil, err
	}
	return rbacPair(rb.GetRules(), rb.GetShadowRules())
}

func rbacPair(rules, shadow *rbacv3.RBAC) ([]model.RBAC, error) {
	var out []model.RBAC
	if shadow != nil {
		r, err := parseRBAC(shadow, true)
		if err != nil {
			return nil, fmt.Errorf("shadow_rules: %w", err)
		}
		out = append(out, r)
	}
	if rules != nil {
		r, err := parseRBAC(rules, false)
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseRBAC(r *rbacv3.RBAC, shadow bool) (model.RBAC, error) {
	if err := checkFields(r, "rbac"); err != nil {
		return model.RBAC{}, err
	}
	out := model.RBAC{Shadow: shadow}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		out.Action = model.RBACAllow
	case rbacv3.RBAC_DENY:
		out.Action = model.RBACDeny
	case rbacv3.RBAC_LOG:
		out.Action = model.RBACLog
	default:
		return model.RBAC{}, fmt.Errorf("action %s is not supported (ALLOW, DENY or LOG)", r.GetAction())
	}
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := r.GetPolicies()[n]
		where := fmt.Sprintf("policy %q", n)
		if err := checkFields(p, where); err != nil {
			return model.RBAC{}, err
		}
		mp := model.RBACPolicy{Name: n}
		for _, perm := range p.GetPermissions() {
			m, err := parsePermission(perm, where)
			if err != nil {
				return model.RBAC{}, err
			}
			mp.Permissions = append(mp.Permissions, m)
		}
		for _, id := range p.GetPrincipals() {
			m, err := parsePrincipal(id, where)
			if err != nil {
				return model.RBAC{}, err
			}
			mp.Principals = append(mp.Principals, m)
		}
		out.Policies = append(out.Policies, mp)
	}
	return out, nil
}

func parsePermission(p *rbacv3.Permission, where string) (model.Permission, error) {
	list := func(ps []*rbacv3.Permission) ([]model.Permission, error) {
		out := []model.Permission{}
		for _, q := range ps {
			m, err := parsePermission(q, where)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	var err error
	var out model.Permission
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		out.Any = r.Any
		if !r.Any {
			return out, fmt.Errorf("%s: permission any: false matches nothing and is not supported", where)
		}
	case *rbacv3.Permission_AndRules:
		out.And, err = list(r.AndRules.GetRules())
	case *rbacv3.Permission_OrRules:
		out.Or, err = list(r.OrRules.GetRules())
	case *rbacv3.Permission_NotRule:
		var m model.Permission
		m, err = parsePermission(r.NotRule, where)
		out.Not = &m
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort == 0 || r.DestinationPort > 65535 {
			return out, fmt.Errorf("%s: destination_port %d is not a port", where, r.DestinationPort)
		}
		out.Port = uint16(r.DestinationPort)
	case *rbacv3.Permission_Header:
		out.Header, err = parseRBACHeader(r.Header, where)
	case *rbacv3.Permission_UrlPath:
		if err := checkFields(r.UrlPath, where+" url_path"); err != nil {
			return out, err
		}
		var vm model.ValueMatch
		vm, err = parseValueMatch(r.UrlPath.GetPath(), where+" url_path")
		out.URLPath = &vm
	default:
		return out, fmt.Errorf("%s: permission %T is not supported by the Go waypoint (XDS.md §12 lists what it evaluates)", where, p.GetRule())
	}
	return out, err
}

func parsePrincipal(p *rbacv3.Principal, where string) (model.Principal, error) {
	list := func(ps []*rbacv3.Principal) ([]model.Principal, error) {
		out := []model.Principal{}
		for _, q := range ps {
			m, err := parsePrincipal(q, where)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	}
	var err error
	var out model.Principal
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		out.Any = r.Any
		if !r.Any {
			return out, fmt.Errorf("%s: principal any: false matches nothing and is not supported", where)
		}
	case *rbacv3.Principal_AndIds:
		out.And, err = list(r.AndIds.GetIds())
	case *rbacv3.Principal_OrIds:
		out.Or, err = list(r.OrIds.GetIds())
	case *rbacv3.Principal_NotId:
		var m model.Principal
		m, err = parsePrincipal(r.NotId, where)
		out.Not = &m
	case *rbacv3.Principal_FilterState:
		fs := r.FilterState
		if fs.GetKey() != peerPrincipalState || fs.GetStringMatch() == nil {
			return out, fmt.Errorf("%s: filter_state: only a string_match on %s is supported (the source principal)", where, peerPrincipalState)
		}
		var vm model.ValueMatch
		vm, err = parseValueMatch(fs.GetStringMatch(), where+" filter_state")
		out.PeerPrincipal = &vm
	case *rbacv3.Principal_DirectRemoteIp:
		var pfx netip.Prefix
		pfx, err = cidr(r.DirectRemoteIp)
		out.RemoteIP = &pfx
	case *rbacv3.Principal_Header:
		out.Header, err = parseRBACHeader(r.Header, where)
	default:
		return out, fmt.Errorf("%s: principal %T is not supported by the Go waypoint (the source principal is matched by filter_state %s, XDS.md §12)", where, p.GetIdentifier(), peerPrincipalState)
	}
	return out, err
}

func parseRBACHeader(h *routev3.HeaderMatcher, where string) (*model.RBACHeader, error) {
	where = fmt.Sprintf("%s header %q", where, h.GetName())
	if err := checkFields(h, where); err != nil {
		return nil, err
	}
	out := &model.RBACHeader{Name: strings.ToLower(h.GetName())}
	switch m := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		if !m.PresentMatch {
			return nil, fmt.Errorf("%s: present_match: false is not supported", where)
		}
		out.Present = true
	case *routev3.HeaderMatcher_StringMatch:
		vm, err := parseValueMatch(m.StringMatch, where)
		if err != nil {
			return nil, err
		}
		out.Value = &vm
	default:
		return nil, fmt.Errorf("%s: only present_match and string_match are supported", where)
	}
	return out, nil
}

// parseValueMatch translates a StringMatcher: exact, prefix, suffix,
// contains (with ignore_case) or safe_regex.
func parseValueMatch(sm *matcherv3.StringMatcher, where string) (model.ValueMatch, error) {
	if sm == nil {
		return model.ValueMatch{}, fmt.Errorf("%s: no string matcher", where)
	}
	if err := checkFields(sm, where); err != nil {
		return model.ValueMatch{}, err
	}
	out := model.ValueMatch{IgnoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Kind, out.Value = model.ValueExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.Kind, out.Value = model.ValuePrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.Kind, out.Value = model.ValueSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.Kind, out.Value = model.ValueContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := parseRegex(p.SafeRegex, where)
		if err != nil {
			return model.ValueMatch{}, err
		}
		if out.IgnoreCase {
			return model.ValueMatch{}, fmt.Errorf("%s: ignore_case with safe_regex has no effect in Envoy; remove it", where)
		}
		out.Kind, out.Regex = model.ValueRegex, re
	default:
		return model.ValueMatch{}, fmt.Errorf("%s: string matcher %T is not supported", where, sm.GetMatchPattern())
	}
	return out, nil
}

// accessLogOperators are the command operators the Go waypoint fills in
// (XDS.md §13); a format using any other is refused.
var accessLogOperators = regexp.MustCompile(`^%(START_TIME|REQ\(:METHOD\)|REQ\(:PATH\)|REQ\(:AUTHORITY\)|PROTOCOL|RESPONSE_CODE|RESPONSE_FLAGS|RESPONSE_CODE_DETAILS|DURATION|BYTES_RECEIVED|BYTES_SENT|UPSTREAM_HOST|DOWNSTREAM_REMOTE_ADDRESS|FILTER_STATE\(io\.istio\.peer_principal:PLAIN\)|REQ\(X-REQUEST-ID\)|REQ\(TRACEPARENT\))%$`)

// parseAccessLogs translates an HCM's access_log: at most one file logger
// to /dev/stdout with a json_format of whole command operators or
// literals, optionally filtered by an or_filter of a runtime_filter and a
// status_code_filter (>=).
func parseAccessLogs(logs []*accesslogv3.AccessLog) (*model.AccessLog, error) {
	if len(logs) == 0 {
		return nil, nil
	}
	if len(logs) > 1 {
		return nil, fmt.Errorf("access_log: %d loggers, the Go waypoint writes one", len(logs))
	}
	al := logs[0]
	if al.GetName() != accessLoggerFile {
		return nil, fmt.Errorf("access_log %q: only %s is supported", al.GetName(), accessLoggerFile)
	}
	var f filev3.FileAccessLog
	if err := unmarshalAny(al.GetTypedConfig(), &f); err != nil {
		return nil, fmt.Errorf("access_log: %w", err)
	}
	if f.GetPath() != accessLogStdout {
		return nil, fmt.Errorf("access_log path %q: the Go waypoint only logs to %s", f.GetPath(), accessLogStdout)
	}
	sfs := f.GetLogFormat()
	if sfs == nil || sfs.GetJsonFormat() == nil || sfs.GetOmitEmptyValues() || len(sfs.GetFormatters()) > 0 || sfs.GetContentType() != "" {
		return nil, errors.New("access_log: only log_format.json_format is supported")
	}
	out := &model.AccessLog{Path: f.GetPath(), Sampled: 100}
	js := sfs.GetJsonFormat().GetFields()
	names := make([]string, 0, len(js))
	for n := range js {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		v, ok := js[n].GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("access_log json_format %q: only string values are supported", n)
		}
		if strings.Contains(v.StringValue, "%") && !accessLogOperators.MatchString(v.StringValue) {
			return nil, fmt.Errorf("access_log json_format %q: %q is not a command operator the Go waypoint fills in (XDS.md §13)", n, v.StringValue)
		}
		out.Fields = append(out.Fields, model.LogField{Name: n, Format: v.StringValue})
	}
	if flt := al.GetFilter(); flt != nil {
		if err := parseLogFilter(flt, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func parseLogFilter(f *accesslogv3.AccessLogFilter, out *model.AccessLog) error {
	bad := errors.New("access_log filter: only an or_filter of a runtime_filter (percent_sampled) and a status_code_filter (GE) is supported (XDS.md §13)")
	or := f.GetOrFilter()
	if or == nil || len(or.GetFilters()) != 2 {
		return bad
	}
	rt := or.GetFilters()[0].GetRuntimeFilter()
	sc := or.GetFilters()[1].GetStatusCodeFilter()
	if rt == nil || sc == nil || sc.GetComparison().GetOp() != accesslogv3.ComparisonFilter_GE {
		return bad
	}
	pct := rt.GetPercentSampled()
	if pct == nil {
		return bad
	}
	switch pct.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		out.Sampled = min(pct.GetNumerator(), 100)
	default:
		return fmt.Errorf("access_log runtime_filter: denominator %s is not supported (HUNDRED)", pct.GetDenominator())
	}
	v := sc.GetComparison().GetValue()
	if v == nil || v.GetDefaultValue() == 0 || v.GetDefaultValue() > 599 {
		return errors.New("access_log status_code_filter: default_value must be a status code")
	}
	out.MinStatus = int(v.GetDefaultValue())
	return nil
}
