package kube

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

// toUnstructured returns a policy object as the dynamic client holds it.
func toUnstructured(t *testing.T, obj runtime.Object, kind string) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(securityv1alpha1.SchemeGroupVersion.String())
	u.SetKind(kind)
	return u
}

func authzPolicy(namespace, name string, sel map[string]string, spec securityv1alpha1.AuthorizationPolicySpec) *securityv1alpha1.AuthorizationPolicy {
	if sel != nil {
		spec.Selector = &securityv1alpha1.WorkloadSelector{MatchLabels: sel}
	}
	return &securityv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Generation: 1},
		Spec:       spec,
	}
}

func (e *env) createPolicy(gvr schema.GroupVersionResource, obj runtime.Object, kind string) {
	e.t.Helper()
	u := toUnstructured(e.t, obj, kind)
	if _, err := e.dyn.Resource(gvr).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deletePolicy(gvr schema.GroupVersionResource, namespace, name string) {
	e.t.Helper()
	if err := e.dyn.Resource(gvr).Namespace(namespace).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) nextAuthz() authzCall {
	e.t.Helper()
	select {
	case c := <-e.rec.authz:
		return c
	case <-time.After(waitTimeout):
		e.t.Fatal("no UpdateAuthorizations call")
		return authzCall{}
	}
}

func denyFromUntrusted() securityv1alpha1.AuthorizationPolicySpec {
	return securityv1alpha1.AuthorizationPolicySpec{
		Action: securityv1alpha1.ActionDeny,
		Rules:  []securityv1alpha1.Rule{{From: []securityv1alpha1.RuleFrom{{Source: securityv1alpha1.Source{Namespaces: []string{"untrusted"}}}}}},
	}
}

func TestSelectorPolicyIsPublishedAndListedOnTheWorkloadsItSelects(t *testing.T) {
	e := start(t, fixture()...)
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("other", "deny-untrusted", map[string]string{"app": "web"}, denyFromUntrusted()), "AuthorizationPolicy")

	a := e.nextAuthz()
	got := a.updated["other/deny-untrusted"]
	if got == nil || got.GetScope() != workloadv1alpha1.Scope_WORKLOAD_SELECTOR || got.GetAction() != workloadv1alpha1.Action_DENY || len(a.removed) != 0 {
		t.Fatalf("UpdateAuthorizations(%v, removed %v), want other/deny-untrusted as a selector DENY", a.updated, a.removed)
	}
	// Only p3 (namespace other) is selected; demo's pods are not touched.
	c := e.expect([]string{"uid-p3"}, nil)
	if ps := wl(t, c, "uid-p3").GetAuthorizationPolicies(); !slices.Equal(ps, []string{"other/deny-untrusted"}) {
		t.Fatalf("p3 authorization_policies = %v, want [other/deny-untrusted]", ps)
	}

	// A pod that stops matching the selector drops the reference.
	e.updatePod("other", "p3", func(p *corev1.Pod) { p.Labels["app"] = "db" })
	c = e.expect([]string{"uid-p3"}, nil)
	if ps := wl(t, c, "uid-p3").GetAuthorizationPolicies(); len(ps) != 0 {
		t.Fatalf("p3 no longer matches, authorization_policies = %v", ps)
	}
	e.updatePod("other", "p3", func(p *corev1.Pod) { p.Labels["app"] = "web" })
	e.expect([]string{"uid-p3"}, nil)

	e.deletePolicy(AuthorizationPoliciesResource, "other", "deny-untrusted")
	a = e.nextAuthz()
	if len(a.updated) != 0 || !slices.Equal(a.removed, []string{"other/deny-untrusted"}) {
		t.Fatalf("after delete: UpdateAuthorizations(%v, removed %v), want other/deny-untrusted removed", a.updated, a.removed)
	}
	c = e.expect([]string{"uid-p3"}, nil)
	if ps := wl(t, c, "uid-p3").GetAuthorizationPolicies(); len(ps) != 0 {
		t.Fatalf("after delete, authorization_policies = %v", ps)
	}
}

