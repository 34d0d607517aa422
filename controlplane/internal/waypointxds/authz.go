package waypointxds

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// This file builds L7 authorization (XDS.md §12) and access logs (§13).

// Filter and logger names of XDS.md §12 and §13.
const (
	FilterHTTPRBAC    = "envoy.filters.http.rbac"
	FilterNetworkRBAC = "envoy.filters.network.rbac"
	AccessLoggerFile  = "envoy.access_loggers.file"
	// AccessLogPath is where every HCM writes its access log.
	AccessLogPath = "/dev/stdout"
	// AccessLogSamplingKey is the runtime key of the access log sampling
	// filter (its default percentage is the waypoint's setting).
	AccessLogSamplingKey = "ambit.access_log.sampling"
	// AccessLogStatusKey is the runtime key of the "status >= 400" filter.
	AccessLogStatusKey = "ambit.access_log.min_status"
	// DefaultAccessLogPercent is the sampling of a waypoint without the
	// ambit.dev/access-log-sampling annotation.
	DefaultAccessLogPercent = 100
)

// PolicyAction is what a policy does with what its rules match.
type PolicyAction string

// The policy actions (AuthorizationPolicy spec.action).
const (
	PolicyAllow PolicyAction = "ALLOW"
	PolicyDeny  PolicyAction = "DENY"
	PolicyAudit PolicyAction = "AUDIT"
)

// Policy is an AuthorizationPolicy that applies to a bound service (its
// targetRefs name the service or the waypoint). Its values are written as
// in the AuthorizationPolicy; ValidatePolicy says whether Build can
// compile it.
type Policy struct {
	Namespace, Name string
	Action          PolicyAction
	// Rules are OR'ed; an ALLOW policy without rules allows nothing.
	Rules []PolicyRule
}

// PolicyRule is one rule: any From, any To and every When must match.
type PolicyRule struct {
	From []PolicySource
	To   []PolicyOperation
	When []PolicyCondition
}

// PolicySource is one rules[].from[].source.
type PolicySource struct {
	Principals, NotPrincipals []string
	Namespaces, NotNamespaces []string
	IPBlocks, NotIPBlocks     []string
}

// PolicyOperation is one rules[].to[].operation.
type PolicyOperation struct {
	Ports, NotPorts     []string
	Methods, NotMethods []string
	Paths, NotPaths     []string
	Hosts, NotHosts     []string
}

// PolicyCondition is one rules[].when entry.
type PolicyCondition struct {
	Key               string
	Values, NotValues []string
}

// PolicyID is the RBAC policy name of a policy's rule:
// ns[<namespace>]-policy[<name>]-rule[<index>] (Istio's).
func PolicyID(namespace, name string, rule int) string {
	return "ns[" + namespace + "]-policy[" + name + "]-rule[" + strconv.Itoa(rule) + "]"
}

// The `when` keys of XDS.md §12.
const (
	KeySourcePrincipal = "source.principal"
	KeySourceNamespace = "source.namespace"
	KeySourceIP        = "source.ip"
	KeyDestinationPort = "destination.port"
	keyHeaderPrefix    = "request.headers["
)

