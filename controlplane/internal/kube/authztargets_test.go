package kube

import (
	"context"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/waypointxds"
)

// TestWaypointFeedPolicies attaches AuthorizationPolicies with targetRefs
// to a Service bound to a waypoint: the waypoint's input carries them
// (XDS.md §12), an invalid one as a deny-all, and deleting them removes
// them.
func TestWaypointFeedPolicies(t *testing.T) {
	p1 := pod("demo", "p1", "10.244.1.10")
	e := start(t, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", p1),
		gateway(t, "demo", "wp", "service", true))...)
	web := webFor(webEndpoint("p1", "10.244.1.10", true))
	e.expectWaypointUpdate(web)

	target := []securityv1alpha1.PolicyTargetReference{{Kind: "Service", Name: "web"}}
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("demo", "public", nil, securityv1alpha1.AuthorizationPolicySpec{
		TargetRefs: target,
		Rules: []securityv1alpha1.Rule{{
			From: []securityv1alpha1.RuleFrom{{Source: securityv1alpha1.Source{Principals: []string{"cluster.local/ns/demo/sa/client"}}}},
			To:   []securityv1alpha1.RuleTo{{Operation: securityv1alpha1.Operation{Methods: []string{"GET"}, Paths: []string{"/public*"}}}},
			When: []securityv1alpha1.Condition{{Key: "request.headers[x-user]", Values: []string{"a"}}},
		}},
	}), "AuthorizationPolicy")
	public := waypointxds.Policy{Namespace: "demo", Name: "public", Action: waypointxds.PolicyAllow, Rules: []waypointxds.PolicyRule{{
		From: []waypointxds.PolicySource{{Principals: []string{"cluster.local/ns/demo/sa/client"}}},
		To:   []waypointxds.PolicyOperation{{Methods: []string{"GET"}, Paths: []string{"/public*"}}},
		When: []waypointxds.PolicyCondition{{Key: "request.headers[x-user]", Values: []string{"a"}}},
	}}}
	withPolicies := func(ps ...waypointxds.Policy) waypointxds.Service {
		s := web
		s.Policies = ps
		return s
	}
	e.expectWaypointUpdate(withPolicies(public))

	// A policy with an unknown `when` key (past the CRD, e.g. written
	// before an upgrade) fails closed at the waypoint.
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("demo", "broken", nil, securityv1alpha1.AuthorizationPolicySpec{
		TargetRefs: target, Action: securityv1alpha1.ActionDeny,
		Rules: []securityv1alpha1.Rule{{When: []securityv1alpha1.Condition{{Key: "request.auth.claims[iss]", Values: []string{"x"}}}}},
	}), "AuthorizationPolicy")
	denyAll := waypointxds.Policy{Namespace: "demo", Name: "broken", Action: waypointxds.PolicyDeny, Rules: []waypointxds.PolicyRule{{}}}
	e.expectWaypointUpdate(withPolicies(denyAll, public))

	// A policy on another Service is not this Service's.
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("demo", "elsewhere", nil, securityv1alpha1.AuthorizationPolicySpec{
		TargetRefs: []securityv1alpha1.PolicyTargetReference{{Kind: "Service", Name: "other"}},
	}), "AuthorizationPolicy")
	// The waypoint Gateway as target: applies to its Services.
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("demo", "on-gateway", nil, securityv1alpha1.AuthorizationPolicySpec{
		TargetRefs: []securityv1alpha1.PolicyTargetReference{{Group: securityv1alpha1.GatewayGroup, Kind: "Gateway", Name: "wp"}},
		Action:     securityv1alpha1.ActionAudit, Rules: []securityv1alpha1.Rule{{}},
	}), "AuthorizationPolicy")
	audit := waypointxds.Policy{Namespace: "demo", Name: "on-gateway", Action: waypointxds.PolicyAudit, Rules: []waypointxds.PolicyRule{{}}}
	e.expectWaypointUpdate(withPolicies(denyAll, audit, public))

	e.deletePolicy(AuthorizationPoliciesResource, "demo", "broken")
	e.expectWaypointUpdate(withPolicies(audit, public))

	// The resources Build makes from it are valid Envoy configuration.
	if _, err := waypointxds.Build(waypointxds.Input{Waypoint: waypointxds.Waypoint{Namespace: "demo", Name: "wp"},
		Services: []waypointxds.Service{withPolicies(audit, public)}}); err != nil {
		t.Fatal(err)
	}
}

// TestTargetedPolicyWithoutWaypoint: a targetRefs policy on a Service
// without a waypoint is enforced by ztunnel on the Service's pods (its
// selector), and follows the Service when it appears.
func TestTargetedPolicyWithoutWaypoint(t *testing.T) {
	e := start(t, fixture()...)
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("other", "api-from-demo", nil, securityv1alpha1.AuthorizationPolicySpec{
		TargetRefs: []securityv1alpha1.PolicyTargetReference{{Kind: "Service", Name: "api"}},
		Rules:      []securityv1alpha1.Rule{{From: []securityv1alpha1.RuleFrom{{Source: securityv1alpha1.Source{Namespaces: []string{"demo"}}}}}},
	}), "AuthorizationPolicy")
	// No Service api yet: nothing for ztunnel (TargetNotFound).
	e.sentinel()

	svc := service()
	svc.Namespace, svc.Name = "other", "api"
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "10.96.0.30", []string{"10.96.0.30"}
	svc.Spec.Selector = map[string]string{"app": "web"}
	if _, err := e.client.CoreV1().Services("other").Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *workloadv1alpha1.Authorization
	for got == nil {
		got = e.nextAuthz().updated["other/api-from-demo"]
	}
	if got.GetScope() != workloadv1alpha1.Scope_WORKLOAD_SELECTOR || got.GetAction() != workloadv1alpha1.Action_ALLOW || len(got.GetRules()) != 1 {
		t.Fatalf("published %v, want a selector ALLOW with the rule", got)
	}
	// The Service's pod (p3, app=web in namespace other) lists it.
	for i := 0; ; i++ {
		if w := e.next().updated["uid-p3"]; w != nil && slices.Equal(w.GetWorkload().GetAuthorizationPolicies(), []string{"other/api-from-demo"}) {
			break
		}
		if i == 10 {
			t.Fatal("p3 never listed other/api-from-demo")
		}
	}
}