func TestNamespacePolicyIsNotListedOnWorkloads(t *testing.T) {
	e := start(t, fixture()...)
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("other", "allow-nothing", nil, securityv1alpha1.AuthorizationPolicySpec{}), "AuthorizationPolicy")
	a := e.nextAuthz()
	got := a.updated["other/allow-nothing"]
	if got == nil || got.GetScope() != workloadv1alpha1.Scope_NAMESPACE || got.GetAction() != workloadv1alpha1.Action_ALLOW || len(got.GetRules()) != 0 {
		t.Fatalf("UpdateAuthorizations(%v), want other/allow-nothing: NAMESPACE, ALLOW, no rules", a.updated)
	}
	// No workload changes: the next address update is the sentinel's.
	e.sentinel()
}

func TestRootNamespaceSelectorPolicySelectsEveryNamespace(t *testing.T) {
	e := start(t, fixture()...)
	e.createPolicy(AuthorizationPoliciesResource, authzPolicy("ambit-system", "mesh-deny", map[string]string{"app": "web"}, denyFromUntrusted()), "AuthorizationPolicy")
	e.nextAuthz()
	c := e.expect([]string{"uid-p1", "uid-p2", "uid-p3"}, nil)
	for _, uid := range []string{"uid-p1", "uid-p2", "uid-p3"} {
		if ps := wl(t, c, uid).GetAuthorizationPolicies(); !slices.Equal(ps, []string{"ambit-system/mesh-deny"}) {
			t.Fatalf("%s authorization_policies = %v, want [ambit-system/mesh-deny]", uid, ps)
		}
	}
}

func TestPeerAuthenticationIsPublished(t *testing.T) {
	e := start(t, fixture()...)
	pa := &securityv1alpha1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "strict", Generation: 1},
		Spec:       securityv1alpha1.PeerAuthenticationSpec{MTLS: &securityv1alpha1.MutualTLS{Mode: securityv1alpha1.MTLSModeStrict}},
	}
	e.createPolicy(PeerAuthenticationsResource, pa, "PeerAuthentication")
	a := e.nextAuthz()
	got := a.updated["other/peerauthentication:strict"]
	if got.GetPeerAuthentication().GetMode() != workloadv1alpha1.MTLSMode_STRICT || got.GetScope() != workloadv1alpha1.Scope_NAMESPACE {
		t.Fatalf("UpdateAuthorizations(%v), want other/peerauthentication:strict NAMESPACE STRICT", a.updated)
	}
}

func TestPoliciesPresentAtStartArePublishedBeforeWorkloads(t *testing.T) {
	objs := append(fixture(), toUnstructured(t, authzPolicy("other", "deny-untrusted", map[string]string{"app": "web"}, denyFromUntrusted()), "AuthorizationPolicy"))
	e := start(t, objs...)
	// start read the first address batch; the authorization batch came
	// before it.
	select {
	case a := <-e.rec.authz:
		if a.updated["other/deny-untrusted"] == nil {
			t.Fatalf("initial authorizations %v, want other/deny-untrusted", a.updated)
		}
	default:
		t.Fatal("the initial address batch was published before the authorizations")
	}
	if ps := wl(t, e.initial, "uid-p3").GetAuthorizationPolicies(); !slices.Equal(ps, []string{"other/deny-untrusted"}) {
		t.Fatalf("initial p3 authorization_policies = %v", ps)
	}
}

func TestStatusWriterWritesAcceptedConditions(t *testing.T) {
	e := start(t, fixture()...)
	e.runStatusWriter()

	bad := denyFromUntrusted()
	bad.Rules[0].From[0].Source.IPBlocks = []string{"10.0.0.0/33"}
	l7 := securityv1alpha1.AuthorizationPolicySpec{Rules: []securityv1alpha1.Rule{{To: []securityv1alpha1.RuleTo{{Operation: securityv1alpha1.Operation{Methods: []string{"GET"}}}}}}}
	cases := []struct {
		name, reason string
		status       metav1.ConditionStatus
		spec         securityv1alpha1.AuthorizationPolicySpec
	}{
		{"valid", securityv1alpha1.ReasonAccepted, metav1.ConditionTrue, denyFromUntrusted()},
		{"bad-cidr", securityv1alpha1.ReasonInvalid, metav1.ConditionFalse, bad},
		{"http-fields", securityv1alpha1.ReasonUnsupportedL7, metav1.ConditionFalse, l7},
	}
	for _, tc := range cases {
		e.createPolicy(AuthorizationPoliciesResource, authzPolicy("other", tc.name, nil, tc.spec), "AuthorizationPolicy")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cond *metav1.Condition
			deadline := time.Now().Add(waitTimeout)
			for cond == nil && time.Now().Before(deadline) {
				u, err := e.dyn.Resource(AuthorizationPoliciesResource).Namespace("other").Get(context.Background(), tc.name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				var st securityv1alpha1.PolicyStatus
				if raw, ok := u.Object["status"].(map[string]any); ok {
					if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &st); err != nil {
						t.Fatal(err)
					}
				}
				cond = apimeta.FindStatusCondition(st.Conditions, securityv1alpha1.ConditionAccepted)
				if cond == nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
			if cond == nil {
				t.Fatal("no Accepted condition written")
			}
			if cond.Status != tc.status || cond.Reason != tc.reason || cond.ObservedGeneration != 1 || cond.Message == "" || cond.LastTransitionTime.IsZero() {
				t.Fatalf("Accepted = %+v, want status %s reason %s, generation 1, a message and a transition time", cond, tc.status, tc.reason)
			}
		})
	}
}

