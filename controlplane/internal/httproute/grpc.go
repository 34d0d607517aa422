package httproute

import (
	"fmt"
	"regexp"
	"strings"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/waypointxds"
)

// A GRPCRoute is compiled as the HTTPRoute it means (XDS.md §7.2): a gRPC
// call is an HTTP/2 POST to /<service>/<method>, so a method match is a
// path match, a header match a header match, and the filters GRPCRoute
// shares with HTTPRoute are the same filters. What differs is checked
// here: a gRPC parent port must be HTTP/2 end to end (appProtocol grpc,
// http2 or kubernetes.io/h2c, or a port named grpc-*/http2-*), the
// precedence (service, then method characters, then headers), and the
// route names (prefixed "grpc.").

// CompileGRPC compiles a GRPCRoute like Compile does an HTTPRoute (an
// ExtensionRef filter to an HTTPFault included).
func CompileGRPC(rt *gwapiv1.GRPCRoute, lookup Lookup, faults FaultLookup) Compiled {
	h, keys, err := grpcAsHTTP(rt)
	// Only HTTP/2 ports carry gRPC: the others look like TCP ports to the
	// HTTPRoute compile, so it never attaches to them.
	http2Only := func(r ServiceRef) (Service, bool) {
		s, ok := lookup(r)
		if !ok {
			return s, false
		}
		ports := make([]Port, len(s.Ports))
		for i, p := range s.Ports {
			ports[i] = p
			if p.Protocol != waypointxds.ProtocolHTTP2 && p.Protocol != waypointxds.ProtocolGRPC {
				ports[i].Protocol = waypointxds.ProtocolTCP
			}
		}
		s.Ports = ports
		return s, true
	}
	c := Compile(h, http2Only, faults)
	c.Ref.Kind = KindGRPCRoute
	for i := range c.Parents {
		p := &c.Parents[i]
		if err != nil {
			p.Accepted = condition(gwapiv1.RouteConditionAccepted, false, gwapiv1.RouteReasonUnsupportedValue, rt.Generation, "%v", err)
			p.Rules, p.Ports, p.Backends = nil, nil, nil
			continue
		}
		if p.Accepted.Reason == string(gwapiv1.RouteReasonUnsupportedProtocol) {
			where := "Service " + p.Service.String() + " has no HTTP/2 port"
			if p.Port != 0 {
				where = fmt.Sprintf("port %d of Service %s is not an HTTP/2 port", p.Port, p.Service)
			}
			p.Accepted.Message = where + ": gRPC needs HTTP/2 to the backends; set appProtocol: grpc (or http2, kubernetes.io/h2c), or name the port grpc or grpc-*"
		}
		for j := range p.Rules {
			r := &p.Rules[j]
			k := keys[[2]int{r.key.rule, r.key.idx}]
			r.key.pathKind, r.key.pathLen, r.key.method = 0, k.service<<16|k.method, false
			r.Name = "grpc." + r.Name
		}
	}
	return c
}

// grpcKey is what orders gRPC matches: the characters of the service and
// of the method they name.
type grpcKey struct{ service, method int }

// grpcAsHTTP returns the HTTPRoute rt means, with the precedence key of
// every (rule, match). err is a match the waypoint cannot express (every
// parent is then rejected with it).
func grpcAsHTTP(rt *gwapiv1.GRPCRoute) (*gwapiv1.HTTPRoute, map[[2]int]grpcKey, error) {
	h := &gwapiv1.HTTPRoute{ObjectMeta: *rt.ObjectMeta.DeepCopy()}
	h.Spec.ParentRefs = rt.Spec.ParentRefs
	keys := map[[2]int]grpcKey{}
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	for ri, rule := range rt.Spec.Rules {
		hr := gwapiv1.HTTPRouteRule{Name: rule.Name, SessionPersistence: rule.SessionPersistence}
		for fi, f := range rule.Filters {
			hf, err := grpcFilter(f)
			if err != nil {
				fail(fmt.Errorf("rule %d: filter %d: %w", ri, fi, err))
			}
			hr.Filters = append(hr.Filters, hf)
		}
		for bi, br := range rule.BackendRefs {
			hb := gwapiv1.HTTPBackendRef{BackendRef: br.BackendRef}
			for fi, f := range br.Filters {
				hf, err := grpcFilter(f)
				if err != nil {
					fail(fmt.Errorf("rule %d: backendRef %d: filter %d: %w", ri, bi, fi, err))
				}
				hb.Filters = append(hb.Filters, hf)
			}
			hr.BackendRefs = append(hr.BackendRefs, hb)
		}
		for mi, m := range rule.Matches {
			hm, k, err := grpcMatch(m)
			if err != nil {
				fail(fmt.Errorf("rule %d: match %d: %w", ri, mi, err))
			}
			keys[[2]int{ri, mi}] = k
			hr.Matches = append(hr.Matches, hm)
		}
		h.Spec.Rules = append(h.Spec.Rules, hr)
	}
	return h, keys, firstErr
}

