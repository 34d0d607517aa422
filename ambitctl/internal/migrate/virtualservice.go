package migrate

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	apinet "istio.io/api/networking/v1alpha3"
	clinet "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
)

// virtualService converts a VirtualService into one GAMMA HTTPRoute
// (parentRefs: the Services its hosts name) plus an HTTPFault per route
// with fault injection. A route (rule) whose match or destinations cannot
// all be expressed is left out whole, since a partial one would match more
// traffic or send it elsewhere; filters that cannot be expressed are
// reported and the rule kept.
func (c *converter) virtualService(vs *clinet.VirtualService) Entry {
	e := &entry{Entry: Entry{Source: Ref{KindVirtualService, vs.Name}}}
	spec := &vs.Spec
	for _, g := range spec.Gateways {
		if g != "mesh" {
			e.gap("gateways", fmt.Sprintf("%q is an ingress gateway: convert it to a Gateway API Gateway and an HTTPRoute with that Gateway as parent by hand; only mesh (east-west) routing is converted", g))
		}
	}
	if len(spec.Gateways) > 0 && !slices.Contains(spec.Gateways, "mesh") {
		return e.Entry
	}
	if len(spec.ExportTo) > 0 {
		e.gap("exportTo", "Gateway API routes have no visibility setting: the HTTPRoute applies to every client of the Service")
	}
	var parents []any
	seen := map[string]bool{}
	for i, h := range spec.Hosts {
		s := c.service(h)
		switch {
		case s != nil && seen[s.Name]:
			continue
		case s != nil:
			seen[s.Name] = true
		}
		if s == nil {
			e.gap(fmt.Sprintf("hosts[%d]", i), fmt.Sprintf("%q is not a Service of namespace %s: a GAMMA HTTPRoute attaches to a Service (external hosts need a ServiceEntry equivalent Ambit does not have)", h, c.ns))
			continue
		}
		parents = append(parents, map[string]any{"group": "", "kind": "Service", "name": s.Name})
	}
	for i := range spec.Tcp {
		e.gap(fmt.Sprintf("tcp[%d]", i), "TCP routes are not converted: ztunnel forwards TCP to the Service as addressed (a TCPRoute would need a waypoint)")
	}
	for i := range spec.Tls {
		e.gap(fmt.Sprintf("tls[%d]", i), "TLS (SNI) routes are not converted: Ambit has no TLSRoute support")
	}
	if len(parents) == 0 {
		return e.Entry
	}
	var rules []any
	for i, r := range spec.Http {
		if rule := c.httpRule(e, vs.Name, fmt.Sprintf("http[%d]", i), i, r); rule != nil {
			rules = append(rules, rule)
		}
	}
	if len(rules) == 0 {
		e.gap("http", "no HTTP route could be converted, so no HTTPRoute is produced")
		return e.Entry
	}
	// The HTTPFaults were added while converting the rules; the route
	// goes first.
	faults := e.Objects
	e.Objects = nil
	e.add(GatewayAPIVersion, "HTTPRoute", vs.Name, c.ns, map[string]any{"parentRefs": parents, "rules": rules})
	e.Objects = append(e.Objects, faults...)
	return e.Entry
}