// ValidatePolicy returns what is wrong with p (empty: Build compiles it),
// each problem with its field path.
func ValidatePolicy(p Policy) []string {
	var probs []string
	switch p.Action {
	case PolicyAllow, PolicyDeny, PolicyAudit:
	default:
		probs = append(probs, fmt.Sprintf("action: %q is not one of ALLOW, DENY, AUDIT", p.Action))
	}
	pattern := func(path string, vs []string) {
		for i, v := range vs {
			if v == "" || strings.Count(v, "*") > 1 || (strings.Contains(v, "*") && v[0] != '*' && v[len(v)-1] != '*') {
				probs = append(probs, fmt.Sprintf("%s[%d]: %q: use at most one '*', only at the start or the end", path, i, v))
			}
		}
	}
	ports := func(path string, vs []string) {
		for i, v := range vs {
			if n, err := strconv.ParseUint(v, 10, 16); err != nil || n == 0 {
				probs = append(probs, fmt.Sprintf("%s[%d]: %q is not a port number 1-65535", path, i, v))
			}
		}
	}
	ips := func(path string, vs []string) {
		for i, v := range vs {
			if _, err := parseBlock(v); err != nil {
				probs = append(probs, fmt.Sprintf("%s[%d]: %q is not an IP address or CIDR block", path, i, v))
			}
		}
	}
	for i, r := range p.Rules {
		rp := fmt.Sprintf("rules[%d]", i)
		for j, s := range r.From {
			sp := fmt.Sprintf("%s.from[%d].source", rp, j)
			pattern(sp+".principals", s.Principals)
			pattern(sp+".notPrincipals", s.NotPrincipals)
			pattern(sp+".namespaces", s.Namespaces)
			pattern(sp+".notNamespaces", s.NotNamespaces)
			ips(sp+".ipBlocks", s.IPBlocks)
			ips(sp+".notIpBlocks", s.NotIPBlocks)
		}
		for j, o := range r.To {
			op := fmt.Sprintf("%s.to[%d].operation", rp, j)
			ports(op+".ports", o.Ports)
			ports(op+".notPorts", o.NotPorts)
			pattern(op+".paths", o.Paths)
			pattern(op+".notPaths", o.NotPaths)
			pattern(op+".hosts", o.Hosts)
			pattern(op+".notHosts", o.NotHosts)
		}
		for j, c := range r.When {
			wp := fmt.Sprintf("%s.when[%d]", rp, j)
			switch {
			case c.Key == KeySourcePrincipal || c.Key == KeySourceNamespace:
				pattern(wp+".values", c.Values)
				pattern(wp+".notValues", c.NotValues)
			case c.Key == KeySourceIP:
				ips(wp+".values", c.Values)
				ips(wp+".notValues", c.NotValues)
			case c.Key == KeyDestinationPort:
				ports(wp+".values", c.Values)
				ports(wp+".notValues", c.NotValues)
			case headerName(c.Key) != "":
				pattern(wp+".values", c.Values)
				pattern(wp+".notValues", c.NotValues)
			default:
				probs = append(probs, fmt.Sprintf("%s.key: %q is not one of request.headers[<name>], source.principal, source.namespace, source.ip, destination.port", wp, c.Key))
			}
			if len(c.Values) == 0 && len(c.NotValues) == 0 {
				probs = append(probs, wp+": must set values or notValues")
			}
		}
	}
	return probs
}

var headerNameRE = regexp.MustCompile(`^[-_A-Za-z0-9]+$`)

// headerName returns <name> of request.headers[<name>], lower-cased, or ""
// when key is not of that form.
func headerName(key string) string {
	if !strings.HasPrefix(key, keyHeaderPrefix) || !strings.HasSuffix(key, "]") {
		return ""
	}
	n := key[len(keyHeaderPrefix) : len(key)-1]
	if !headerNameRE.MatchString(n) {
		return ""
	}
	return strings.ToLower(n)
}

func parseBlock(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// rbacFilters are a chain's RBAC filters, Istio's order: AUDIT (shadow
// rules, action LOG), DENY, ALLOW; a filter only when a policy of its
// action applies. tcp builds the network filters' rules (XDS.md §12.3).
type rbacSet struct {
	audit, deny, allow *rbacv3.RBAC
}

func buildRBAC(policies []Policy, tcp bool) rbacSet {
	var set rbacSet
	for _, p := range policies {
		var dst **rbacv3.RBAC
		var action rbacv3.RBAC_Action
		switch p.Action {
		case PolicyAudit:
			dst, action = &set.audit, rbacv3.RBAC_LOG
		case PolicyDeny:
			dst, action = &set.deny, rbacv3.RBAC_DENY
		default:
			dst, action = &set.allow, rbacv3.RBAC_ALLOW
		}
		if *dst == nil {
			*dst = &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
		}
		for i, r := range p.Rules {
			pol, ok := rulePolicy(r, p.Action, tcp)
			if ok {
				(*dst).Policies[PolicyID(p.Namespace, p.Name, i)] = pol
			}
		}
	}
	return set
}

// rulePolicy compiles one rule. On a TCP chain (tcp), HTTP-only fields
// cannot be evaluated: an ALLOW or AUDIT rule that has any is left out
// (ok false), in a DENY rule each such field matches everything (Istio's
// semantics: a DENY never gets narrower).
func rulePolicy(r PolicyRule, action PolicyAction, tcp bool) (*rbacv3.Policy, bool) {
	if tcp && action != PolicyDeny && ruleHasHTTP(r) {
		return nil, false
	}
	var whenPerms []*rbacv3.Permission
	var whenIDs []*rbacv3.Principal
	for _, c := range r.When {
		if c.Key == KeyDestinationPort {
			whenPerms = append(whenPerms, permValues(c.Values, c.NotValues, portPerm))
			continue
		}
		if tcp && headerName(c.Key) != "" {
			continue // DENY on TCP: matches everything
		}
		whenIDs = append(whenIDs, idValues(c.Values, c.NotValues, func(v string) *rbacv3.Principal { return conditionID(c.Key, v) }))
	}
	pol := &rbacv3.Policy{}
	for _, o := range r.To {
		var and []*rbacv3.Permission
		and = appendPerm(and, o.Ports, o.NotPorts, portPerm)
		if !tcp {
			and = appendPerm(and, o.Methods, o.NotMethods, func(v string) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerMatch(":method", v)}}
			})
			and = appendPerm(and, o.Paths, o.NotPaths, func(v string) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
					Rule: &matcherv3.PathMatcher_Path{Path: policyStringMatch(v)},
				}}}
			})
			and = appendPerm(and, o.Hosts, o.NotHosts, func(v string) *rbacv3.Permission {
				m := headerMatch(":authority", v)
				if sm := m.GetStringMatch(); sm != nil {
					sm.IgnoreCase = true
				}
				return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: m}}
			})
		}
		pol.Permissions = append(pol.Permissions, andPerms(append(and, whenPerms...)))
	}
	if len(r.To) == 0 {
		pol.Permissions = []*rbacv3.Permission{andPerms(whenPerms)}
	}
	for _, s := range r.From {
		var and []*rbacv3.Principal
		and = appendID(and, s.Principals, s.NotPrincipals, principalID)
		and = appendID(and, s.Namespaces, s.NotNamespaces, namespaceID)
		and = appendID(and, s.IPBlocks, s.NotIPBlocks, ipID)
		pol.Principals = append(pol.Principals, andIDs(append(and, whenIDs...)))
	}
	if len(r.From) == 0 {
		pol.Principals = []*rbacv3.Principal{andIDs(whenIDs)}
	}
	return pol, true
}

