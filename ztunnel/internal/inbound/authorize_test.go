package inbound

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/metrics"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

func policyStore(t *testing.T, workloads []model.Workload, policies []model.Policy) *state.Store {
	t.Helper()
	snap, err := state.NewSnapshotWithPolicies(workloads, nil, policies)
	if err != nil {
		t.Fatal(err)
	}
	st := state.NewStore()
	st.Replace(snap)
	return st
}

func TestPolicyAuthorizer(t *testing.T) {
	foo := identity.ID{TrustDomain: "cluster.local", Namespace: "foo", ServiceAccount: "client"}
	dst := model.Workload{UID: "d", Name: "server", Namespace: "ns1", AuthorizationPolicies: []string{"ns1/only-foo"}}
	other := model.Workload{UID: "o", Name: "other", Namespace: "ns2"}
	// behind has a waypoint: traffic reaches it from the waypoint, over
	// HBONE with the waypoint's identity, and must be accepted, not re-routed.
	gw := identity.ID{TrustDomain: "cluster.local", Namespace: "gw", ServiceAccount: "gw"}
	behind := model.Workload{UID: "b", Name: "behind", Namespace: "ns3", Protocol: model.ProtocolHBONE,
		Waypoint: &model.Waypoint{Service: "gw/gw.gw.svc.cluster.local", Port: 15008}}
	one := func(m model.Match) []model.Rule {
		return []model.Rule{{Clauses: []model.Clause{{Matches: []model.Match{m}}}}}
	}
	policies := []model.Policy{
		{Name: "only-foo", Namespace: "ns1", Scope: model.ScopeWorkloadSelector, Action: model.ActionAllow,
			Rules: one(model.Match{Namespaces: []model.StringMatch{{Kind: model.MatchExact, Value: "foo"}}})},
		{Name: "no-plaintext-9090", Namespace: "ns1", Scope: model.ScopeNamespace, Action: model.ActionDeny,
			Rules: one(model.Match{NotPrincipals: []model.StringMatch{{Kind: model.MatchPresence}}, DestinationPorts: []uint16{9090}})},
	}
	st := policyStore(t, []model.Workload{dst, other, behind}, policies)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	a := &PolicyAuthorizer{Store: st, Metrics: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ap := netip.MustParseAddrPort
	tests := []struct {
		name    string
		r       Request
		wantErr string
	}{
		{"IPv4 HBONE from foo allowed", Request{Source: foo, SourceAddr: ap("10.0.0.1:4000"), Dst: ap("10.0.0.2:8080"), Workload: dst}, ""},
		{"IPv6 plaintext denied: no principal for the namespace match", Request{SourceAddr: ap("[fd00::1]:4000"), Dst: ap("[fd00::2]:8080"), Workload: dst, Plaintext: true},
			"no ALLOW policy"},
		{"IPv4 plaintext to 9090 in ns1 denied by DENY", Request{SourceAddr: ap("10.0.0.1:4000"), Dst: ap("10.0.0.2:9090"), Workload: dst, Plaintext: true},
			"DENY policy ns1/no-plaintext-9090"},
		{"IPv6 plaintext to another namespace allowed", Request{SourceAddr: ap("[fd00::1]:4000"), Dst: ap("[fd00::3]:9090"), Workload: other, Plaintext: true}, ""},
		{"IPv4 HBONE from the waypoint to a workload behind it allowed", Request{Source: gw, SourceAddr: ap("10.10.4.2:4000"), Dst: ap("10.10.5.3:5432"), Workload: behind}, ""},
		{"IPv6 HBONE from the waypoint to a workload behind it allowed", Request{Source: gw, SourceAddr: ap("[fd00:10:4::2]:4000"), Dst: ap("[fd00:10:5::3]:5432"), Workload: behind}, ""},
		{"plaintext never carries a principal", Request{Source: foo, SourceAddr: ap("10.0.0.1:4000"), Dst: ap("10.0.0.2:8080"), Workload: dst, Plaintext: true},
			"no ALLOW policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Authorize(context.Background(), tc.r)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Authorize: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Authorize = %v, want ErrDenied mentioning %q", err, tc.wantErr)
			}
		})
	}
	want := `
# HELP ambit_ztunnel_authorization_decisions_total Inbound L4 authorization decisions, by decision, deciding policy (namespace/name, or none) and its action (ALLOW, DENY, or none).
# TYPE ambit_ztunnel_authorization_decisions_total counter
ambit_ztunnel_authorization_decisions_total{action="ALLOW",decision="allow",policy="ns1/only-foo"} 1
ambit_ztunnel_authorization_decisions_total{action="ALLOW",decision="deny",policy="none"} 2
ambit_ztunnel_authorization_decisions_total{action="DENY",decision="deny",policy="ns1/no-plaintext-9090"} 1
ambit_ztunnel_authorization_decisions_total{action="none",decision="allow",policy="none"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), metrics.MetricAuthzDecisions); err != nil {
		t.Error(err)
	}
}

func TestInboundMTLSMode(t *testing.T) {
	w := model.Workload{UID: "d", Name: "server", Namespace: "ns1", MTLSMode: model.MTLSStrict, AuthorizationPolicies: []string{"ns1/peerauthentication:sel"}}
	bare := model.Workload{UID: "b", Name: "bare", Namespace: "ns9", MTLSMode: model.MTLSStrict}
	policies := []model.Policy{{Name: "peerauthentication:sel", Namespace: "ns1", Scope: model.ScopeWorkloadSelector,
		PeerAuth: &model.PeerAuthentication{Mode: model.MTLSStrict, PortLevel: map[uint16]model.MTLSMode{8080: model.MTLSPermissive}}}}
	in := &Inbound{cfg: Config{Store: policyStore(t, []model.Workload{w, bare}, policies)}}
	tests := []struct {
		name string
		w    model.Workload
		port uint16
		want model.MTLSMode
	}{
		{"port override", w, 8080, model.MTLSPermissive},
		{"selector mode", w, 9090, model.MTLSStrict},
		{"no peer authentication: workload's own mode", bare, 8080, model.MTLSStrict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := in.mtlsMode(tc.w, tc.port); got != tc.want {
				t.Fatalf("mtlsMode = %q, want %q", got, tc.want)
			}
		})
	}
}