func (c *converter) httpRule(e *entry, vsName, path string, index int, r *apinet.HTTPRoute) map[string]any {
	rule := map[string]any{}
	if r.Delegate != nil {
		e.gap(path+".delegate", "Gateway API has no route delegation: merge the delegate VirtualService's routes into this one")
		return nil
	}
	if r.DirectResponse != nil {
		e.gap(path+".directResponse", "Gateway API has no direct response: serve it from a backend")
		return nil
	}
	var matches []any
	allPrefix, allExact := len(r.Match) > 0, len(r.Match) > 0
	for j, m := range r.Match {
		hm, ok := httpMatch(e, fmt.Sprintf("%s.match[%d]", path, j), m)
		if !ok {
			e.gap(path, "left out: one of its matches cannot be expressed, and without it the rule would match more requests")
			return nil
		}
		pt, _ := hm["path"].(map[string]any)
		allPrefix = allPrefix && pt != nil && pt["type"] == "PathPrefix"
		allExact = allExact && pt != nil && pt["type"] == "Exact"
		matches = append(matches, hm)
	}
	if len(matches) > 0 {
		rule["matches"] = matches
	}

	var filters []any
	if f := headerFilters(r.Headers); len(f) > 0 {
		filters = append(filters, f...)
	}
	if rw := r.Rewrite; rw != nil {
		u := map[string]any{}
		if rw.Authority != "" {
			u["hostname"] = rw.Authority
		}
		switch {
		case rw.UriRegexRewrite != nil:
			e.gap(path+".rewrite.uriRegexRewrite", "Gateway API's URLRewrite replaces a full path or a matched prefix, not a regular expression")
		case rw.Uri != "" && allPrefix && len(r.Match) == 1:
			u["path"] = map[string]any{"type": "ReplacePrefixMatch", "replacePrefixMatch": rw.Uri}
		case rw.Uri != "" && allExact:
			u["path"] = map[string]any{"type": "ReplaceFullPath", "replaceFullPath": rw.Uri}
		case rw.Uri != "":
			e.gap(path+".rewrite.uri", "URLRewrite of a path needs the rule's only match to be a uri prefix (ReplacePrefixMatch) or every match exact (ReplaceFullPath): split the route")
		}
		if len(u) > 0 {
			filters = append(filters, map[string]any{"type": "URLRewrite", "urlRewrite": u})
		}
	}
	if rd := r.Redirect; rd != nil {
		red := map[string]any{}
		if rd.Scheme != "" {
			red["scheme"] = rd.Scheme
		}
		if rd.Authority != "" {
			red["hostname"] = rd.Authority
		}
		if rd.Uri != "" {
			red["path"] = map[string]any{"type": "ReplaceFullPath", "replaceFullPath": rd.Uri}
		}
		switch p := rd.RedirectPort.(type) {
		case *apinet.HTTPRedirect_Port:
			red["port"] = int64(p.Port)
		case *apinet.HTTPRedirect_DerivePort:
			e.gap(path+".redirect.derivePort", "Gateway API derives the redirect port from the scheme only; set port explicitly if needed")
		}
		code := rd.RedirectCode
		if code == 0 {
			code = 301
		}
		if !slices.Contains([]uint32{301, 302, 303, 307, 308}, code) {
			e.gap(path+".redirect.redirectCode", fmt.Sprintf("%d: Gateway API redirects with 301, 302, 303, 307 or 308 only; 301 is used", code))
			code = 301
		}
		red["statusCode"] = int64(code)
		filters = append(filters, map[string]any{"type": "RequestRedirect", "requestRedirect": red})
	}
	// The HTTPFault is added once the rule is known to be kept.
	var faultSpec map[string]any
	faultName := fmt.Sprintf("%s-fault-%d", vsName, index)
	if r.Fault != nil {
		if spec, ok := fault(e, path+".fault", r.Fault); ok {
			faultSpec = spec
			filters = append(filters, map[string]any{"type": "ExtensionRef",
				"extensionRef": map[string]any{"group": AmbitNetworkingGroup, "kind": "HTTPFault", "name": faultName}})
		}
	}
	if r.Mirror != nil || len(r.Mirrors) > 0 || r.MirrorPercent != nil || r.MirrorPercentage != nil {
		e.gap(path+".mirror", "Ambit's waypoint does not mirror traffic (no RequestMirror filter): the mirror is dropped")
	}
	if r.CorsPolicy != nil {
		e.gap(path+".corsPolicy", "Ambit's waypoint has no CORS filter: answer CORS in the application")
	}
	if len(filters) > 0 {
		rule["filters"] = filters
	}

	var backends []any
	for j, d := range r.Route {
		bp := fmt.Sprintf("%s.route[%d]", path, j)
		b, ok := c.backendRef(e, bp, d)
		if !ok {
			e.gap(path, "left out: one of its destinations cannot be expressed, and without it the others would take its share of the traffic")
			return nil
		}
		if len(r.Route) > 1 || d.Weight != 0 {
			b["weight"] = int64(d.Weight)
		}
		backends = append(backends, b)
	}
	if len(backends) > 0 {
		rule["backendRefs"] = backends
	}
	if len(backends) == 0 && r.Redirect == nil {
		e.gap(path, "left out: it has neither destinations nor a redirect")
		return nil
	}

	timeouts := map[string]any{}
	e.setDuration(timeouts, "request", path+".timeout", r.Timeout)
	if rt := r.Retries; rt != nil {
		retry := map[string]any{"attempts": int64(rt.Attempts)}
		e.setDuration(timeouts, "backendRequest", path+".retries.perTryTimeout", rt.PerTryTimeout)
		e.setDuration(retry, "backoff", path+".retries.backoff", rt.Backoff)
		codes, rest := retryCodes(rt.RetryOn)
		if len(codes) > 0 {
			retry["codes"] = codes
		}
		if len(rest) > 0 {
			e.gap(path+".retries.retryOn", fmt.Sprintf("%s: Gateway API retries on listed HTTP status codes only (gateway-error becomes 502, 503, 504): list the codes to retry on (5xx: 500, 502, 503, 504)", strings.Join(rest, ",")))
		}
		if rt.RetryRemoteLocalities != nil || rt.RetryIgnorePreviousHosts != nil {
			e.gap(path+".retries", "retryRemoteLocalities and retryIgnorePreviousHosts have no Gateway API equivalent")
		}
		rule["retry"] = retry
		if c.httpRouteCRD == HTTPRouteCRDStandard {
			e.gap(path+".retries", "the cluster's HTTPRoute CRD is the standard channel's, without rules[].retry: the apiserver drops it and the waypoint uses its default retries; install the experimental one (ambitctl install --set gatewayAPI.channel=experimental) to keep it")
		}
	}
	if r.Timeout != nil && r.GetRetries().GetPerTryTimeout() != nil && timeouts["backendRequest"] != nil && timeouts["request"] != "0s" &&
		r.Retries.PerTryTimeout.AsDuration() > r.Timeout.AsDuration() {
		delete(timeouts, "backendRequest")
		e.gap(path+".retries.perTryTimeout", "longer than the route's timeout: Gateway API requires timeouts.backendRequest ≤ timeouts.request, so it is left out")
	}
	if len(timeouts) > 0 {
		rule["timeouts"] = timeouts
	}
	if faultSpec != nil {
		e.add(AmbitNetworkingAPI, "HTTPFault", faultName, c.ns, faultSpec)
	}
	return rule
}

