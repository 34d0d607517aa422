package authz

import (
	"net/netip"
	"slices"
	"testing"

	"ambit.dev/ztunnel/internal/model"
)

const (
	fooPrincipal = "cluster.local/ns/foo/sa/client"
	barPrincipal = "cluster.local/ns/bar/sa/other"
)

func exact(v string) model.StringMatch  { return model.StringMatch{Kind: model.MatchExact, Value: v} }
func prefix(v string) model.StringMatch { return model.StringMatch{Kind: model.MatchPrefix, Value: v} }
func suffix(v string) model.StringMatch { return model.StringMatch{Kind: model.MatchSuffix, Value: v} }

var presence = model.StringMatch{Kind: model.MatchPresence}

// pol is an access policy in namespace ns with one rule of one clause of
// the given matches (no matches: one rule with no clauses, matching all).
func pol(ns, name string, scope model.Scope, action model.Action, ms ...model.Match) model.Policy {
	r := model.Rule{}
	if len(ms) > 0 {
		r.Clauses = []model.Clause{{Matches: ms}}
	}
	return model.Policy{Name: name, Namespace: ns, Scope: scope, Action: action, Rules: []model.Rule{r}}
}

func noRules(ns, name string, scope model.Scope, action model.Action) model.Policy {
	return model.Policy{Name: name, Namespace: ns, Scope: scope, Action: action}
}

func conn(principal, ip string, port uint16) Conn {
	return Conn{Principal: principal, SourceIP: netip.MustParseAddr(ip), DestinationPort: port}
}

