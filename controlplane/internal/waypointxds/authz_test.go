package waypointxds

import (
	"maps"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// authzInput is the example waypoint with a TCP port too, ALLOW, DENY and
// AUDIT policies and 10% access log sampling (testdata/authz.golden).
func authzInput() Input {
	in := exampleInput()
	ten := uint32(10)
	in.Waypoint.AccessLogPercent = &ten
	s := &in.Services[0]
	s.Ports = append(s.Ports, Port{Name: "tcp-db", Port: 5432, TargetPort: 5432})
	s.Policies = []Policy{
		{Namespace: "demo", Name: "allow-public", Action: PolicyAllow, Rules: []PolicyRule{
			{
				From: []PolicySource{{Principals: []string{"cluster.local/ns/demo/sa/client"}}},
				To:   []PolicyOperation{{Methods: []string{"GET"}, Paths: []string{"/public*"}}},
			},
			{
				From: []PolicySource{{Namespaces: []string{"ops"}, NotIPBlocks: []string{"10.0.0.0/8"}}},
				To:   []PolicyOperation{{Ports: []string{"5432"}}},
			},
		}},
		{Namespace: "demo", Name: "deny-debug", Action: PolicyDeny, Rules: []PolicyRule{{
			To:   []PolicyOperation{{Paths: []string{"/debug*"}}},
			When: []PolicyCondition{{Key: "request.headers[X-Debug]", Values: []string{"*"}}, {Key: KeyDestinationPort, NotValues: []string{"9090"}}},
		}}},
		{Namespace: "demo", Name: "audit-all", Action: PolicyAudit, Rules: []PolicyRule{{}}},
	}
	return in
}

func chainFilters(t *testing.T, r Resources, name string) []*listenerv3.Filter {
	t.Helper()
	l := r[resource.ListenerType][ListenerMainInternal].(*listenerv3.Listener)
	for _, fc := range l.FilterChains {
		if fc.Name == name {
			return fc.Filters
		}
	}
	t.Fatalf("no filter chain %s", name)
	return nil
}

func TestAuthzFilters(t *testing.T) {
	r, err := Build(authzInput())
	if err != nil {
		t.Fatal(err)
	}
	host := "web.demo.svc.cluster.local"
	// HTTP: audit (shadow), deny, allow, then fault and router, in that order.
	fs := chainFilters(t, r, FilterChainName(host, 80, ProtocolHTTP))
	var hcm hcmv3.HttpConnectionManager
	if err := fs[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var names []string
	var rbacs []*httprbacv3.RBAC
	for _, f := range hcm.HttpFilters {
		names = append(names, f.Name)
		if f.Name == FilterHTTPRBAC {
			var rb httprbacv3.RBAC
			if err := f.GetTypedConfig().UnmarshalTo(&rb); err != nil {
				t.Fatal(err)
			}
			rbacs = append(rbacs, &rb)
		}
	}
	if want := []string{FilterHTTPRBAC, FilterHTTPRBAC, FilterHTTPRBAC, FaultFilter, "envoy.filters.http.router"}; !slices.Equal(names, want) {
		t.Fatalf("http filters %v, want %v", names, want)
	}
	if rbacs[0].Rules != nil || rbacs[0].ShadowRules.GetAction() != rbacv3.RBAC_LOG {
		t.Errorf("first filter is not AUDIT shadow rules: %v", rbacs[0])
	}
	if rbacs[1].Rules.GetAction() != rbacv3.RBAC_DENY || rbacs[2].Rules.GetAction() != rbacv3.RBAC_ALLOW {
		t.Errorf("filters 2 and 3 are %v and %v, want DENY then ALLOW", rbacs[1].Rules.GetAction(), rbacs[2].Rules.GetAction())
	}
	if got := slices.Sorted(maps.Keys(rbacs[2].Rules.Policies)); !slices.Equal(got, []string{"ns[demo]-policy[allow-public]-rule[0]", "ns[demo]-policy[allow-public]-rule[1]"}) {
		t.Errorf("ALLOW policies %v", got)
	}
	if len(hcm.AccessLog) != 1 || hcm.AccessLog[0].Filter.GetOrFilter() == nil {
		t.Errorf("access log %v, want one with an or_filter (10%% sampling or status >= 400)", hcm.AccessLog)
	}

	// TCP: network RBAC (audit, deny, allow) then tcp_proxy; the ALLOW
	// rule with HTTP fields is left out, the DENY rule's HTTP fields
	// match everything.
	tfs := chainFilters(t, r, FilterChainName(host, 5432, ProtocolTCP))
	if len(tfs) != 4 || tfs[3].Name != "envoy.filters.network.tcp_proxy" {
		t.Fatalf("tcp filters %v", tfs)
	}
	var allow, deny netrbacv3.RBAC
	if err := tfs[2].GetTypedConfig().UnmarshalTo(&allow); err != nil {
		t.Fatal(err)
	}
	if err := tfs[1].GetTypedConfig().UnmarshalTo(&deny); err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(allow.Rules.Policies)); !slices.Equal(got, []string{"ns[demo]-policy[allow-public]-rule[1]"}) {
		t.Errorf("TCP ALLOW policies %v, want only the L4 rule", got)
	}
	d := deny.Rules.Policies["ns[demo]-policy[deny-debug]-rule[0]"]
	if d == nil || d.Permissions[0].GetAndRules() == nil || strings.Contains(d.String(), "debug") || strings.Contains(strings.ToLower(d.String()), "x-debug") {
		t.Errorf("TCP DENY rule %v, want the port condition only", d)
	}
}

func TestValidatePolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		want string
	}{
		{"ok", authzInput().Services[0].Policies[0], ""},
		{"action", Policy{Action: "MAYBE"}, `action: "MAYBE"`},
		{"port", Policy{Action: PolicyAllow, Rules: []PolicyRule{{To: []PolicyOperation{{Ports: []string{"http"}}}}}}, "rules[0].to[0].operation.ports[0]"},
		{"wildcard", Policy{Action: PolicyAllow, Rules: []PolicyRule{{To: []PolicyOperation{{Paths: []string{"/a*b"}}}}}}, "paths[0]"},
		{"key", Policy{Action: PolicyDeny, Rules: []PolicyRule{{When: []PolicyCondition{{Key: "request.auth.claims[iss]", Values: []string{"x"}}}}}}, "when[0].key"},
		{"ip", Policy{Action: PolicyDeny, Rules: []PolicyRule{{When: []PolicyCondition{{Key: KeySourceIP, Values: []string{"10.0.0.0/33"}}}}}}, "when[0].values[0]"},
		{"empty when", Policy{Action: PolicyDeny, Rules: []PolicyRule{{When: []PolicyCondition{{Key: KeySourceIP}}}}}, "must set values or notValues"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(ValidatePolicy(tc.p), "; ")
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("ValidatePolicy = %q, want one containing %q", got, tc.want)
			}
		})
	}
	in := authzInput()
	in.Services[0].Policies = append(in.Services[0].Policies, Policy{Namespace: "demo", Name: "bad", Action: "MAYBE"})
	if _, err := Build(in); err == nil || !strings.Contains(err.Error(), "demo/bad") {
		t.Errorf("Build with an invalid policy: %v, want an error naming it", err)
	}
}
