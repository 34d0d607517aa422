package xds

import (
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/ztunnel/internal/model"
)

func TestConvertAuthorization(t *testing.T) {
	exact := func(v string) *workloadv1alpha1.StringMatch {
		return &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Exact{Exact: v}}
	}
	presence := &workloadv1alpha1.StringMatch{MatchType: &workloadv1alpha1.StringMatch_Presence{Presence: &workloadv1alpha1.Presence{}}}
	prefix := func(ip string, l uint32) *workloadv1alpha1.IPPrefix {
		return &workloadv1alpha1.IPPrefix{Address: netip.MustParseAddr(ip).AsSlice(), Length: l}
	}
	rules := func(ms ...*workloadv1alpha1.Match) []*workloadv1alpha1.Rule {
		return []*workloadv1alpha1.Rule{{Clauses: []*workloadv1alpha1.Clause{{Matches: ms}}}}
	}
	tests := []struct {
		name    string
		in      *workloadv1alpha1.Authorization
		want    model.Policy
		wantErr string
	}{
		{name: "deny with every field IPv4", in: &workloadv1alpha1.Authorization{Name: "d", Namespace: "ns1", Scope: workloadv1alpha1.Scope_NAMESPACE, Action: workloadv1alpha1.Action_DENY,
			Rules: rules(&workloadv1alpha1.Match{
				Principals: []*workloadv1alpha1.StringMatch{exact("td/ns/a/sa/b")}, NotPrincipals: []*workloadv1alpha1.StringMatch{presence},
				Namespaces:    []*workloadv1alpha1.StringMatch{{MatchType: &workloadv1alpha1.StringMatch_Prefix{Prefix: "a"}}},
				NotNamespaces: []*workloadv1alpha1.StringMatch{{MatchType: &workloadv1alpha1.StringMatch_Suffix{Suffix: "z"}}},
				SourceIps:     []*workloadv1alpha1.IPPrefix{prefix("10.1.2.3", 16)}, NotSourceIps: []*workloadv1alpha1.IPPrefix{prefix("10.1.0.0", 24)},
				DestinationPorts: []uint32{80}, NotDestinationPorts: []uint32{81},
			})},
			want: model.Policy{Name: "d", Namespace: "ns1", Scope: model.ScopeNamespace, Action: model.ActionDeny, Rules: []model.Rule{{Clauses: []model.Clause{{Matches: []model.Match{{
				Principals: []model.StringMatch{{Kind: model.MatchExact, Value: "td/ns/a/sa/b"}}, NotPrincipals: []model.StringMatch{{Kind: model.MatchPresence}},
				Namespaces: []model.StringMatch{{Kind: model.MatchPrefix, Value: "a"}}, NotNamespaces: []model.StringMatch{{Kind: model.MatchSuffix, Value: "z"}},
				SourceIPs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, NotSourceIPs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")},
				DestinationPorts: []uint16{80}, NotDestinationPorts: []uint16{81},
			}}}}}}}},
		{name: "allow IPv6 block, global", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "root", Scope: workloadv1alpha1.Scope_GLOBAL,
			Rules: rules(&workloadv1alpha1.Match{SourceIps: []*workloadv1alpha1.IPPrefix{prefix("fd00::1", 64)}})},
			want: model.Policy{Name: "a", Namespace: "root", Scope: model.ScopeGlobal, Action: model.ActionAllow, Rules: []model.Rule{{Clauses: []model.Clause{{Matches: []model.Match{{
				SourceIPs: []netip.Prefix{netip.MustParsePrefix("fd00::/64")}}}}}}}}},
		{name: "allow with no rules stays empty", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "ns1", Scope: workloadv1alpha1.Scope_WORKLOAD_SELECTOR},
			want: model.Policy{Name: "a", Namespace: "ns1", Scope: model.ScopeWorkloadSelector, Action: model.ActionAllow}},
		{name: "rule with no clauses", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "ns1", Action: workloadv1alpha1.Action_AUDIT, Rules: []*workloadv1alpha1.Rule{{}}},
			want: model.Policy{Name: "a", Namespace: "ns1", Scope: model.ScopeGlobal, Action: model.ActionAudit, Rules: []model.Rule{{}}}},
		{name: "peer authentication with port levels", in: &workloadv1alpha1.Authorization{Name: "peerauthentication:p", Namespace: "ns1", Scope: workloadv1alpha1.Scope_WORKLOAD_SELECTOR,
			PeerAuthentication: &workloadv1alpha1.PeerAuthentication{Mode: workloadv1alpha1.MTLSMode_STRICT,
				PortLevelMtls: map[uint32]workloadv1alpha1.MTLSMode{8080: workloadv1alpha1.MTLSMode_DISABLE, 9090: workloadv1alpha1.MTLSMode_UNSET}}},
			want: model.Policy{Name: "peerauthentication:p", Namespace: "ns1", Scope: model.ScopeWorkloadSelector,
				PeerAuth: &model.PeerAuthentication{Mode: model.MTLSStrict, PortLevel: map[uint16]model.MTLSMode{8080: model.MTLSDisable, 9090: model.MTLSUnset}}}},
		{name: "unknown scope", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n", Scope: 7}, wantErr: "unknown scope"},
		{name: "unknown action", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n", Action: 9}, wantErr: "unknown action"},
		{name: "unknown mode", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n", PeerAuthentication: &workloadv1alpha1.PeerAuthentication{Mode: 8}}, wantErr: "unknown mTLS mode"},
		{name: "port level port 0", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n", PeerAuthentication: &workloadv1alpha1.PeerAuthentication{
			PortLevelMtls: map[uint32]workloadv1alpha1.MTLSMode{0: workloadv1alpha1.MTLSMode_STRICT}}}, wantErr: "port 0"},
		{name: "destination port out of range", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n",
			Rules: rules(&workloadv1alpha1.Match{DestinationPorts: []uint32{70000}})}, wantErr: "destination_ports: port 70000"},
		{name: "IPv4 prefix too long", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n",
			Rules: rules(&workloadv1alpha1.Match{SourceIps: []*workloadv1alpha1.IPPrefix{prefix("10.0.0.0", 33)}})}, wantErr: "source_ips: prefix length 33"},
		{name: "IPv6 prefix too long", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n",
			Rules: rules(&workloadv1alpha1.Match{NotSourceIps: []*workloadv1alpha1.IPPrefix{prefix("fd00::", 129)}})}, wantErr: "not_source_ips: prefix length 129"},
		{name: "empty clause", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n",
			Rules: []*workloadv1alpha1.Rule{{Clauses: []*workloadv1alpha1.Clause{{}}}}}, wantErr: "no matches"},
		{name: "string match without kind", in: &workloadv1alpha1.Authorization{Name: "a", Namespace: "n",
			Rules: rules(&workloadv1alpha1.Match{Namespaces: []*workloadv1alpha1.StringMatch{{}}})}, wantErr: "no match kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := convertAuthorization(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if cerr := checkAuthorization(tc.in.ResourceName(), tc.in); cerr == nil {
					t.Fatalf("checkAuthorization accepted a resource that does not convert")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("convertAuthorization =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestBuildSnapshotCarriesPolicies(t *testing.T) {
	w := &workloadv1alpha1.Workload{Uid: "a", Name: "a", Namespace: "ns1", ServiceAccount: "sa",
		Addresses: [][]byte{netip.MustParseAddr("fd00::1").AsSlice()}, AuthorizationPolicies: []string{"ns1/sel"}}
	a := &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Workload{Workload: w}}
	addr, err := convertAddress(a.ResourceName(), a, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	sel := &workloadv1alpha1.Authorization{Name: "sel", Namespace: "ns1", Scope: workloadv1alpha1.Scope_WORKLOAD_SELECTOR, Action: workloadv1alpha1.Action_DENY, Rules: []*workloadv1alpha1.Rule{{}}}
	other := &workloadv1alpha1.Authorization{Name: "other", Namespace: "ns2", Scope: workloadv1alpha1.Scope_NAMESPACE}
	snap, err := buildSnapshot(map[string]address{a.ResourceName(): addr},
		map[string]*workloadv1alpha1.Authorization{sel.ResourceName(): sel, other.ResourceName(): other},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(snap.Policies()); got != 2 {
		t.Fatalf("snapshot holds %d policies, want 2", got)
	}
	wl, ok := snap.WorkloadByUID("a")
	if !ok {
		t.Fatal("workload a missing")
	}
	ps := snap.PoliciesFor(wl)
	if len(ps) != 1 || ps[0].Key() != "ns1/sel" || ps[0].Action != model.ActionDeny {
		t.Fatalf("PoliciesFor(a) = %+v, want only ns1/sel (DENY)", ps)
	}
}
