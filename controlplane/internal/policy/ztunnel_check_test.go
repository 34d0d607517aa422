package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

// ztunnelCheck re-states what ztunnel checks before it accepts an
// Authorization resource named name (ztunnel/internal/xds: checkAuthorization,
// convertAuthorization, convertMatch; ztunnel is a separate module, so it is
// not imported). A non-nil error means ztunnel would NACK the resource.
// Beyond ztunnel, it also insists on what this package promises: a
// peer-authentication resource is named with the "peerauthentication:"
// prefix and an access policy is not, and port_level_mtls is only sent with
// scope WORKLOAD_SELECTOR.
func ztunnelCheck(name string, a *workloadv1alpha1.Authorization) error {
	if a == nil {
		return errors.New("nil Authorization")
	}
	if a.GetName() == "" || a.GetNamespace() == "" {
		return errors.New("name and namespace are required")
	}
	if got := a.ResourceName(); got != name {
		return fmt.Errorf("resource name %q does not match its content (want %q)", name, got)
	}
	if strings.Count(name, "/") != 1 {
		return fmt.Errorf("resource name %q: want exactly one '/'", name)
	}
	if _, ok := workloadv1alpha1.Scope_name[int32(a.GetScope())]; !ok {
		return fmt.Errorf("unknown scope %d", a.GetScope())
	}
	if pa := a.GetPeerAuthentication(); pa != nil {
		if len(a.GetRules()) > 0 {
			return errors.New("a peer-authentication policy must have no rules")
		}
		if !workloadv1alpha1.IsPeerAuthenticationName(a.GetName()) {
			return fmt.Errorf("peer-authentication policy named %q without the %q prefix", a.GetName(), workloadv1alpha1.PeerAuthenticationNamePrefix)
		}
		if _, ok := workloadv1alpha1.MTLSMode_name[int32(pa.GetMode())]; !ok {
			return fmt.Errorf("peer_authentication.mode: unknown mTLS mode %d", pa.GetMode())
		}
		if len(pa.GetPortLevelMtls()) > 0 && a.GetScope() != workloadv1alpha1.Scope_WORKLOAD_SELECTOR {
			return errors.New("port_level_mtls sent on a policy whose scope is not WORKLOAD_SELECTOR (ztunnel would ignore it)")
		}
		for port, m := range pa.GetPortLevelMtls() {
			if port == 0 || port > 65535 {
				return fmt.Errorf("peer_authentication.port_level_mtls: port %d is not in 1..65535", port)
			}
			if _, ok := workloadv1alpha1.MTLSMode_name[int32(m)]; !ok {
				return fmt.Errorf("peer_authentication.port_level_mtls[%d]: unknown mTLS mode %d", port, m)
			}
		}
		return nil
	}
	if workloadv1alpha1.IsPeerAuthenticationName(a.GetName()) {
		return fmt.Errorf("access policy named %q with the peer-authentication prefix", a.GetName())
	}
	if _, ok := workloadv1alpha1.Action_name[int32(a.GetAction())]; !ok {
		return fmt.Errorf("unknown action %d", a.GetAction())
	}
	for i, r := range a.GetRules() {
		if r == nil {
			return fmt.Errorf("rules[%d] is nil", i)
		}
		for j, c := range r.GetClauses() {
			if len(c.GetMatches()) == 0 {
				return fmt.Errorf("rules[%d].clauses[%d] has no matches", i, j)
			}
			for k, m := range c.GetMatches() {
				if err := checkMatch(m); err != nil {
					return fmt.Errorf("rules[%d].clauses[%d].matches[%d]: %w", i, j, k, err)
				}
			}
		}
	}
	return nil
}

func checkMatch(m *workloadv1alpha1.Match) error {
	if m == nil {
		return errors.New("nil match")
	}
	for _, sms := range [][]*workloadv1alpha1.StringMatch{m.GetPrincipals(), m.GetNotPrincipals(), m.GetNamespaces(), m.GetNotNamespaces()} {
		for _, sm := range sms {
			if sm.GetMatchType() == nil {
				return errors.New("a StringMatch sets no match kind")
			}
		}
	}
	for _, ps := range [][]*workloadv1alpha1.IPPrefix{m.GetSourceIps(), m.GetNotSourceIps()} {
		for _, p := range ps {
			ip, ok := netip.AddrFromSlice(p.GetAddress())
			if !ok || ip.Is4In6() {
				return fmt.Errorf("address of %d bytes: want 4 (IPv4) or 16 (IPv6, not IPv4-mapped)", len(p.GetAddress()))
			}
			if int(p.GetLength()) > ip.BitLen() {
				return fmt.Errorf("prefix length %d does not fit %s", p.GetLength(), ip)
			}
		}
	}
	for _, ports := range [][]uint32{m.GetDestinationPorts(), m.GetNotDestinationPorts()} {
		for _, p := range ports {
			if p == 0 || p > 65535 {
				return fmt.Errorf("port %d is not in 1..65535", p)
			}
		}
	}
	return nil
}