// retryCodes splits Istio's retryOn into HTTP status codes and the
// conditions that are not codes.
func retryCodes(retryOn string) (codes []any, rest []string) {
	seen := map[int64]bool{}
	addCode := func(c int64) {
		if !seen[c] {
			seen[c] = true
			codes = append(codes, c)
		}
	}
	for _, tok := range strings.Split(retryOn, ",") {
		tok = strings.TrimSpace(tok)
		switch {
		case tok == "" || tok == "retriable-status-codes":
		case tok == "gateway-error":
			addCode(502)
			addCode(503)
			addCode(504)
		default:
			if n, err := strconv.ParseInt(tok, 10, 32); err == nil && n >= 400 && n <= 599 {
				addCode(n)
			} else {
				rest = append(rest, tok)
			}
		}
	}
	slices.SortFunc(codes, func(a, b any) int { return int(a.(int64) - b.(int64)) })
	return codes, rest
}

func headerFilters(h *apinet.Headers) []any {
	if h == nil {
		return nil
	}
	var out []any
	if m := headerModifier(h.Request); m != nil {
		out = append(out, map[string]any{"type": "RequestHeaderModifier", "requestHeaderModifier": m})
	}
	if m := headerModifier(h.Response); m != nil {
		out = append(out, map[string]any{"type": "ResponseHeaderModifier", "responseHeaderModifier": m})
	}
	return out
}

