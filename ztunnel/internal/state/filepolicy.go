package state

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"ambit.dev/ztunnel/internal/model"
)

// FilePolicy is one Authorization policy of the workloads file, shaped like
// the Authorization resource of authorization.proto (same semantics):
// either an access policy (action, rules) or a peer-authentication policy
// (peerAuthentication, no rules).
type FilePolicy struct {
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
	// Scope is GLOBAL, NAMESPACE or WORKLOAD_SELECTOR (required).
	Scope string `yaml:"scope"`
	// Action is ALLOW (default), DENY or AUDIT.
	Action             string                  `yaml:"action"`
	Rules              []FileRule              `yaml:"rules"`
	PeerAuthentication *FilePeerAuthentication `yaml:"peerAuthentication"`
}

// FilePeerAuthentication sets mTLS modes: STRICT, PERMISSIVE, DISABLE or
// empty (inherit); port keys are target ports.
type FilePeerAuthentication struct {
	Mode          string            `yaml:"mode"`
	PortLevelMTLS map[string]string `yaml:"portLevelMtls"`
}

// FileRule matches when all its clauses match.
type FileRule struct {
	Clauses []FileClause `yaml:"clauses"`
}

// FileClause matches when any of its matches matches (at least one).
type FileClause struct {
	Matches []FileMatch `yaml:"matches"`
}

// FileMatch is a Match; IP blocks are CIDRs or single addresses.
type FileMatch struct {
	Principals          []FileStringMatch `yaml:"principals"`
	NotPrincipals       []FileStringMatch `yaml:"notPrincipals"`
	Namespaces          []FileStringMatch `yaml:"namespaces"`
	NotNamespaces       []FileStringMatch `yaml:"notNamespaces"`
	SourceIPs           []string          `yaml:"sourceIPs"`
	NotSourceIPs        []string          `yaml:"notSourceIPs"`
	DestinationPorts    []uint32          `yaml:"destinationPorts"`
	NotDestinationPorts []uint32          `yaml:"notDestinationPorts"`
}

// FileStringMatch sets exactly one of exact, prefix, suffix or presence
// (`presence: {}`).
type FileStringMatch struct {
	Exact    *string   `yaml:"exact"`
	Prefix   *string   `yaml:"prefix"`
	Suffix   *string   `yaml:"suffix"`
	Presence *struct{} `yaml:"presence"`
}

func (fp FilePolicy) model() (model.Policy, error) {
	var errs []error
	p := model.Policy{Name: fp.Name, Namespace: fp.Namespace, Scope: model.Scope(strings.ToUpper(fp.Scope))}
	if p.Name == "" || p.Namespace == "" {
		errs = append(errs, errors.New("name and namespace are required"))
	}
	switch p.Scope {
	case model.ScopeGlobal, model.ScopeNamespace, model.ScopeWorkloadSelector:
	default:
		errs = append(errs, fmt.Errorf("scope %q: want GLOBAL, NAMESPACE or WORKLOAD_SELECTOR", fp.Scope))
	}
	if pa := fp.PeerAuthentication; pa != nil {
		if len(fp.Rules) > 0 || fp.Action != "" {
			errs = append(errs, errors.New("a peerAuthentication policy takes no action and no rules"))
		}
		mode, err := fileMTLSMode(pa.Mode)
		if err != nil {
			errs = append(errs, fmt.Errorf("peerAuthentication.mode: %w", err))
		}
		p.PeerAuth = &model.PeerAuthentication{Mode: mode}
		for ps, ms := range pa.PortLevelMTLS {
			port, err := model.ParsePort(ps)
			if err != nil {
				errs = append(errs, fmt.Errorf("peerAuthentication.portLevelMtls: %w", err))
				continue
			}
			mode, err := fileMTLSMode(ms)
			if err != nil {
				errs = append(errs, fmt.Errorf("peerAuthentication.portLevelMtls[%d]: %w", port, err))
				continue
			}
			if p.PeerAuth.PortLevel == nil {
				p.PeerAuth.PortLevel = map[uint16]model.MTLSMode{}
			}
			p.PeerAuth.PortLevel[port] = mode
		}
		return p, errors.Join(errs...)
	}
	p.Action = model.Action(strings.ToUpper(fp.Action))
	switch p.Action {
	case "":
		p.Action = model.ActionAllow
	case model.ActionAllow, model.ActionDeny, model.ActionAudit:
	default:
		errs = append(errs, fmt.Errorf("action %q: want ALLOW, DENY or AUDIT", fp.Action))
	}
	for i, fr := range fp.Rules {
		var r model.Rule
		for j, fc := range fr.Clauses {
			if len(fc.Matches) == 0 {
				errs = append(errs, fmt.Errorf("rules[%d].clauses[%d] has no matches (a clause must list at least one)", i, j))
				continue
			}
			var c model.Clause
			for k, fm := range fc.Matches {
				m, err := fm.model()
				if err != nil {
					errs = append(errs, fmt.Errorf("rules[%d].clauses[%d].matches[%d]: %w", i, j, k, err))
					continue
				}
				c.Matches = append(c.Matches, m)
			}
			r.Clauses = append(r.Clauses, c)
		}
		p.Rules = append(p.Rules, r)
	}
	return p, errors.Join(errs...)
}

