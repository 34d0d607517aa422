package kube

import (
	"context"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	networkingv1alpha1 "ambit.dev/api/networking/v1alpha1"
	"ambit.dev/controlplane/internal/backendpolicy"
	"ambit.dev/controlplane/internal/waypointxds"
)

var bpT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// putBackendPolicy creates a BackendPolicy in demo, created age minutes
// after bpT0, with maxRequests n on the targets.
func (e *env) putBackendPolicy(name string, age int, n int32, targets ...networkingv1alpha1.BackendPolicyTargetRef) {
	e.t.Helper()
	p := &networkingv1alpha1.BackendPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: networkingv1alpha1.SchemeGroupVersion.String(), Kind: "BackendPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name, Generation: 1,
			CreationTimestamp: metav1.NewTime(bpT0.Add(time.Duration(age) * time.Minute))},
		Spec: networkingv1alpha1.BackendPolicySpec{
			TargetRefs:     targets,
			ConnectionPool: &networkingv1alpha1.ConnectionPool{HTTP: &networkingv1alpha1.HTTPSettings{MaxRequests: &n}},
		},
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.dyn.Resource(BackendPoliciesResource).Namespace("demo").Create(context.Background(), &unstructured.Unstructured{Object: raw}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// waitAncestors polls the status of policy name until its ancestors'
// Accepted reasons are reasons, and returns the status.
func (e *env) waitAncestors(name string, reasons ...string) networkingv1alpha1.BackendPolicyStatus {
	e.t.Helper()
	var st networkingv1alpha1.BackendPolicyStatus
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		u, err := e.dyn.Resource(BackendPoliciesResource).Namespace("demo").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		st = networkingv1alpha1.BackendPolicyStatus{}
		if raw, ok := u.Object["status"].(map[string]any); ok {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &st); err != nil {
				e.t.Fatal(err)
			}
		}
		var got []string
		for _, a := range st.Ancestors {
			if c := apimeta.FindStatusCondition(a.Conditions, networkingv1alpha1.ConditionAccepted); c != nil && a.ControllerName == backendpolicy.ControllerName {
				got = append(got, c.Reason)
			}
		}
		if len(got) == len(reasons) {
			same := true
			for i := range got {
				same = same && got[i] == reasons[i]
			}
			if same {
				return st
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("BackendPolicy %s: status %+v, want Accepted reasons %v", name, st, reasons)
	return st
}

// TestBackendPolicyFeed: a BackendPolicy on a bound Service sets its
// port's settings in the waypoint input and gets Accepted; a second one on
// the same port is Conflicted until the first is deleted, then it applies;
// a policy on a missing Service is TargetNotFound.
func TestBackendPolicyFeed(t *testing.T) {
	e := start(t, append(fixture()[:len(fixture())-2], labelledService(), slice("web-abc", pod("demo", "p1", "10.244.1.10")),
		gateway(t, "demo", "wp", "service", true))...)
	web := webFor(webEndpoint("p1", "10.244.1.10", true))
	e.expectWaypointUpdate(web)
	e.runStatusWriter()
	target := networkingv1alpha1.BackendPolicyTargetRef{Kind: "Service", Name: "web"}

	e.putBackendPolicy("old", 0, 1, target)
	web.Ports[0].Backend = &waypointxds.BackendSettings{MaxRequests: 1}
	e.expectWaypointUpdate(web)
	st := e.waitAncestors("old", networkingv1alpha1.ReasonAccepted)
	if a := st.Ancestors[0]; a.AncestorRef != (networkingv1alpha1.BackendPolicyAncestorRef{Kind: "Service", Namespace: "demo", Name: "web"}) ||
		a.Conditions[0].Status != metav1.ConditionTrue || a.Conditions[0].ObservedGeneration != 1 || a.Conditions[0].Message != "applied by waypoint demo/wp" {
		t.Errorf("ancestor %+v", a)
	}

	e.putBackendPolicy("new", 5, 2, target)
	st = e.waitAncestors("new", networkingv1alpha1.ReasonConflicted)
	if msg := st.Ancestors[0].Conditions[0].Message; msg == "" {
		t.Error("Conflicted without a message")
	}
	e.putBackendPolicy("lonely", 0, 3, networkingv1alpha1.BackendPolicyTargetRef{Kind: "Service", Name: "nope"}, target)
	e.waitAncestors("lonely", networkingv1alpha1.ReasonTargetNotFound, networkingv1alpha1.ReasonAccepted)

	// lonely is as old as old and first by name: it wins web now.
	web.Ports[0].Backend = &waypointxds.BackendSettings{MaxRequests: 3}
	e.expectWaypointUpdate(web)
	e.waitAncestors("old", networkingv1alpha1.ReasonConflicted)

	for _, name := range []string{"lonely", "old"} {
		if err := e.dyn.Resource(BackendPoliciesResource).Namespace("demo").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web.Ports[0].Backend = &waypointxds.BackendSettings{MaxRequests: 2}
	for {
		// Deleting lonely first may give old the port for a moment.
		c := e.nextWaypoint()
		if c.in == nil || len(c.in.Services) != 1 {
			t.Fatalf("call %+v; want an Update with web", c)
		}
		if b := c.in.Services[0].Ports[0].Backend; b != nil && b.MaxRequests == 2 {
			break
		} else if b == nil || b.MaxRequests != 1 {
			t.Fatalf("backend settings %+v, want maxRequests 1 (old) then 2 (new)", b)
		}
	}
	e.waitAncestors("new", networkingv1alpha1.ReasonAccepted)
}

func TestNextBackendPolicyStatus(t *testing.T) {
	old := metav1.NewTime(bpT0)
	ref := networkingv1alpha1.BackendPolicyAncestorRef{Kind: "Service", Namespace: "demo", Name: "web"}
	accepted := metav1.Condition{Type: networkingv1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: networkingv1alpha1.ReasonAccepted, Message: "ok", ObservedGeneration: 1}
	withTime := accepted
	withTime.LastTransitionTime = old
	foreign := networkingv1alpha1.BackendPolicyAncestorStatus{AncestorRef: ref, ControllerName: "example.com/other"}
	ours := networkingv1alpha1.BackendPolicyAncestorStatus{AncestorRef: ref, ControllerName: backendpolicy.ControllerName, Conditions: []metav1.Condition{withTime}}
	want := []backendpolicy.Ancestor{{Ref: ref, Accepted: accepted}}

	if _, changed := NextBackendPolicyStatus(networkingv1alpha1.BackendPolicyStatus{Ancestors: []networkingv1alpha1.BackendPolicyAncestorStatus{foreign, ours}}, want); changed {
		t.Error("the same status is a change")
	}
	next, changed := NextBackendPolicyStatus(networkingv1alpha1.BackendPolicyStatus{Ancestors: []networkingv1alpha1.BackendPolicyAncestorStatus{foreign}}, want)
	if !changed || len(next.Ancestors) != 2 || next.Ancestors[0].ControllerName != "example.com/other" || next.Ancestors[1].Conditions[0].Reason != networkingv1alpha1.ReasonAccepted {
		t.Errorf("adding ours: changed=%v %+v", changed, next)
	}
	gen2 := accepted
	gen2.ObservedGeneration = 2
	next, changed = NextBackendPolicyStatus(networkingv1alpha1.BackendPolicyStatus{Ancestors: []networkingv1alpha1.BackendPolicyAncestorStatus{ours}}, []backendpolicy.Ancestor{{Ref: ref, Accepted: gen2}})
	if !changed || !next.Ancestors[0].Conditions[0].LastTransitionTime.Equal(&old) || next.Ancestors[0].Conditions[0].ObservedGeneration != 2 {
		t.Errorf("new generation, same status: changed=%v %+v; want the old transition time kept", changed, next)
	}
	next, changed = NextBackendPolicyStatus(networkingv1alpha1.BackendPolicyStatus{Ancestors: []networkingv1alpha1.BackendPolicyAncestorStatus{ours}}, nil)
	if !changed || len(next.Ancestors) != 0 {
		t.Errorf("no targets left: changed=%v %+v", changed, next)
	}
}
