package migrate

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	apisec "istio.io/api/security/v1beta1"
	apitype "istio.io/api/type/v1beta1"
	clisec "istio.io/client-go/pkg/apis/security/v1"
)

// whenKey matches the condition keys Ambit's AuthorizationPolicy knows.
var whenKey = regexp.MustCompile(`^(request\.headers\[[^\]]+\]|source\.principal|source\.namespace|source\.ip|destination\.port)$`)

// authorizationPolicy converts an Istio AuthorizationPolicy to Ambit's.
// A rule with a field Ambit does not have is left out whole (for ALLOW
// that denies more, for DENY it allows more: both are reported). A
// selector policy with HTTP fields (methods, paths, hosts, request
// headers) is enforced by a waypoint, so it targets the Services whose
// pods it selects.
func (c *converter) authorizationPolicy(ap *clisec.AuthorizationPolicy) Entry {
	e := &entry{Entry: Entry{Source: Ref{KindAuthorizationPolicy, ap.Name}}}
	spec := &ap.Spec
	if spec.Action == apisec.AuthorizationPolicy_CUSTOM {
		e.gap("action", "CUSTOM (external authorization) is not supported by Ambit: the policy is not converted; the requests it sent to the provider are not checked")
		return e.Entry
	}
	out := map[string]any{"action": spec.Action.String()}
	var rules []any
	l7 := false
	for i, r := range spec.Rules {
		rule, ruleL7, ok := authzRule(e, fmt.Sprintf("rules[%d]", i), r)
		if !ok {
			what := map[apisec.AuthorizationPolicy_Action]string{
				apisec.AuthorizationPolicy_ALLOW: "the policy allows fewer requests",
				apisec.AuthorizationPolicy_DENY:  "the policy DENIES FEWER requests than under Istio",
				apisec.AuthorizationPolicy_AUDIT: "the policy audits fewer requests",
			}[spec.Action]
			e.gap(fmt.Sprintf("rules[%d]", i), "left out: "+what)
			continue
		}
		l7 = l7 || ruleL7
		rules = append(rules, rule)
	}
	if len(spec.Rules) > 0 && len(rules) == 0 {
		if spec.Action != apisec.AuthorizationPolicy_ALLOW {
			e.gap("rules", "no rule could be converted: the policy is not converted")
			return e.Entry
		}
		e.gap("rules", "no rule could be converted: the ALLOW policy is kept without rules, which allows nothing")
	}
	if len(rules) > 0 {
		out["rules"] = rules
	}

	targets := spec.TargetRefs
	if spec.TargetRef != nil {
		targets = append([]*apitype.PolicyTargetReference{spec.TargetRef}, targets...)
	}
	var refs []any
	for i, t := range targets {
		switch {
		case t.Kind == "Service" && t.Group == "":
			refs = append(refs, map[string]any{"group": "", "kind": "Service", "name": t.Name})
		case t.Kind == "Gateway" && t.Group == "gateway.networking.k8s.io":
			refs = append(refs, map[string]any{"group": t.Group, "kind": "Gateway", "name": t.Name})
		default:
			e.gap(fmt.Sprintf("targetRefs[%d]", i), fmt.Sprintf("%s %s: Ambit policies target Services and Gateways (waypoints)", t.Kind, t.Name))
		}
	}
	switch {
	case len(targets) > 0 && len(refs) == 0:
		e.gap("targetRefs", "no target could be converted: the policy is not converted"+notConverted(spec.Action))
		return e.Entry
	case len(refs) > 0:
		out["targetRefs"] = refs
	case l7:
		labels := spec.GetSelector().GetMatchLabels()
		names := c.servicesSelecting(labels)
		if len(names) == 0 {
			scope := "the namespace's pods"
			if len(labels) > 0 {
				scope = "pods " + labelString(labels)
			}
			e.gap("selector", fmt.Sprintf("HTTP fields are enforced by a waypoint, which policies reach through targetRefs, and no Service of namespace %s selects only %s: create one (or target the waypoint) and run the plan again%s", c.ns, scope, notConverted(spec.Action)))
			return e.Entry
		}
		for _, n := range names {
			refs = append(refs, map[string]any{"group": "", "kind": "Service", "name": n})
		}
		out["targetRefs"] = refs
	case spec.Selector != nil:
		out["selector"] = map[string]any{"matchLabels": anyMap(spec.Selector.MatchLabels)}
	}
	e.add(AmbitSecurityAPI, "AuthorizationPolicy", ap.Name, c.ns, out)
	return e.Entry
}