// grpcMatch converts a method and header match. A method match with
// service and method is the exact path /service/method; with the service
// only, the path prefix /service (whole segments); with the method only,
// a path regex; a RegularExpression match is the path regex
// /(service)/(method), an absent part matching any segment.
func grpcMatch(m gwapiv1.GRPCRouteMatch) (gwapiv1.HTTPRouteMatch, grpcKey, error) {
	var out gwapiv1.HTTPRouteMatch
	var k grpcKey
	if mm := m.Method; mm != nil {
		svc, method := deref(mm.Service), deref(mm.Method)
		k = grpcKey{len(svc), len(method)}
		typ := gwapiv1.GRPCMethodMatchExact
		if mm.Type != nil {
			typ = *mm.Type
		}
		var pt gwapiv1.PathMatchType
		var path string
		switch typ {
		case gwapiv1.GRPCMethodMatchExact:
			for _, part := range []string{svc, method} {
				if strings.Contains(part, "/") {
					return out, k, fmt.Errorf("method match %q contains a /", part)
				}
			}
			switch {
			case svc != "" && method != "":
				pt, path = gwapiv1.PathMatchExact, "/"+svc+"/"+method
			case svc != "":
				pt, path = gwapiv1.PathMatchPathPrefix, "/"+svc
			case method != "":
				pt, path = gwapiv1.PathMatchRegularExpression, "/[^/]+/"+regexp.QuoteMeta(method)
			default:
				return out, k, fmt.Errorf("an Exact method match needs a service or a method")
			}
		case gwapiv1.GRPCMethodMatchRegularExpression:
			part := func(re string) (string, error) {
				if re == "" {
					return "[^/]+", nil
				}
				if _, err := regexp.Compile(re); err != nil {
					return "", fmt.Errorf("method regular expression %q: %w", re, err)
				}
				return "(?:" + re + ")", nil
			}
			s, err := part(svc)
			if err != nil {
				return out, k, err
			}
			me, err := part(method)
			if err != nil {
				return out, k, err
			}
			pt, path = gwapiv1.PathMatchRegularExpression, "/"+s+"/"+me
		default:
			return out, k, fmt.Errorf("method match type %q is not Exact or RegularExpression", typ)
		}
		out.Path = &gwapiv1.HTTPPathMatch{Type: &pt, Value: &path}
	}
	for _, hm := range m.Headers {
		h := gwapiv1.HTTPHeaderMatch{Name: gwapiv1.HTTPHeaderName(hm.Name), Value: hm.Value}
		if hm.Type != nil {
			t := gwapiv1.HeaderMatchType(*hm.Type)
			h.Type = &t
		}
		out.Headers = append(out.Headers, h)
	}
	return out, k, nil
}

// grpcFilter converts a GRPCRoute filter into the HTTPRoute filter of the
// same meaning.
func grpcFilter(f gwapiv1.GRPCRouteFilter) (gwapiv1.HTTPRouteFilter, error) {
	out := gwapiv1.HTTPRouteFilter{
		RequestHeaderModifier:  f.RequestHeaderModifier,
		ResponseHeaderModifier: f.ResponseHeaderModifier,
		RequestMirror:          f.RequestMirror,
		ExtensionRef:           f.ExtensionRef,
	}
	switch f.Type {
	case gwapiv1.GRPCRouteFilterRequestHeaderModifier:
		out.Type = gwapiv1.HTTPRouteFilterRequestHeaderModifier
	case gwapiv1.GRPCRouteFilterResponseHeaderModifier:
		out.Type = gwapiv1.HTTPRouteFilterResponseHeaderModifier
	case gwapiv1.GRPCRouteFilterRequestMirror:
		out.Type = gwapiv1.HTTPRouteFilterRequestMirror
	case gwapiv1.GRPCRouteFilterExtensionRef:
		out.Type = gwapiv1.HTTPRouteFilterExtensionRef
	default:
		return out, fmt.Errorf("filter type %q is not RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or ExtensionRef", f.Type)
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
