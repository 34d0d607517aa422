package state

import (
	"slices"
	"strings"
	"testing"

	"ambit.dev/ztunnel/internal/model"
)

func TestPoliciesFor(t *testing.T) {
	policies := []model.Policy{
		{Name: "sel", Namespace: "ns1", Scope: model.ScopeWorkloadSelector, Action: model.ActionAllow},
		{Name: "mesh", Namespace: "root", Scope: model.ScopeGlobal, Action: model.ActionDeny},
		{Name: "ns-wide", Namespace: "ns1", Scope: model.ScopeNamespace, Action: model.ActionAllow},
		{Name: "peerauthentication:p", Namespace: "ns2", Scope: model.ScopeNamespace, PeerAuth: &model.PeerAuthentication{Mode: model.MTLSStrict}},
		// A namespace-scoped policy listed by a workload applies by scope only.
		{Name: "other", Namespace: "ns2", Scope: model.ScopeNamespace, Action: model.ActionAllow},
	}
	snap, err := NewSnapshotWithPolicies(nil, nil, policies)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		w    model.Workload
		want []string
	}{
		{"namespace and global", model.Workload{Namespace: "ns1"}, []string{"ns1/ns-wide", "root/mesh"}},
		{"selector listed once even if listed twice", model.Workload{Namespace: "ns1", AuthorizationPolicies: []string{"ns1/sel", "ns1/sel"}}, []string{"ns1/ns-wide", "ns1/sel", "root/mesh"}},
		{"peer authentication included", model.Workload{Namespace: "ns2"}, []string{"ns2/other", "ns2/peerauthentication:p", "root/mesh"}},
		{"listed namespace policy of another namespace ignored", model.Workload{Namespace: "ns1", AuthorizationPolicies: []string{"ns2/other", "ns9/missing"}}, []string{"ns1/ns-wide", "root/mesh"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range snap.PoliciesFor(tc.w) {
				got = append(got, p.Key())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("PoliciesFor = %v, want %v", got, tc.want)
			}
		})
	}
	if got := len(snap.Policies()); got != len(policies) {
		t.Fatalf("Policies() has %d entries, want %d", got, len(policies))
	}
}

func TestSnapshotDuplicatePolicy(t *testing.T) {
	p := model.Policy{Name: "a", Namespace: "ns1", Scope: model.ScopeNamespace}
	if _, err := NewSnapshotWithPolicies(nil, nil, []model.Policy{p, p}); err == nil || !strings.Contains(err.Error(), "ns1/a") {
		t.Fatalf("err = %v, want a duplicate policy error naming ns1/a", err)
	}
}