func authzRule(e *entry, path string, r *apisec.Rule) (map[string]any, bool, bool) {
	rule := map[string]any{}
	ok, l7 := true, false
	bad := func(field, reason string) {
		e.gap(path+"."+field, reason)
		ok = false
	}
	var from []any
	for i, f := range r.From {
		s := f.GetSource()
		fp := fmt.Sprintf("from[%d].source.", i)
		src := map[string]any{}
		setAll(src, fields{{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals},
			{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces},
			{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks}})
		if len(s.RequestPrincipals)+len(s.NotRequestPrincipals) > 0 {
			bad(fp+"requestPrincipals", "Ambit does not validate JWTs (no RequestAuthentication)")
		}
		if len(s.RemoteIpBlocks)+len(s.NotRemoteIpBlocks) > 0 {
			bad(fp+"remoteIpBlocks", "Ambit does not read X-Forwarded-For: use ipBlocks (the peer's address)")
		}
		if len(s.ServiceAccounts)+len(s.NotServiceAccounts) > 0 {
			bad(fp+"serviceAccounts", "write them as principals: cluster.local/ns/<namespace>/sa/<name>")
		}
		from = append(from, map[string]any{"source": src})
	}
	if len(from) > 0 {
		rule["from"] = from
	}
	var to []any
	for _, t := range r.To {
		o := t.GetOperation()
		op := map[string]any{}
		setAll(op, fields{{"ports", o.Ports}, {"notPorts", o.NotPorts},
			{"methods", o.Methods}, {"notMethods", o.NotMethods},
			{"paths", o.Paths}, {"notPaths", o.NotPaths},
			{"hosts", o.Hosts}, {"notHosts", o.NotHosts}})
		if len(o.Methods)+len(o.NotMethods)+len(o.Paths)+len(o.NotPaths)+len(o.Hosts)+len(o.NotHosts) > 0 {
			l7 = true
		}
		to = append(to, map[string]any{"operation": op})
	}
	if len(to) > 0 {
		rule["to"] = to
	}
	var when []any
	for i, w := range r.When {
		if !whenKey.MatchString(w.Key) {
			bad(fmt.Sprintf("when[%d]", i), fmt.Sprintf("key %q: Ambit conditions are request.headers[<name>], source.principal, source.namespace, source.ip and destination.port", w.Key))
			continue
		}
		if strings.HasPrefix(w.Key, "request.") {
			l7 = true
		}
		cond := map[string]any{"key": w.Key}
		setAll(cond, fields{{"values", w.Values}, {"notValues", w.NotValues}})
		when = append(when, cond)
	}
	if len(when) > 0 {
		rule["when"] = when
	}
	return rule, l7, ok
}

// peerAuthentication copies a PeerAuthentication: Ambit's has the same
// fields and modes; DISABLE is reported, as Ambit treats it as PERMISSIVE.
func (c *converter) peerAuthentication(pa *clisec.PeerAuthentication) Entry {
	e := &entry{Entry: Entry{Source: Ref{KindPeerAuthentication, pa.Name}}}
	spec := map[string]any{}
	if sel := pa.Spec.GetSelector().GetMatchLabels(); len(sel) > 0 {
		spec["selector"] = map[string]any{"matchLabels": anyMap(sel)}
	}
	const disabled = "DISABLE is kept, but Ambit treats it as PERMISSIVE: mTLS (HBONE) connections are accepted too"
	if m := pa.Spec.Mtls; m != nil {
		spec["mtls"] = map[string]any{"mode": m.Mode.String()}
		if m.Mode == apisec.PeerAuthentication_MutualTLS_DISABLE {
			e.gap("mtls.mode", disabled)
		}
	}
	if len(pa.Spec.PortLevelMtls) > 0 {
		ports := map[string]any{}
		var keys []uint32
		for p := range pa.Spec.PortLevelMtls {
			keys = append(keys, p)
		}
		slices.Sort(keys)
		for _, p := range keys {
			mode := pa.Spec.PortLevelMtls[p].GetMode()
			ports[fmt.Sprint(p)] = map[string]any{"mode": mode.String()}
			if mode == apisec.PeerAuthentication_MutualTLS_DISABLE {
				e.gap(fmt.Sprintf("portLevelMtls[%d].mode", p), disabled)
			}
		}
		spec["portLevelMtls"] = ports
	}
	e.add(AmbitSecurityAPI, "PeerAuthentication", pa.Name, c.ns, spec)
	return e.Entry
}

// fields are string-list fields copied under the same names.
type fields []struct {
	key    string
	values []string
}

func setAll(m map[string]any, fs fields) {
	for _, f := range fs {
		if len(f.values) > 0 {
			m[f.key] = anyStrings(f.values)
		}
	}
}

// notConverted says what leaving out a whole policy does.
func notConverted(a apisec.AuthorizationPolicy_Action) string {
	if a == apisec.AuthorizationPolicy_ALLOW {
		return "; until then the workloads are not restricted by this ALLOW policy"
	}
	return ""
}
