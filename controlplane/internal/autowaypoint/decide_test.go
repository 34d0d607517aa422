package autowaypoint

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"ambit.dev/controlplane/internal/model"
)

func ours(programmed bool, reason string) *Gateway {
	return &Gateway{Ours: true, Class: model.WaypointClass, Programmed: programmed, Reason: reason}
}

var (
	plain     = Service{}
	boundUs   = Service{Labels: map[string]string{model.LabelUseWaypoint: GatewayName}, Annotations: map[string]string{AnnotationAutoWaypoint: GatewayName}}
	userBound = Service{Labels: map[string]string{model.LabelUseWaypoint: "mine"}}
	userNone  = Service{Labels: map[string]string{model.LabelUseWaypoint: model.UseWaypointNone}}
	// A user relabelled a Service the controller had bound.
	takenOver = Service{Labels: map[string]string{model.LabelUseWaypoint: "mine"}, Annotations: map[string]string{AnnotationAutoWaypoint: GatewayName}}
)

func TestDecide(t *testing.T) {
	const webReason = "web: HTTPRoute shop/canary"
	route := map[string][]string{"web": {"HTTPRoute shop/canary"}}
	for _, tc := range []struct {
		name string
		ns   Namespace
		want Plan
	}{{
		name: "nothing L7: nothing to do",
		ns:   Namespace{Services: map[string]Service{"web": plain}},
		want: Plan{},
	}, {
		name: "first route: the Gateway is created, nothing bound yet",
		ns:   Namespace{Services: map[string]Service{"web": plain, "db": plain}, Needs: route},
		want: Plan{EnsureGateway: true, Reason: webReason},
	}, {
		name: "Gateway not Programmed yet: wait",
		ns:   Namespace{Services: map[string]Service{"web": plain}, Needs: route, Gateway: ours(false, webReason)},
		want: Plan{Reason: webReason},
	}, {
		name: "Gateway Programmed: the Service is bound",
		ns:   Namespace{Services: map[string]Service{"web": plain, "db": plain}, Needs: route, Gateway: ours(true, webReason)},
		want: Plan{Reason: webReason, Bind: []string{"web"}},
	}, {
		name: "steady state: nothing to do",
		ns:   Namespace{Services: map[string]Service{"web": boundUs}, Needs: route, Gateway: ours(true, webReason)},
		want: Plan{Reason: webReason},
	}, {
		name: "a second object: the reason is updated",
		ns: Namespace{Services: map[string]Service{"web": boundUs, "api": plain},
			Needs:   map[string][]string{"web": {"HTTPRoute shop/canary", "AuthorizationPolicy shop/admin"}, "api": {"GRPCRoute shop/api"}},
			Gateway: ours(true, webReason)},
		want: Plan{EnsureGateway: true, Reason: "api: GRPCRoute shop/api; web: AuthorizationPolicy shop/admin, HTTPRoute shop/canary", Bind: []string{"api"}},
	}, {
		name: "route deleted: unbind first, keep the Gateway",
		ns:   Namespace{Services: map[string]Service{"web": boundUs}, Gateway: ours(true, webReason)},
		want: Plan{Unbind: []string{"web"}},
	}, {
		name: "route deleted and unbound: the Gateway goes",
		ns:   Namespace{Services: map[string]Service{"web": plain}, Gateway: ours(true, webReason)},
		want: Plan{DeleteGateway: true},
	}, {
		name: "Service deleted: the Gateway goes",
		ns:   Namespace{Services: map[string]Service{}, Needs: route, Gateway: ours(true, webReason)},
		want: Plan{DeleteGateway: true},
	}, {
		name: "a user's own waypoint label wins",
		ns:   Namespace{Services: map[string]Service{"web": userBound}, Needs: route},
		want: Plan{},
	}, {
		name: "a user's none wins",
		ns:   Namespace{Services: map[string]Service{"web": userNone}, Needs: route},
		want: Plan{},
	}, {
		name: "the namespace's label wins",
		ns:   Namespace{Labels: map[string]string{model.LabelUseWaypoint: "shared"}, Services: map[string]Service{"web": plain}, Needs: route},
		want: Plan{},
	}, {
		name: "namespace opted out: nothing made, and what was made goes",
		ns: Namespace{Labels: map[string]string{LabelNamespaceAutoWaypoint: NamespaceOptOut},
			Services: map[string]Service{"web": boundUs}, Needs: route, Gateway: ours(true, webReason)},
		want: Plan{Unbind: []string{"web"}},
	}, {
		name: "a user relabelled the Service: only the annotation goes, the Gateway too",
		ns:   Namespace{Services: map[string]Service{"web": takenOver}, Needs: route, Gateway: ours(true, webReason)},
		want: Plan{Unbind: []string{"web"}, DeleteGateway: true},
	}, {
		name: "a user's Gateway of the name is never touched",
		ns:   Namespace{Name: "shop", Services: map[string]Service{"web": plain}, Needs: route, Gateway: &Gateway{Class: model.WaypointClass, Programmed: true}},
		want: Plan{Conflict: "a Gateway shop/ambit-auto-waypoint that Ambit did not auto-provision exists: rename it, or bind the Services to a waypoint yourself (ambit.dev/use-waypoint)"},
	}, {
		name: "a user's Gateway of the name is not deleted either",
		ns:   Namespace{Services: map[string]Service{"web": plain}, Gateway: &Gateway{Class: model.WaypointClass}},
		want: Plan{},
	}, {
		name: "our label on a Gateway of another class: not ours to use",
		ns:   Namespace{Name: "shop", Services: map[string]Service{"web": plain}, Needs: route, Gateway: &Gateway{Ours: true, Class: "other"}},
		want: Plan{Conflict: "a Gateway shop/ambit-auto-waypoint that Ambit did not auto-provision exists: rename it, or bind the Services to a waypoint yourself (ambit.dev/use-waypoint)"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.ns)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Plan{}, "Skipped")); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecideSkippedSaysWhy(t *testing.T) {
	p := Decide(Namespace{Name: "shop", Services: map[string]Service{"web": userNone}, Needs: map[string][]string{"web": {"HTTPRoute shop/r"}}})
	if want := "Service shop/web chooses its waypoint itself (ambit.dev/use-waypoint=none)"; p.Skipped["web"] != want {
		t.Errorf("Skipped[web] = %q, want %q", p.Skipped["web"], want)
	}
}