// runStatusWriter runs the controller's status writer until the test ends.
func (e *env) runStatusWriter() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.ctrl.RunStatusWriter(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("RunStatusWriter: %v", err)
		}
	})
}

func TestNextStatus(t *testing.T) {
	accepted := metav1.Condition{Type: securityv1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: securityv1alpha1.ReasonAccepted, Message: "ok", ObservedGeneration: 2}
	old := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	withTime := func(c metav1.Condition, tm metav1.Time) metav1.Condition { c.LastTransitionTime = tm; return c }
	other := metav1.Condition{Type: "Other", Status: metav1.ConditionTrue, Reason: "X", LastTransitionTime: old}
	cases := []struct {
		name        string
		cur         securityv1alpha1.PolicyStatus
		want        metav1.Condition
		changed     bool
		keepsTime   bool
		wantOthers  int
		wantReason  string
		wantGenTop  int64
		wantMessage string
	}{
		{name: "empty status gets the condition", want: accepted, changed: true, wantReason: securityv1alpha1.ReasonAccepted, wantGenTop: 2, wantMessage: "ok"},
		{name: "same condition and generation: no write",
			cur:  securityv1alpha1.PolicyStatus{ObservedGeneration: 2, Conditions: []metav1.Condition{withTime(accepted, old)}},
			want: accepted, changed: false, keepsTime: true, wantReason: securityv1alpha1.ReasonAccepted, wantGenTop: 2, wantMessage: "ok"},
		{name: "new generation, same status keeps the transition time",
			cur:  securityv1alpha1.PolicyStatus{ObservedGeneration: 1, Conditions: []metav1.Condition{withTime(func() metav1.Condition { c := accepted; c.ObservedGeneration = 1; return c }(), old)}},
			want: accepted, changed: true, keepsTime: true, wantReason: securityv1alpha1.ReasonAccepted, wantGenTop: 2, wantMessage: "ok"},
		{name: "flip to invalid keeps other conditions",
			cur:     securityv1alpha1.PolicyStatus{ObservedGeneration: 2, Conditions: []metav1.Condition{other, withTime(accepted, old)}},
			want:    metav1.Condition{Type: securityv1alpha1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: securityv1alpha1.ReasonInvalid, Message: "bad", ObservedGeneration: 2},
			changed: true, wantOthers: 1, wantReason: securityv1alpha1.ReasonInvalid, wantGenTop: 2, wantMessage: "bad"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			next, changed := NextStatus(tc.cur, tc.want)
			if changed != tc.changed {
				t.Fatalf("changed = %v, want %v", changed, tc.changed)
			}
			c := apimeta.FindStatusCondition(next.Conditions, securityv1alpha1.ConditionAccepted)
			if c == nil || c.Reason != tc.wantReason || c.Message != tc.wantMessage || next.ObservedGeneration != tc.wantGenTop {
				t.Fatalf("next = %+v", next)
			}
			if tc.keepsTime != c.LastTransitionTime.Equal(&old) {
				t.Fatalf("transition time %v, keeps old = %v", c.LastTransitionTime, tc.keepsTime)
			}
			if got := len(next.Conditions) - 1; got != tc.wantOthers {
				t.Fatalf("other conditions = %d, want %d", got, tc.wantOthers)
			}
			if len(tc.cur.Conditions) > 0 && &next.Conditions[0] == &tc.cur.Conditions[0] && changed {
				t.Fatal("NextStatus modified its input")
			}
		})
	}
}