func fileMTLSMode(s string) (model.MTLSMode, error) {
	switch m := model.MTLSMode(strings.ToUpper(s)); m {
	case model.MTLSUnset, model.MTLSStrict, model.MTLSPermissive, model.MTLSDisable:
		return m, nil
	}
	return model.MTLSUnset, fmt.Errorf("%q: want STRICT, PERMISSIVE, DISABLE or empty", s)
}

func (fm FileMatch) model() (model.Match, error) {
	var errs []error
	strs := func(field string, in []FileStringMatch) []model.StringMatch {
		var out []model.StringMatch
		for _, f := range in {
			var sms []model.StringMatch
			if f.Exact != nil {
				sms = append(sms, model.StringMatch{Kind: model.MatchExact, Value: *f.Exact})
			}
			if f.Prefix != nil {
				sms = append(sms, model.StringMatch{Kind: model.MatchPrefix, Value: *f.Prefix})
			}
			if f.Suffix != nil {
				sms = append(sms, model.StringMatch{Kind: model.MatchSuffix, Value: *f.Suffix})
			}
			if f.Presence != nil {
				sms = append(sms, model.StringMatch{Kind: model.MatchPresence})
			}
			if len(sms) != 1 {
				errs = append(errs, fmt.Errorf("%s: set exactly one of exact, prefix, suffix, presence", field))
				continue
			}
			out = append(out, sms[0])
		}
		return out
	}
	prefixes := func(field string, in []string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range in {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				ip, ierr := netip.ParseAddr(s)
				if ierr != nil {
					errs = append(errs, fmt.Errorf("%s: %q is neither a CIDR nor an IP address", field, s))
					continue
				}
				p = netip.PrefixFrom(ip, ip.BitLen())
			}
			if p.Addr().Is4In6() {
				errs = append(errs, fmt.Errorf("%s: %q is IPv4-mapped IPv6: write IPv4 as IPv4", field, s))
				continue
			}
			out = append(out, p.Masked())
		}
		return out
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
	m := model.Match{
		Principals:          strs("principals", fm.Principals),
		NotPrincipals:       strs("notPrincipals", fm.NotPrincipals),
		Namespaces:          strs("namespaces", fm.Namespaces),
		NotNamespaces:       strs("notNamespaces", fm.NotNamespaces),
		SourceIPs:           prefixes("sourceIPs", fm.SourceIPs),
		NotSourceIPs:        prefixes("notSourceIPs", fm.NotSourceIPs),
		DestinationPorts:    ports("destinationPorts", fm.DestinationPorts),
		NotDestinationPorts: ports("notDestinationPorts", fm.NotDestinationPorts),
	}
	return m, errors.Join(errs...)
}
