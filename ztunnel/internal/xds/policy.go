package xds

import (
	"errors"
	"fmt"
	"net/netip"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/ztunnel/internal/model"
)

// convertAuthorization converts an Authorization resource (already
// structurally checked by checkAuthorization) into a model.Policy. Unknown
// enum values are errors: a policy ztunnel cannot read must be NACKed, not
// half-enforced.
func convertAuthorization(a *workloadv1alpha1.Authorization) (model.Policy, error) {
	p := model.Policy{Name: a.GetName(), Namespace: a.GetNamespace()}
	switch a.GetScope() {
	case workloadv1alpha1.Scope_GLOBAL:
		p.Scope = model.ScopeGlobal
	case workloadv1alpha1.Scope_NAMESPACE:
		p.Scope = model.ScopeNamespace
	case workloadv1alpha1.Scope_WORKLOAD_SELECTOR:
		p.Scope = model.ScopeWorkloadSelector
	default:
		return model.Policy{}, fmt.Errorf("unknown scope %d", a.GetScope())
	}
	if pa := a.GetPeerAuthentication(); pa != nil {
		mode, err := convertMTLSMode(pa.GetMode())
		if err != nil {
			return model.Policy{}, fmt.Errorf("peer_authentication.mode: %w", err)
		}
		p.PeerAuth = &model.PeerAuthentication{Mode: mode}
		for port, m := range pa.GetPortLevelMtls() {
			if port == 0 || port > 65535 {
				return model.Policy{}, fmt.Errorf("peer_authentication.port_level_mtls: port %d is not in 1..65535", port)
			}
			mode, err := convertMTLSMode(m)
			if err != nil {
				return model.Policy{}, fmt.Errorf("peer_authentication.port_level_mtls[%d]: %w", port, err)
			}
			if p.PeerAuth.PortLevel == nil {
				p.PeerAuth.PortLevel = map[uint16]model.MTLSMode{}
			}
			p.PeerAuth.PortLevel[uint16(port)] = mode
		}
		return p, nil
	}
	switch a.GetAction() {
	case workloadv1alpha1.Action_ALLOW:
		p.Action = model.ActionAllow
	case workloadv1alpha1.Action_DENY:
		p.Action = model.ActionDeny
	case workloadv1alpha1.Action_AUDIT:
		p.Action = model.ActionAudit
	default:
		return model.Policy{}, fmt.Errorf("unknown action %d", a.GetAction())
	}
	for i, r := range a.GetRules() {
		var rule model.Rule
		for j, c := range r.GetClauses() {
			if len(c.GetMatches()) == 0 {
				return model.Policy{}, fmt.Errorf("rules[%d].clauses[%d] has no matches", i, j)
			}
			var clause model.Clause
			for k, m := range c.GetMatches() {
				mm, err := convertMatch(m)
				if err != nil {
					return model.Policy{}, fmt.Errorf("rules[%d].clauses[%d].matches[%d]: %w", i, j, k, err)
				}
				clause.Matches = append(clause.Matches, mm)
			}
			rule.Clauses = append(rule.Clauses, clause)
		}
		p.Rules = append(p.Rules, rule)
	}
	return p, nil
}

func convertMTLSMode(m workloadv1alpha1.MTLSMode) (model.MTLSMode, error) {
	switch m {
	case workloadv1alpha1.MTLSMode_UNSET:
		return model.MTLSUnset, nil
	case workloadv1alpha1.MTLSMode_STRICT:
		return model.MTLSStrict, nil
	case workloadv1alpha1.MTLSMode_PERMISSIVE:
		return model.MTLSPermissive, nil
	case workloadv1alpha1.MTLSMode_DISABLE:
		return model.MTLSDisable, nil
	}
	return model.MTLSUnset, fmt.Errorf("unknown mTLS mode %d", m)
}

func convertMatch(m *workloadv1alpha1.Match) (model.Match, error) {
	var (
		out  model.Match
		errs []error
	)
	strs := func(field string, in []*workloadv1alpha1.StringMatch) []model.StringMatch {
		var sms []model.StringMatch
		for _, sm := range in {
			switch t := sm.GetMatchType().(type) {
			case *workloadv1alpha1.StringMatch_Exact:
				sms = append(sms, model.StringMatch{Kind: model.MatchExact, Value: t.Exact})
			case *workloadv1alpha1.StringMatch_Prefix:
				sms = append(sms, model.StringMatch{Kind: model.MatchPrefix, Value: t.Prefix})
			case *workloadv1alpha1.StringMatch_Suffix:
				sms = append(sms, model.StringMatch{Kind: model.MatchSuffix, Value: t.Suffix})
			case *workloadv1alpha1.StringMatch_Presence:
				sms = append(sms, model.StringMatch{Kind: model.MatchPresence})
			default:
				errs = append(errs, fmt.Errorf("%s: a StringMatch sets no match kind", field))
			}
		}
		return sms
	}
	prefixes := func(field string, in []*workloadv1alpha1.IPPrefix) []netip.Prefix {
		var ps []netip.Prefix
		for _, p := range in {
			ip, ok := netip.AddrFromSlice(p.GetAddress())
			if !ok || ip.Is4In6() {
				errs = append(errs, fmt.Errorf("%s: address of %d bytes: want 4 (IPv4) or 16 (IPv6, not IPv4-mapped)", field, len(p.GetAddress())))
				continue
			}
			pfx, err := ip.Prefix(int(min(p.GetLength(), 1<<16)))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: prefix length %d does not fit %s", field, p.GetLength(), ip))
				continue
			}
			ps = append(ps, pfx)
		}
		return ps
	}
	ports := func(field string, in []uint32) []uint16 {
		var out []uint16
		for _, p := range in {
			if p == 0 || p > 65535 {
				errs = append(errs, fmt.Errorf("%s: port %d is not in 1..65535", field, p))
				continue
			}
			out = append(out, uint16(p))
		}
		return out
	}
	out.Principals = strs("principals", m.GetPrincipals())
	out.NotPrincipals = strs("not_principals", m.GetNotPrincipals())
	out.Namespaces = strs("namespaces", m.GetNamespaces())
	out.NotNamespaces = strs("not_namespaces", m.GetNotNamespaces())
	out.SourceIPs = prefixes("source_ips", m.GetSourceIps())
	out.NotSourceIPs = prefixes("not_source_ips", m.GetNotSourceIps())
	out.DestinationPorts = ports("destination_ports", m.GetDestinationPorts())
	out.NotDestinationPorts = ports("not_destination_ports", m.GetNotDestinationPorts())
	return out, errors.Join(errs...)
}
