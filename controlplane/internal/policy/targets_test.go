package policy

import (
	"maps"
	"strings"
	"testing"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCompileTargeted(t *testing.T) {
	svc := securityv1alpha1.PolicyTargetReference{Kind: "Service", Name: "web"}
	gw := securityv1alpha1.PolicyTargetReference{Group: securityv1alpha1.GatewayGroup, Kind: "Gateway", Name: "waypoint"}
	l4Rules := []securityv1alpha1.Rule{{From: []securityv1alpha1.RuleFrom{{Source: securityv1alpha1.Source{Namespaces: []string{"demo"}}}}}}
	l7Rules := []securityv1alpha1.Rule{{To: []securityv1alpha1.RuleTo{{Operation: securityv1alpha1.Operation{Methods: []string{"GET"}}}}}}
	whenRules := []securityv1alpha1.Rule{{When: []securityv1alpha1.Condition{{Key: "request.headers[x-user]", Values: []string{"a"}}}}}
	sel := map[string]string{"app": "web"}
	for _, tc := range []struct {
		name     string
		action   securityv1alpha1.Action
		rules    []securityv1alpha1.Rule
		targets  []Target
		l7       []string
		reason   string
		message  string
		authz    workloadv1alpha1.Action // -1: nothing sent
		denyAll  bool
		selector map[string]string
	}{
		{name: "service with waypoint", rules: l7Rules, targets: []Target{{Ref: svc, Found: true, Waypoint: "demo/waypoint"}},
			reason: "Accepted", message: "enforced by waypoint demo/waypoint", authz: -1},
		{name: "the waypoint gateway", rules: whenRules, targets: []Target{{Ref: gw, Found: true, Waypoint: "demo/waypoint"}},
			reason: "Accepted", message: "enforced by waypoint demo/waypoint", authz: -1},
		{name: "service without waypoint, L4", rules: l4Rules, targets: []Target{{Ref: svc, Found: true, Selector: sel}},
			reason: "Accepted", message: "Service web", authz: workloadv1alpha1.Action_ALLOW, selector: sel},
		{name: "service without waypoint, HTTP", rules: l7Rules, targets: []Target{{Ref: svc, Found: true, Selector: sel}},
			reason: "WaypointRequired", message: "rules[0] sets methods", authz: workloadv1alpha1.Action_DENY, denyAll: true, selector: sel},
		{name: "service without waypoint, when", rules: whenRules, targets: []Target{{Ref: svc, Found: true, Selector: sel}},
			reason: "WaypointRequired", message: "rules[0] sets when", authz: workloadv1alpha1.Action_DENY, denyAll: true, selector: sel},
		{name: "AUDIT without waypoint audits L4 rules", action: securityv1alpha1.ActionAudit, rules: append(l4Rules, l7Rules...),
			targets: []Target{{Ref: svc, Found: true, Selector: sel}}, reason: "WaypointRequired", message: "not audited", authz: workloadv1alpha1.Action_AUDIT, selector: sel},
		{name: "service selecting no pods", rules: l7Rules, targets: []Target{{Ref: svc, Found: true}}, reason: "WaypointRequired", authz: -1},
		{name: "unknown target", rules: l7Rules, targets: []Target{{Ref: svc}}, reason: "TargetNotFound", message: "Service demo/web not found", authz: -1},
		{name: "gateway that is not a waypoint", rules: l7Rules, targets: []Target{{Ref: gw, Found: true}}, reason: "TargetNotFound", message: "not a waypoint", authz: -1},
		{name: "invalid rule on waypoint", rules: l7Rules, l7: []string{"rules[0].when[0].key: bad"}, targets: []Target{{Ref: svc, Found: true, Waypoint: "demo/waypoint"}},
			reason: "Invalid", message: "when[0].key", authz: -1},
		{name: "invalid rule without waypoint fails closed", rules: l4Rules, l7: []string{"bad"}, targets: []Target{{Ref: svc, Found: true, Selector: sel}},
			reason: "Invalid", authz: workloadv1alpha1.Action_DENY, denyAll: true, selector: sel},
		{name: "two services without waypoint", rules: l4Rules, targets: []Target{{Ref: svc, Found: true, Selector: sel}, {Ref: securityv1alpha1.PolicyTargetReference{Kind: "Service", Name: "b"}, Found: true, Selector: map[string]string{"app": "b"}}},
			reason: "Invalid", message: "at most one Service", authz: workloadv1alpha1.Action_ALLOW, selector: sel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refs := make([]securityv1alpha1.PolicyTargetReference, len(tc.targets))
			for i, tg := range tc.targets {
				refs[i] = tg.Ref
			}
			p := &securityv1alpha1.AuthorizationPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "p", Generation: 3},
				Spec:       securityv1alpha1.AuthorizationPolicySpec{TargetRefs: refs, Action: tc.action, Rules: tc.rules},
			}
			c := CompileTargeted(p, "ambit-system", tc.targets, tc.l7)
			if c.Condition.Reason != tc.reason || !strings.Contains(c.Condition.Message, tc.message) || c.Condition.ObservedGeneration != 3 {
				t.Errorf("condition %+v, want reason %s with %q", c.Condition, tc.reason, tc.message)
			}
			if (c.Condition.Status == metav1.ConditionTrue) != (tc.reason == "Accepted") {
				t.Errorf("status %s for reason %s", c.Condition.Status, c.Condition.Reason)
			}
			switch {
			case tc.authz == -1 && c.Authorization != nil:
				t.Errorf("sent %v to ztunnel, want nothing", c.Authorization)
			case tc.authz != -1 && (c.Authorization == nil || c.Authorization.Action != tc.authz):
				t.Fatalf("authorization %v, want action %v", c.Authorization, tc.authz)
			case tc.authz != -1:
				if c.Scope != workloadv1alpha1.Scope_WORKLOAD_SELECTOR || c.Authorization.Scope != c.Scope || !maps.Equal(c.Selector, tc.selector) {
					t.Errorf("scope %v/%v selector %v, want WORKLOAD_SELECTOR %v", c.Scope, c.Authorization.Scope, c.Selector, tc.selector)
				}
				if got := len(c.Authorization.Rules) == 1 && len(c.Authorization.Rules[0].Clauses) == 0 && c.Authorization.Action == workloadv1alpha1.Action_DENY; got != tc.denyAll {
					t.Errorf("deny-all = %v, want %v (%v)", got, tc.denyAll, c.Authorization)
				}
			}
			if tc.selector != nil && !c.Selects("demo", map[string]string{"app": "web", "x": "y"}) {
				t.Error("does not select the Service's pods")
			}
			if tc.selector != nil && c.Selects("other", map[string]string{"app": "web"}) {
				t.Error("selects pods of another namespace")
			}
		})
	}
}
