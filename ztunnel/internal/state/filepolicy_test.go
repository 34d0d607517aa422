package state

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"ambit.dev/ztunnel/internal/model"
)

func TestParsePolicies(t *testing.T) {
	const file = `
workloads:
- uid: a
  name: a
  namespace: ns1
  addresses: [10.0.0.1, "fd00::1"]
  authorizationPolicies: [ns1/sel, ns1/peerauthentication:sel]
policies:
- name: sel
  namespace: ns1
  scope: WORKLOAD_SELECTOR
  action: deny
  rules:
  - clauses:
    - matches:
      - principals: [{exact: cluster.local/ns/foo/sa/x}]
        notPrincipals: [{presence: {}}]
        namespaces: [{prefix: fo}]
        notNamespaces: [{suffix: o}]
        sourceIPs: [10.1.2.3/16, "fd00::7"]
        notSourceIPs: ["fd00::/64"]
        destinationPorts: [80]
        notDestinationPorts: [81]
- name: allow-nothing
  namespace: ns1
  scope: NAMESPACE
- name: peerauthentication:sel
  namespace: ns1
  scope: WORKLOAD_SELECTOR
  peerAuthentication: {mode: STRICT, portLevelMtls: {"8080": PERMISSIVE}}
`
	snap, err := Parse([]byte(file), "")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := snap.WorkloadByUID("a")
	got := snap.PoliciesFor(w)
	want := []model.Policy{
		{Name: "allow-nothing", Namespace: "ns1", Scope: model.ScopeNamespace, Action: model.ActionAllow},
		{Name: "peerauthentication:sel", Namespace: "ns1", Scope: model.ScopeWorkloadSelector,
			PeerAuth: &model.PeerAuthentication{Mode: model.MTLSStrict, PortLevel: map[uint16]model.MTLSMode{8080: model.MTLSPermissive}}},
		{Name: "sel", Namespace: "ns1", Scope: model.ScopeWorkloadSelector, Action: model.ActionDeny, Rules: []model.Rule{{Clauses: []model.Clause{{Matches: []model.Match{{
			Principals:       []model.StringMatch{{Kind: model.MatchExact, Value: "cluster.local/ns/foo/sa/x"}},
			NotPrincipals:    []model.StringMatch{{Kind: model.MatchPresence}},
			Namespaces:       []model.StringMatch{{Kind: model.MatchPrefix, Value: "fo"}},
			NotNamespaces:    []model.StringMatch{{Kind: model.MatchSuffix, Value: "o"}},
			SourceIPs:        []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::7/128")},
			NotSourceIPs:     []netip.Prefix{netip.MustParsePrefix("fd00::/64")},
			DestinationPorts: []uint16{80}, NotDestinationPorts: []uint16{81},
		}}}}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PoliciesFor =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct{ name, policy, want string }{
		{"missing scope", "{name: p, namespace: n}", "scope"},
		{"bad action", "{name: p, namespace: n, scope: GLOBAL, action: MAYBE}", "action"},
		{"empty clause", "{name: p, namespace: n, scope: GLOBAL, rules: [{clauses: [{matches: []}]}]}", "no matches"},
		{"two kinds", "{name: p, namespace: n, scope: GLOBAL, rules: [{clauses: [{matches: [{principals: [{exact: a, prefix: b}]}]}]}]}", "exactly one"},
		{"bad cidr", "{name: p, namespace: n, scope: GLOBAL, rules: [{clauses: [{matches: [{sourceIPs: [10.0.0.0/40]}]}]}]}", "sourceIPs"},
		{"bad IPv6 cidr", "{name: p, namespace: n, scope: GLOBAL, rules: [{clauses: [{matches: [{notSourceIPs: [\"fd00::/129\"]}]}]}]}", "notSourceIPs"},
		{"port 0", "{name: p, namespace: n, scope: GLOBAL, rules: [{clauses: [{matches: [{destinationPorts: [0]}]}]}]}", "destinationPorts"},
		{"peer authentication with rules", "{name: p, namespace: n, scope: GLOBAL, peerAuthentication: {mode: STRICT}, rules: [{}]}", "no action and no rules"},
		{"bad mode", "{name: p, namespace: n, scope: GLOBAL, peerAuthentication: {mode: SOMETIMES}}", "peerAuthentication.mode"},
		{"bad port level", "{name: p, namespace: n, scope: GLOBAL, peerAuthentication: {portLevelMtls: {\"x\": STRICT}}}", "portLevelMtls"},
		{"duplicate", "{name: p, namespace: n, scope: GLOBAL}\n- {name: p, namespace: n, scope: NAMESPACE}", "defined twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("policies:\n- "+tc.policy+"\n"), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