// mustPassZtunnel fails t when c would be NACKed by ztunnel.
func mustPassZtunnel(t *testing.T, c Compiled) {
	t.Helper()
	if c.Authorization == nil {
		return
	}
	if err := ztunnelCheck(c.ResourceName, c.Authorization); err != nil {
		t.Errorf("ztunnel would NACK %s: %v", c.ResourceName, err)
	}
}

// TestZtunnelCheckRejects shows that the helper above catches each kind of
// resource ztunnel NACKs, so the tests that rely on it can fail.
func TestZtunnelCheckRejects(t *testing.T) {
	ok := func() *workloadv1alpha1.Authorization {
		return &workloadv1alpha1.Authorization{Name: "p", Namespace: "ns", Rules: []*workloadv1alpha1.Rule{{
			Clauses: []*workloadv1alpha1.Clause{{Matches: []*workloadv1alpha1.Match{{DestinationPorts: []uint32{80}}}}},
		}}}
	}
	match := func(a *workloadv1alpha1.Authorization) *workloadv1alpha1.Match {
		return a.Rules[0].Clauses[0].Matches[0]
	}
	if err := ztunnelCheck("ns/p", ok()); err != nil {
		t.Fatalf("valid resource rejected: %v", err)
	}
	for _, tc := range []struct {
		name  string
		rname string
		edit  func(a *workloadv1alpha1.Authorization)
	}{
		{"name mismatch", "ns/q", func(*workloadv1alpha1.Authorization) {}},
		{"no namespace", "/p", func(a *workloadv1alpha1.Authorization) { a.Namespace = "" }},
		{"unknown scope", "ns/p", func(a *workloadv1alpha1.Authorization) { a.Scope = 7 }},
		{"unknown action", "ns/p", func(a *workloadv1alpha1.Authorization) { a.Action = 9 }},
		{"empty clause", "ns/p", func(a *workloadv1alpha1.Authorization) { a.Rules[0].Clauses[0].Matches = nil }},
		{"empty StringMatch", "ns/p", func(a *workloadv1alpha1.Authorization) {
			match(a).Principals = []*workloadv1alpha1.StringMatch{{}}
		}},
		{"port 0", "ns/p", func(a *workloadv1alpha1.Authorization) { match(a).NotDestinationPorts = []uint32{0} }},
		{"port 65536", "ns/p", func(a *workloadv1alpha1.Authorization) { match(a).DestinationPorts = []uint32{65536} }},
		{"IPv4 length 33", "ns/p", func(a *workloadv1alpha1.Authorization) {
			match(a).SourceIps = []*workloadv1alpha1.IPPrefix{{Address: []byte{10, 0, 0, 0}, Length: 33}}
		}},
		{"address of 5 bytes", "ns/p", func(a *workloadv1alpha1.Authorization) {
			match(a).NotSourceIps = []*workloadv1alpha1.IPPrefix{{Address: []byte{1, 2, 3, 4, 5}, Length: 8}}
		}},
		{"IPv4-mapped IPv6", "ns/p", func(a *workloadv1alpha1.Authorization) {
			match(a).SourceIps = []*workloadv1alpha1.IPPrefix{{Address: netip.MustParseAddr("::ffff:10.0.0.1").AsSlice(), Length: 128}}
		}},
		{"rules on peer authentication", "ns/peerauthentication:p", func(a *workloadv1alpha1.Authorization) {
			a.Name = "peerauthentication:p"
			a.PeerAuthentication = &workloadv1alpha1.PeerAuthentication{}
		}},
		{"port-level mTLS port 0", "ns/peerauthentication:p", func(a *workloadv1alpha1.Authorization) {
			a.Name, a.Rules, a.Scope = "peerauthentication:p", nil, workloadv1alpha1.Scope_WORKLOAD_SELECTOR
			a.PeerAuthentication = &workloadv1alpha1.PeerAuthentication{PortLevelMtls: map[uint32]workloadv1alpha1.MTLSMode{0: workloadv1alpha1.MTLSMode_STRICT}}
		}},
		{"unknown mTLS mode", "ns/peerauthentication:p", func(a *workloadv1alpha1.Authorization) {
			a.Name, a.Rules = "peerauthentication:p", nil
			a.PeerAuthentication = &workloadv1alpha1.PeerAuthentication{Mode: 8}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ok()
			tc.edit(a)
			if err := ztunnelCheck(tc.rname, a); err == nil {
				t.Fatal("accepted; ztunnel would NACK it")
			}
		})
	}
}