func ruleHasHTTP(r PolicyRule) bool {
	for _, o := range r.To {
		if len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths)+len(o.Hosts)+len(o.NotHosts) > 0 {
			return true
		}
	}
	return slices.ContainsFunc(r.When, func(c PolicyCondition) bool { return headerName(c.Key) != "" })
}

func portPerm(v string) *rbacv3.Permission {
	n, _ := strconv.ParseUint(v, 10, 16)
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
}

func conditionID(key, v string) *rbacv3.Principal {
	switch key {
	case KeySourcePrincipal:
		return principalID(v)
	case KeySourceNamespace:
		return namespaceID(v)
	case KeySourceIP:
		return ipID(v)
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerMatch(headerName(key), v)}}
}

// principalID matches the source principal, the filter state
// io.istio.peer_principal (the peer's URI SAN, spiffe://...).
func principalID(v string) *rbacv3.Principal {
	var sm *matcherv3.StringMatcher
	switch {
	case v == "*":
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://"}}
	case strings.HasPrefix(v, "*"):
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + v[:len(v)-1]}}
	default:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://" + v}}
	}
	return peerPrincipal(sm)
}

// namespaceID matches the namespace of the source principal by a regex
// over spiffe://<td>/ns/<namespace>/sa/<account>.
func namespaceID(v string) *rbacv3.Principal {
	var ns string
	switch {
	case v == "*":
		ns = `[^/]+`
	case strings.HasPrefix(v, "*"):
		ns = `[^/]*` + regexp.QuoteMeta(v[1:])
	case strings.HasSuffix(v, "*"):
		ns = regexp.QuoteMeta(v[:len(v)-1]) + `[^/]*`
	default:
		ns = regexp.QuoteMeta(v)
	}
	return peerPrincipal(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
		Regex: `spiffe://[^/]+/ns/` + ns + `/sa/[^/]+`,
	}}})
}

func peerPrincipal(sm *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{
		Key:     FilterStatePeerPrincipal,
		Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: sm},
	}}}
}

func ipID(v string) *rbacv3.Principal {
	p, _ := parseBlock(v)
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{
		AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits())),
	}}}
}

// policyStringMatch is Istio's value pattern: "*" any value, "*x" suffix, "x*"
// prefix, else exact.
func policyStringMatch(v string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}
	case strings.HasPrefix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v[:len(v)-1]}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

// headerMatch matches header name: "*" presence, else policyStringMatch.
func headerMatch(name, v string) *routev3.HeaderMatcher {
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: policyStringMatch(v)}}
}

func permValues(vs, not []string, f func(string) *rbacv3.Permission) *rbacv3.Permission {
	return andPerms(appendPerm(nil, vs, not, f))
}

func appendPerm(and []*rbacv3.Permission, vs, not []string, f func(string) *rbacv3.Permission) []*rbacv3.Permission {
	or := func(vs []string) *rbacv3.Permission {
		var rules []*rbacv3.Permission
		for _, v := range vs {
			rules = append(rules, f(v))
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
	}
	if len(vs) > 0 {
		and = append(and, or(vs))
	}
	if len(not) > 0 {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: or(not)}})
	}
	return and
}

func andPerms(and []*rbacv3.Permission) *rbacv3.Permission {
	if len(and) == 0 {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}}
}

func idValues(vs, not []string, f func(string) *rbacv3.Principal) *rbacv3.Principal {
	return andIDs(appendID(nil, vs, not, f))
}