func headerModifier(op *apinet.Headers_HeaderOperations) map[string]any {
	if op == nil {
		return nil
	}
	m := map[string]any{}
	kv := func(in map[string]string) []any {
		var out []any
		for _, k := range sortedKeys(in) {
			out = append(out, map[string]any{"name": k, "value": in[k]})
		}
		return out
	}
	if len(op.Set) > 0 {
		m["set"] = kv(op.Set)
	}
	if len(op.Add) > 0 {
		m["add"] = kv(op.Add)
	}
	if len(op.Remove) > 0 {
		m["remove"] = anyStrings(op.Remove)
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// stringMatch converts an Istio StringMatch to a Gateway API (type,
// value): exact → Exact, regex → RegularExpression, prefix →
// RegularExpression ^<quoted prefix>.*.
func stringMatch(m *apinet.StringMatch) (string, string) {
	switch v := m.GetMatchType().(type) {
	case *apinet.StringMatch_Exact:
		return "Exact", v.Exact
	case *apinet.StringMatch_Regex:
		return "RegularExpression", v.Regex
	case *apinet.StringMatch_Prefix:
		return "RegularExpression", "^" + regexp.QuoteMeta(v.Prefix) + ".*"
	}
	return "", ""
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

func httpMatch(e *entry, path string, m *apinet.HTTPMatchRequest) (map[string]any, bool) {
	out := map[string]any{}
	ok := true
	bad := func(field, reason string) {
		e.gap(path+"."+field, reason)
		ok = false
	}
	if m.Uri != nil {
		switch v := m.Uri.GetMatchType().(type) {
		case *apinet.StringMatch_Exact:
			out["path"] = map[string]any{"type": "Exact", "value": v.Exact}
		case *apinet.StringMatch_Prefix:
			out["path"] = map[string]any{"type": "PathPrefix", "value": v.Prefix}
		case *apinet.StringMatch_Regex:
			out["path"] = map[string]any{"type": "RegularExpression", "value": v.Regex}
		}
	}
	if m.Method != nil {
		if v, isExact := m.Method.GetMatchType().(*apinet.StringMatch_Exact); isExact && slices.Contains(httpMethods, v.Exact) {
			out["method"] = v.Exact
		} else {
			bad("method", "Gateway API matches one exact method (GET, POST, ...): split the route per method")
		}
	}
	for _, f := range []struct {
		key, what string
		in        map[string]*apinet.StringMatch
	}{{"headers", "header", m.Headers}, {"queryParams", "query parameter", m.QueryParams}} {
		var list []any
		for _, k := range sortedKeys(f.in) {
			t, v := stringMatch(f.in[k])
			if t == "" {
				bad(f.key+"."+k, "a "+f.what+" presence match has no Gateway API equivalent (use a RegularExpression .*)")
				continue
			}
			list = append(list, map[string]any{"name": k, "type": t, "value": v})
		}
		if len(list) > 0 {
			out[f.key] = list
		}
	}
	if m.Scheme != nil {
		bad("scheme", "Gateway API routes do not match the scheme")
	}
	if m.Authority != nil {
		bad("authority", "GAMMA routes attach to a Service and do not match the authority (Host)")
	}
	if m.Port != 0 {
		bad("port", "convert to a parentRef port: split the VirtualService per port")
	}
	if len(m.SourceLabels) > 0 || m.SourceNamespace != "" || len(m.Gateways) > 0 {
		bad("sourceLabels", "Gateway API routes do not match the client; a route applies to every client of the Service")
	}
	if len(m.WithoutHeaders) > 0 {
		bad("withoutHeaders", "Gateway API has no negative header match")
	}
	if m.IgnoreUriCase {
		bad("ignoreUriCase", "Gateway API path matches are case-sensitive (use a RegularExpression with (?i))")
	}
	return out, ok
}

// backendRef converts a route destination to a Service backendRef.
func (c *converter) backendRef(e *entry, path string, d *apinet.HTTPRouteDestination) (map[string]any, bool) {
	dst := d.Destination
	if dst == nil {
		e.gap(path, "no destination")
		return nil, false
	}
	s := c.service(dst.Host)
	if s == nil {
		e.gap(path+".destination.host", fmt.Sprintf("%q is not a Service of namespace %s", dst.Host, c.ns))
		return nil, false
	}
	if dst.Subset != "" {
		sub, reason := c.subsetService(s, dst.Host, dst.Subset)
		if sub == nil {
			e.gap(path+".destination.subset", reason)
			return nil, false
		}
		s = sub
	}
	port := dst.GetPort().GetNumber()
	if port == 0 {
		if len(s.Spec.Ports) != 1 {
			e.gap(path+".destination.port", fmt.Sprintf("Service %s has %d ports: a backendRef needs the port", s.Name, len(s.Spec.Ports)))
			return nil, false
		}
		port = uint32(s.Spec.Ports[0].Port)
	}
	b := map[string]any{"name": s.Name, "port": int64(port)}
	if f := headerFilters(d.Headers); len(f) > 0 {
		b["filters"] = f
	}
	return b, true
}

// subsetService finds the per-version Service of a DestinationRule
// subset: the Service whose selector is exactly the host Service's
// selector plus the subset's labels.
func (c *converter) subsetService(host *corev1.Service, hostName, subset string) (*corev1.Service, string) {
	for _, dr := range c.rules {
		if s := c.service(dr.Spec.Host); s == nil || s.Name != host.Name {
			continue
		}
		for _, sub := range dr.Spec.Subsets {
			if sub.Name != subset {
				continue
			}
			sel := map[string]string{}
			for k, v := range host.Spec.Selector {
				sel[k] = v
			}
			for k, v := range sub.Labels {
				sel[k] = v
			}
			if s := c.serviceWithSelector(sel); s != nil {
				return s, ""
			}
			return nil, fmt.Sprintf("Gateway API routes to Services, not subsets: create a Service per subset selecting its labels (%s; subset %s of DestinationRule %s) and run the plan again", labelString(sel), subset, dr.Name)
		}
	}
	return nil, fmt.Sprintf("no DestinationRule of namespace %s defines subset %q of %s", c.ns, subset, hostName)
}

// grpcCodes are the gRPC status names Istio accepts in abort.grpcStatus.
var grpcCodes = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
	"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// percentage converts Istio's percentage (a double, or the deprecated
// integer percent) to HTTPFault's whole percent; unset stays unset (100).
func percentage(e *entry, path string, p *apinet.Percent, deprecated int32) (any, bool) {
	if p == nil {
		if deprecated != 0 {
			return int64(deprecated), true
		}
		return nil, true
	}
	if p.Value != math.Trunc(p.Value) {
		e.gap(path+".percentage", fmt.Sprintf("%g: HTTPFault takes a whole percentage", p.Value))
		return nil, false
	}
	return int64(p.Value), true
}

func fault(e *entry, path string, f *apinet.HTTPFaultInjection) (map[string]any, bool) {
	spec := map[string]any{}
	ok := true
	if d := f.Delay; d != nil {
		delay := map[string]any{}
		if fd, isFixed := d.HttpDelayType.(*apinet.HTTPFaultInjection_Delay_FixedDelay); isFixed {
			if s, good := duration(fd.FixedDelay); good {
				delay["fixedDelay"] = s
			} else {
				e.gap(path+".delay.fixedDelay", "not a whole number of milliseconds")
				ok = false
			}
		} else {
			e.gap(path+".delay.exponentialDelay", "HTTPFault delays are fixed")
			ok = false
		}
		p, good := percentage(e, path+".delay", d.Percentage, d.Percent)
		ok = ok && good
		if p != nil {
			delay["percentage"] = p
		}
		spec["delay"] = delay
	}
	if a := f.Abort; a != nil {
		abort := map[string]any{}
		switch v := a.ErrorType.(type) {
		case *apinet.HTTPFaultInjection_Abort_HttpStatus:
			abort["httpStatus"] = int64(v.HttpStatus)
		case *apinet.HTTPFaultInjection_Abort_GrpcStatus:
			if i := slices.Index(grpcCodes, v.GrpcStatus); i >= 0 {
				abort["grpcStatus"] = int64(i)
			} else {
				e.gap(path+".abort.grpcStatus", fmt.Sprintf("%q is not a gRPC status name", v.GrpcStatus))
				ok = false
			}
		default:
			e.gap(path+".abort.http2Error", "HTTPFault aborts with an HTTP or gRPC status, not an HTTP/2 error")
			ok = false
		}
		p, good := percentage(e, path+".abort", a.Percentage, 0)
		ok = ok && good
		if p != nil {
			abort["percentage"] = p
		}
		spec["abort"] = abort
	}
	if !ok {
		e.gap(path, "no HTTPFault is produced: the fault is dropped")
	}
	return spec, ok
}