func TestEvaluate(t *testing.T) {
	mtls4 := conn(fooPrincipal, "10.0.0.5", 8080)
	mtls6 := conn(fooPrincipal, "fd00::5", 8080)
	plain4 := conn("", "10.0.0.5", 8080)
	plain6 := conn("", "fd00::5", 8080)
	ns := model.ScopeNamespace
	allow, deny, audit := model.ActionAllow, model.ActionDeny, model.ActionAudit
	tests := []struct {
		name     string
		policies []model.Policy
		conn     Conn
		want     Decision
	}{
		{"no policy allows", nil, mtls4, Decision{Allow: true}},
		{"no policy allows plaintext IPv6", nil, plain6, Decision{Allow: true}},
		{"allow all rule", []model.Policy{pol("ns1", "a", ns, allow)}, mtls4,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"allow with no rules allows nothing", []model.Policy{noRules("ns1", "a", ns, allow)}, mtls4,
			Decision{Action: allow}},
		{"deny with no rules denies nothing", []model.Policy{noRules("ns1", "d", ns, deny)}, mtls4,
			Decision{Allow: true}},
		{"deny with no rules next to allow-all", []model.Policy{noRules("ns1", "d", ns, deny), pol("ns1", "a", ns, allow)}, mtls4,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"deny wins over allow", []model.Policy{
			pol("ns1", "a", ns, allow, model.Match{Principals: []model.StringMatch{exact(fooPrincipal)}}),
			pol("ns1", "d", ns, deny, model.Match{Namespaces: []model.StringMatch{exact("foo")}}),
		}, mtls4, Decision{Policy: "ns1/d", Action: deny}},
		{"non-matching deny then matching allow", []model.Policy{
			pol("ns1", "a", ns, allow, model.Match{Principals: []model.StringMatch{exact(fooPrincipal)}}),
			pol("ns1", "d", ns, deny, model.Match{Namespaces: []model.StringMatch{exact("bar")}}),
		}, mtls6, Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"allow applies but does not match", []model.Policy{
			pol("ns1", "a", ns, allow, model.Match{Principals: []model.StringMatch{exact(barPrincipal)}}),
		}, mtls4, Decision{Action: allow}},
		{"second allow matches", []model.Policy{
			pol("ns1", "a", ns, allow, model.Match{Principals: []model.StringMatch{exact(barPrincipal)}}),
			pol("ns1", "b", ns, allow, model.Match{Principals: []model.StringMatch{suffix("/sa/client")}}),
		}, mtls4, Decision{Allow: true, Policy: "ns1/b", Action: allow}},
		{"audit alone allows and is reported", []model.Policy{pol("ns1", "au", ns, audit)}, mtls4,
			Decision{Allow: true, Audits: []string{"ns1/au"}}},
		{"audit does not rescue a deny", []model.Policy{pol("ns1", "au", ns, audit), pol("ns1", "d", ns, deny)}, mtls4,
			Decision{Policy: "ns1/d", Action: deny, Audits: []string{"ns1/au"}}},
		{"audit does not satisfy allow", []model.Policy{pol("ns1", "au", ns, audit), noRules("ns1", "a", ns, allow)}, mtls4,
			Decision{Action: allow, Audits: []string{"ns1/au"}}},
		{"non-matching audit not reported", []model.Policy{pol("ns1", "au", ns, audit, model.Match{DestinationPorts: []uint16{9}})}, mtls4,
			Decision{Allow: true}},
		{"peer authentication ignored", []model.Policy{{Name: "peerauthentication:p", Namespace: "ns1", Scope: ns,
			PeerAuth: &model.PeerAuthentication{Mode: model.MTLSStrict}}}, plain4, Decision{Allow: true}},
		{"principal prefix", []model.Policy{pol("ns1", "a", ns, allow, model.Match{Principals: []model.StringMatch{prefix("cluster.local/ns/foo/")}})}, mtls6,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"principal matcher never matches plaintext", []model.Policy{pol("ns1", "a", ns, allow, model.Match{Principals: []model.StringMatch{presence}})}, plain4,
			Decision{Action: allow}},
		{"namespace matcher never matches plaintext IPv6", []model.Policy{pol("ns1", "a", ns, allow, model.Match{Namespaces: []model.StringMatch{prefix("")}})}, plain6,
			Decision{Action: allow}},
		{"not_principals presence matches plaintext only", []model.Policy{pol("ns1", "d", ns, deny, model.Match{NotPrincipals: []model.StringMatch{presence}})}, plain4,
			Decision{Policy: "ns1/d", Action: deny}},
		{"not_principals presence spares mTLS", []model.Policy{pol("ns1", "d", ns, deny, model.Match{NotPrincipals: []model.StringMatch{presence}})}, mtls4,
			Decision{Allow: true}},
		{"not_namespaces satisfied by plaintext", []model.Policy{pol("ns1", "a", ns, allow, model.Match{NotNamespaces: []model.StringMatch{exact("foo")}})}, plain6,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"not_namespaces excludes foo", []model.Policy{pol("ns1", "a", ns, allow, model.Match{NotNamespaces: []model.StringMatch{exact("foo")}})}, mtls4,
			Decision{Action: allow}},
		{"not_principals other identity", []model.Policy{pol("ns1", "d", ns, deny, model.Match{NotPrincipals: []model.StringMatch{exact(fooPrincipal)}})}, conn(barPrincipal, "10.0.0.9", 80),
			Decision{Policy: "ns1/d", Action: deny}},
		{"source ip IPv4 block", []model.Policy{pol("ns1", "a", ns, allow, model.Match{SourceIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}})}, plain4,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"source ip IPv4 block misses", []model.Policy{pol("ns1", "a", ns, allow, model.Match{SourceIPs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}})}, plain4,
			Decision{Action: allow}},
		{"source ip IPv6 block", []model.Policy{pol("ns1", "a", ns, allow, model.Match{SourceIPs: []netip.Prefix{netip.MustParsePrefix("fd00::/64")}})}, plain6,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"IPv4 block never matches IPv6", []model.Policy{pol("ns1", "a", ns, allow, model.Match{SourceIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}})}, plain6,
			Decision{Action: allow}},
		{"IPv6 block never matches IPv4", []model.Policy{pol("ns1", "a", ns, allow, model.Match{SourceIPs: []netip.Prefix{netip.MustParsePrefix("::/0")}})}, plain4,
			Decision{Action: allow}},
		{"IPv4-mapped source is unmapped", []model.Policy{pol("ns1", "a", ns, allow, model.Match{SourceIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32")}})}, conn("", "::ffff:10.0.0.5", 8080),
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"not_source_ips IPv4 denies outsiders", []model.Policy{pol("ns1", "d", ns, deny, model.Match{NotSourceIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})}, conn("", "192.168.1.1", 80),
			Decision{Policy: "ns1/d", Action: deny}},
		{"not_source_ips IPv6 spares insiders", []model.Policy{pol("ns1", "d", ns, deny, model.Match{NotSourceIPs: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}})}, mtls6,
			Decision{Allow: true}},
		{"destination port matches", []model.Policy{pol("ns1", "a", ns, allow, model.Match{DestinationPorts: []uint16{80, 8080}})}, mtls4,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"destination port misses", []model.Policy{pol("ns1", "a", ns, allow, model.Match{DestinationPorts: []uint16{80}})}, mtls6,
			Decision{Action: allow}},
		{"not_destination_ports", []model.Policy{pol("ns1", "d", ns, deny, model.Match{NotDestinationPorts: []uint16{8080}})}, conn(fooPrincipal, "10.0.0.5", 9090),
			Decision{Policy: "ns1/d", Action: deny}},
		{"fields of a match are AND'ed", []model.Policy{pol("ns1", "a", ns, allow, model.Match{
			Principals: []model.StringMatch{exact(fooPrincipal)}, DestinationPorts: []uint16{80}})}, mtls4,
			Decision{Action: allow}},
		{"matches of a clause are OR'ed", []model.Policy{pol("ns1", "a", ns, allow,
			model.Match{DestinationPorts: []uint16{80}}, model.Match{Namespaces: []model.StringMatch{exact("foo")}})}, mtls4,
			Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"clauses of a rule are AND'ed", []model.Policy{{Name: "a", Namespace: "ns1", Scope: ns, Action: allow, Rules: []model.Rule{{Clauses: []model.Clause{
			{Matches: []model.Match{{Namespaces: []model.StringMatch{exact("foo")}}}},
			{Matches: []model.Match{{SourceIPs: []netip.Prefix{netip.MustParsePrefix("fd00::/16")}}}},
		}}}}}, mtls4, Decision{Action: allow}},
		{"rules are OR'ed", []model.Policy{{Name: "a", Namespace: "ns1", Scope: ns, Action: allow, Rules: []model.Rule{
			{Clauses: []model.Clause{{Matches: []model.Match{{DestinationPorts: []uint16{1}}}}}},
			{Clauses: []model.Clause{{Matches: []model.Match{{SourceIPs: []netip.Prefix{netip.MustParsePrefix("fd00::/16")}}}}}},
		}}}, mtls6, Decision{Allow: true, Policy: "ns1/a", Action: allow}},
		{"malformed principal has no namespace", []model.Policy{pol("ns1", "a", ns, allow, model.Match{Namespaces: []model.StringMatch{presence}})}, conn("weird", "10.0.0.1", 1),
			Decision{Action: allow}},
		{"first matching deny reported", []model.Policy{pol("ns1", "d1", ns, deny), pol("ns1", "d2", ns, deny)}, mtls4,
			Decision{Policy: "ns1/d1", Action: deny}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Evaluate(tc.policies, tc.conn)
			if got.Allow != tc.want.Allow || got.Policy != tc.want.Policy || got.Action != tc.want.Action || !slices.Equal(got.Audits, tc.want.Audits) {
				t.Fatalf("Evaluate = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestApplicable(t *testing.T) {
	all := []model.Policy{
		pol("root", "mesh", model.ScopeGlobal, model.ActionDeny),
		pol("ns1", "ns-wide", model.ScopeNamespace, model.ActionAllow),
		pol("ns2", "other-ns", model.ScopeNamespace, model.ActionAllow),
		pol("ns1", "sel", model.ScopeWorkloadSelector, model.ActionAllow),
		pol("ns1", "sel-unlisted", model.ScopeWorkloadSelector, model.ActionAllow),
	}
	tests := []struct {
		name string
		w    model.Workload
		want []string
	}{
		{"namespace and global", model.Workload{Namespace: "ns1"}, []string{"ns1/ns-wide", "root/mesh"}},
		{"selector listed", model.Workload{Namespace: "ns1", AuthorizationPolicies: []string{"ns1/sel"}}, []string{"ns1/ns-wide", "ns1/sel", "root/mesh"}},
		{"other namespace", model.Workload{Namespace: "ns2"}, []string{"ns2/other-ns", "root/mesh"}},
		{"listed name without resource ignored", model.Workload{Namespace: "ns3", AuthorizationPolicies: []string{"ns3/missing"}}, []string{"root/mesh"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range Applicable(all, tc.w) {
				got = append(got, p.Key())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Applicable = %v, want %v", got, tc.want)
			}
		})
	}
}

func pa(ns, name string, scope model.Scope, mode model.MTLSMode, ports map[uint16]model.MTLSMode) model.Policy {
	return model.Policy{Name: "peerauthentication:" + name, Namespace: ns, Scope: scope,
		PeerAuth: &model.PeerAuthentication{Mode: mode, PortLevel: ports}}
}

func TestMTLSMode(t *testing.T) {
	strict, perm, disable, unset := model.MTLSStrict, model.MTLSPermissive, model.MTLSDisable, model.MTLSUnset
	sel, nsScope, global := model.ScopeWorkloadSelector, model.ScopeNamespace, model.ScopeGlobal
	tests := []struct {
		name     string
		policies []model.Policy
		port     uint16
		fallback model.MTLSMode
		want     model.MTLSMode
	}{
		{"nothing applies: default permissive", nil, 80, unset, perm},
		{"nothing applies: workload's own mode kept", nil, 80, strict, strict},
		{"global strict", []model.Policy{pa("root", "m", global, strict, nil)}, 80, perm, strict},
		{"namespace beats global", []model.Policy{pa("root", "m", global, strict, nil), pa("ns1", "n", nsScope, perm, nil)}, 80, unset, perm},
		{"selector beats namespace", []model.Policy{pa("ns1", "n", nsScope, perm, nil), pa("ns1", "s", sel, strict, nil)}, 80, unset, strict},
		{"unset selector inherits namespace", []model.Policy{pa("ns1", "n", nsScope, strict, nil), pa("ns1", "s", sel, unset, nil)}, 80, unset, strict},
		{"port override wins on its port", []model.Policy{pa("ns1", "s", sel, strict, map[uint16]model.MTLSMode{8080: perm})}, 8080, unset, perm},
		{"port override not on other ports", []model.Policy{pa("ns1", "s", sel, strict, map[uint16]model.MTLSMode{8080: perm})}, 9090, unset, strict},
		{"port override beats namespace strict", []model.Policy{pa("ns1", "n", nsScope, strict, nil), pa("ns1", "s", sel, unset, map[uint16]model.MTLSMode{8080: perm})}, 8080, unset, perm},
		{"unset port override inherits", []model.Policy{pa("ns1", "n", nsScope, strict, nil), pa("ns1", "s", sel, unset, map[uint16]model.MTLSMode{8080: unset})}, 8080, unset, strict},
		{"port level ignored on namespace scope", []model.Policy{pa("ns1", "n", nsScope, strict, map[uint16]model.MTLSMode{8080: perm})}, 8080, unset, strict},
		{"port level ignored on global scope", []model.Policy{pa("root", "m", global, strict, map[uint16]model.MTLSMode{8080: perm})}, 8080, unset, strict},
		{"disable is reported as disable", []model.Policy{pa("ns1", "n", nsScope, disable, nil)}, 80, strict, disable},
		{"smallest name wins within a step", []model.Policy{pa("ns1", "b", nsScope, perm, nil), pa("ns1", "a", nsScope, strict, nil)}, 80, unset, strict},
		{"access policies ignored", []model.Policy{pol("ns1", "a", nsScope, model.ActionDeny)}, 80, unset, perm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MTLSMode(tc.policies, tc.port, tc.fallback); got != tc.want {
				t.Fatalf("MTLSMode = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPlaintextAllowed(t *testing.T) {
	for _, tc := range []struct {
		mode model.MTLSMode
		want bool
	}{{model.MTLSStrict, false}, {model.MTLSPermissive, true}, {model.MTLSDisable, true}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			if got := PlaintextAllowed(tc.mode); got != tc.want {
				t.Fatalf("PlaintextAllowed(%s) = %v", tc.mode, got)
			}
		})
	}
}

func TestPrincipalNamespace(t *testing.T) {
	for _, tc := range []struct {
		name, principal, want string
		ok                    bool
	}{
		{"spiffe path", "cluster.local/ns/foo/sa/bar", "foo", true},
		{"empty", "", "", false},
		{"with scheme is not a principal", "spiffe://cluster.local/ns/foo/sa/bar", "", false},
		{"missing sa", "cluster.local/ns/foo", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PrincipalNamespace(tc.principal)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("PrincipalNamespace(%q) = %q, %v", tc.principal, got, ok)
			}
		})
	}
}