func appendID(and []*rbacv3.Principal, vs, not []string, f func(string) *rbacv3.Principal) []*rbacv3.Principal {
	or := func(vs []string) *rbacv3.Principal {
		var ids []*rbacv3.Principal
		for _, v := range vs {
			ids = append(ids, f(v))
		}
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
	}
	if len(vs) > 0 {
		and = append(and, or(vs))
	}
	if len(not) > 0 {
		and = append(and, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: or(not)}})
	}
	return and
}

func andIDs(and []*rbacv3.Principal) *rbacv3.Principal {
	if len(and) == 0 {
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: and}}}
}

// httpRBACFilters returns the HTTP RBAC filters of a chain, in order.
func httpRBACFilters(policies []Policy) []*hcmv3.HttpFilter {
	set := buildRBAC(policies, false)
	var out []*hcmv3.HttpFilter
	if set.audit != nil {
		out = append(out, httpFilter(FilterHTTPRBAC, &httprbacv3.RBAC{ShadowRules: set.audit, ShadowRulesStatPrefix: "audit_"}))
	}
	for _, r := range []*rbacv3.RBAC{set.deny, set.allow} {
		if r != nil {
			out = append(out, httpFilter(FilterHTTPRBAC, &httprbacv3.RBAC{Rules: r}))
		}
	}
	return out
}

// networkRBACFilters returns the network RBAC filters of a TCP chain, in
// order, before its tcp_proxy.
func networkRBACFilters(stat string, policies []Policy) []*netrbacv3.RBAC {
	set := buildRBAC(policies, true)
	var out []*netrbacv3.RBAC
	if set.audit != nil {
		out = append(out, &netrbacv3.RBAC{StatPrefix: stat, ShadowRules: set.audit, ShadowRulesStatPrefix: "audit_"})
	}
	for _, r := range []*rbacv3.RBAC{set.deny, set.allow} {
		if r != nil {
			out = append(out, &netrbacv3.RBAC{StatPrefix: stat, Rules: r})
		}
	}
	return out
}

// AccessLogFields are the JSON access log fields (XDS.md §13): name →
// Envoy command operator. destination_service is the chain's service
// hostname, a literal.
var AccessLogFields = map[string]string{
	"start_time":            "%START_TIME%",
	"method":                "%REQ(:METHOD)%",
	"path":                  "%REQ(:PATH)%",
	"authority":             "%REQ(:AUTHORITY)%",
	"protocol":              "%PROTOCOL%",
	"response_code":         "%RESPONSE_CODE%",
	"response_flags":        "%RESPONSE_FLAGS%",
	"response_code_details": "%RESPONSE_CODE_DETAILS%",
	"duration":              "%DURATION%",
	"bytes_received":        "%BYTES_RECEIVED%",
	"bytes_sent":            "%BYTES_SENT%",
	"upstream_host":         "%UPSTREAM_HOST%",
	"downstream_peer":       "%DOWNSTREAM_REMOTE_ADDRESS%",
	"source_principal":      "%FILTER_STATE(" + FilterStatePeerPrincipal + ":PLAIN)%",
	"request_id":            "%REQ(X-REQUEST-ID)%",
	"traceparent":           "%REQ(TRACEPARENT)%",
}

// accessLog is the access log of an HCM for service hostname: a JSON line
// on /dev/stdout per request, sampled at percent (0-100) and always
// written for responses >= 400.
func accessLog(hostname string, percent uint32) []*accesslogv3.AccessLog {
	fields := map[string]*structpb.Value{"destination_service": structpb.NewStringValue(hostname)}
	for k, v := range AccessLogFields {
		fields[k] = structpb.NewStringValue(v)
	}
	al := &accesslogv3.AccessLog{
		Name: AccessLoggerFile,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&filev3.FileAccessLog{
			Path: AccessLogPath,
			AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: fields}},
			}},
		})},
	}
	if percent < 100 {
		al.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
			Filters: []*accesslogv3.AccessLogFilter{
				{FilterSpecifier: &accesslogv3.AccessLogFilter_RuntimeFilter{RuntimeFilter: &accesslogv3.RuntimeFilter{
					RuntimeKey:               AccessLogSamplingKey,
					PercentSampled:           &typev3.FractionalPercent{Numerator: percent, Denominator: typev3.FractionalPercent_HUNDRED},
					UseIndependentRandomness: true,
				}}},
				{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
					Comparison: &accesslogv3.ComparisonFilter{
						Op:    accesslogv3.ComparisonFilter_GE,
						Value: &corev3.RuntimeUInt32{DefaultValue: 400, RuntimeKey: AccessLogStatusKey},
					},
				}}},
			},
		}}}
	}
	return []*accesslogv3.AccessLog{al}
}
