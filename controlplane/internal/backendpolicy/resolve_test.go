package backendpolicy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	networkingv1alpha1 "ambit.dev/api/networking/v1alpha1"
	"ambit.dev/controlplane/internal/waypointxds"
)

func ptr[T any](v T) *T { return &v }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// policy is a BackendPolicy in namespace demo created age minutes after t0
// with maxRequests n on targets ("svc" or "svc/port").
func policy(name string, age, n int, targets ...string) *networkingv1alpha1.BackendPolicy {
	p := &networkingv1alpha1.BackendPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name, Generation: 2,
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))},
		Spec: networkingv1alpha1.BackendPolicySpec{
			ConnectionPool: &networkingv1alpha1.ConnectionPool{HTTP: &networkingv1alpha1.HTTPSettings{MaxRequests: ptr(int32(n))}},
		},
	}
	for _, t := range targets {
		svc, port, _ := strings.Cut(t, "/")
		p.Spec.TargetRefs = append(p.Spec.TargetRefs, networkingv1alpha1.BackendPolicyTargetRef{Kind: "Service", Name: svc, SectionName: port})
	}
	return p
}

// lookup knows echo (http 80, grpc 9090; bound to demo/waypoint), plain
// (http 80, no waypoint).
func lookup(r ServiceRef) (Service, bool) {
	switch r {
	case ServiceRef{"demo", "echo"}:
		return Service{Ports: []Port{{"http", 80}, {"grpc", 9090}}, Waypoint: "demo/waypoint"}, true
	case ServiceRef{"demo", "plain"}:
		return Service{Ports: []Port{{"http", 80}}}, true
	}
	return Service{}, false
}

func TestResolve(t *testing.T) {
	echo := ServiceRef{"demo", "echo"}
	max := func(n uint32) *waypointxds.BackendSettings { return &waypointxds.BackendSettings{MaxRequests: n} }
	type status map[string][]string // policy → per target "Reason" or "Reason: message part"
	for _, tc := range []struct {
		name     string
		policies []*networkingv1alpha1.BackendPolicy
		settings map[ServicePort]*waypointxds.BackendSettings
		status   status
	}{
		{
			name:     "whole service",
			policies: []*networkingv1alpha1.BackendPolicy{policy("a", 0, 1, "echo")},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 80}: max(1), {echo, 9090}: max(1)},
			status:   status{"a": {"Accepted: applied by waypoint demo/waypoint"}},
		},
		{
			name:     "one port by name",
			policies: []*networkingv1alpha1.BackendPolicy{policy("a", 0, 1, "echo/grpc")},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 9090}: max(1)},
			status:   status{"a": {"Accepted"}},
		},
		{
			name:     "oldest wins, the newer is Conflicted",
			policies: []*networkingv1alpha1.BackendPolicy{policy("new", 5, 2, "echo"), policy("old", 1, 1, "echo")},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 80}: max(1), {echo, 9090}: max(1)},
			status: status{"old": {"Accepted"},
				"new": {"Conflicted: lost port 80 to BackendPolicy old, port 9090 to BackendPolicy old"}},
		},
		{
			name:     "same age: the first by name wins",
			policies: []*networkingv1alpha1.BackendPolicy{policy("b", 0, 2, "echo/http"), policy("a", 0, 1, "echo/http")},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 80}: max(1)},
			status:   status{"a": {"Accepted"}, "b": {"Conflicted: lost port 80 to BackendPolicy a"}},
		},
		{
			name: "a port policy overrides a service policy on its port only, without conflict",
			policies: []*networkingv1alpha1.BackendPolicy{
				policy("svc", 0, 1, "echo"), policy("port", 9, 2, "echo/http")},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 80}: max(2), {echo, 9090}: max(1)},
			status:   status{"svc": {"Accepted"}, "port": {"Accepted"}},
		},
		{
			name:     "conflicted on one target, accepted on another",
			policies: []*networkingv1alpha1.BackendPolicy{policy("old", 0, 1, "echo/http"), policy("new", 1, 2, "echo/grpc", "echo/http")},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 80}: max(1), {echo, 9090}: max(2)},
			status:   status{"old": {"Accepted"}, "new": {"Accepted", "Conflicted: lost port 80 to BackendPolicy old"}},
		},
		{
			name:     "target not found",
			policies: []*networkingv1alpha1.BackendPolicy{policy("a", 0, 1, "nope", "echo/admin", "echo")},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 80}: max(1), {echo, 9090}: max(1)},
			status: status{"a": {"TargetNotFound: Service demo/nope not found",
				`TargetNotFound: Service demo/echo has no TCP port named "admin"`, "Accepted"}},
		},
		{
			name:     "no waypoint",
			policies: []*networkingv1alpha1.BackendPolicy{policy("a", 0, 1, "plain")},
			settings: map[ServicePort]*waypointxds.BackendSettings{},
			status:   status{"a": {"WaypointRequired: Service demo/plain is not bound to a waypoint"}},
		},
		{
			name: "an invalid policy claims nothing",
			policies: []*networkingv1alpha1.BackendPolicy{
				func() *networkingv1alpha1.BackendPolicy {
					p := policy("bad", 0, 1, "echo")
					p.Spec.OutlierDetection = &networkingv1alpha1.OutlierDetection{Consecutive5xxErrors: ptr(int32(1)), MaxEjectionPercent: ptr(int32(101))}
					return p
				}(),
				policy("good", 5, 2, "echo"),
			},
			settings: map[ServicePort]*waypointxds.BackendSettings{{echo, 80}: max(2), {echo, 9090}: max(2)},
			status:   status{"bad": {"Invalid: outlierDetection.maxEjectionPercent is 101; it must be 0-100"}, "good": {"Accepted"}},
		},
		{
			name: "not a Service",
			policies: []*networkingv1alpha1.BackendPolicy{func() *networkingv1alpha1.BackendPolicy {
				p := policy("a", 0, 1, "echo")
				p.Spec.TargetRefs[0].Group, p.Spec.TargetRefs[0].Kind = "apps", "Deployment"
				return p
			}()},
			settings: map[ServicePort]*waypointxds.BackendSettings{},
			status:   status{"a": {`Invalid: targetRefs[0] is apps/Deployment "echo": only Services`}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Resolve(tc.policies, lookup)
			if !reflect.DeepEqual(res.Settings, tc.settings) {
				t.Errorf("settings %v, want %v", res.Settings, tc.settings)
			}
			if len(res.Status) != len(tc.status) {
				t.Errorf("status of %d policies, want %d", len(res.Status), len(tc.status))
			}
			for name, want := range tc.status {
				got := res.Status[Ref{"demo", name}]
				if len(got) != len(want) {
					t.Fatalf("%s: %d ancestors, want %d: %+v", name, len(got), len(want), got)
				}
				for i, w := range want {
					reason, msg, _ := strings.Cut(w, ": ")
					c := got[i].Accepted
					if c.Type != networkingv1alpha1.ConditionAccepted || c.Reason != reason || !strings.Contains(c.Message, msg) ||
						(c.Status == metav1.ConditionTrue) != (reason == networkingv1alpha1.ReasonAccepted) || c.ObservedGeneration != 2 {
						t.Errorf("%s target %d: %+v, want reason %s with message containing %q", name, i, c, reason, msg)
					}
					if got[i].Ref.Namespace != "demo" || got[i].Ref.Name == "" {
						t.Errorf("%s target %d: ancestorRef %+v", name, i, got[i].Ref)
					}
				}
			}
		})
	}
}

func TestAncestorRefs(t *testing.T) {
	res := Resolve([]*networkingv1alpha1.BackendPolicy{policy("a", 0, 1, "echo/grpc", "nope")}, lookup)
	want := []networkingv1alpha1.BackendPolicyAncestorRef{
		{Kind: "Service", Namespace: "demo", Name: "echo", SectionName: "grpc"},
		{Kind: "Service", Namespace: "demo", Name: "nope"},
	}
	for i, a := range res.Status[Ref{"demo", "a"}] {
		if a.Ref != want[i] {
			t.Errorf("ancestor %d: %+v, want %+v", i, a.Ref, want[i])
		}
	}
	if got := res.Services[Ref{"demo", "a"}]; !reflect.DeepEqual(got, []ServiceRef{{"demo", "echo"}, {"demo", "nope"}}) {
		t.Errorf("services %v", got)
	}
}

func TestSettings(t *testing.T) {
	d := func(s string) *networkingv1alpha1.Duration { v := networkingv1alpha1.Duration(s); return &v }
	for _, tc := range []struct {
		name string
		spec networkingv1alpha1.BackendPolicySpec
		want *waypointxds.BackendSettings
		err  string
	}{
		{
			name: "everything",
			spec: networkingv1alpha1.BackendPolicySpec{
				ConnectionPool: &networkingv1alpha1.ConnectionPool{
					TCP:  &networkingv1alpha1.TCPSettings{MaxConnections: ptr(int32(10)), ConnectTimeout: d("1m30s")},
					HTTP: &networkingv1alpha1.HTTPSettings{MaxPendingRequests: ptr(int32(1)), MaxRequests: ptr(int32(2)), MaxRequestsPerConnection: ptr(int32(3))},
				},
				OutlierDetection: &networkingv1alpha1.OutlierDetection{Consecutive5xxErrors: ptr(int32(3)), ConsecutiveGatewayErrors: ptr(int32(4)),
					Interval: d("500ms"), BaseEjectionTime: d("30s"), MaxEjectionPercent: ptr(int32(0))},
				LoadBalancer: &networkingv1alpha1.LoadBalancer{Algorithm: networkingv1alpha1.LBEWMA, ChoiceCount: ptr(int32(3))},
			},
			want: &waypointxds.BackendSettings{
				MaxConnections: 10, ConnectTimeout: 90 * time.Second, MaxPendingRequests: 1, MaxRequests: 2, MaxRequestsPerConnection: 3,
				Outlier: &waypointxds.OutlierDetection{Consecutive5xx: 3, ConsecutiveGatewayErrors: 4, Interval: 500 * time.Millisecond,
					BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: ptr(uint32(0))},
				LB: waypointxds.LBEWMA, ChoiceCount: 3,
			},
		},
		{
			name: "round robin by default",
			spec: networkingv1alpha1.BackendPolicySpec{LoadBalancer: &networkingv1alpha1.LoadBalancer{}},
			want: &waypointxds.BackendSettings{LB: waypointxds.LBRoundRobin},
		},
		{name: "nothing", spec: networkingv1alpha1.BackendPolicySpec{}, err: "set at least one of connectionPool, outlierDetection and loadBalancer"},
		{
			name: "bad values, all named",
			spec: networkingv1alpha1.BackendPolicySpec{
				ConnectionPool:   &networkingv1alpha1.ConnectionPool{TCP: &networkingv1alpha1.TCPSettings{MaxConnections: ptr(int32(0)), ConnectTimeout: d("soon")}},
				OutlierDetection: &networkingv1alpha1.OutlierDetection{Interval: d("1s")},
				LoadBalancer:     &networkingv1alpha1.LoadBalancer{Algorithm: "Random", ChoiceCount: ptr(int32(1))},
			},
			err: `connectionPool.tcp.maxConnections is 0; it must be at least 1
connectionPool.tcp.connectTimeout is "soon"; it must be a positive duration such as "1s" or "500ms"
outlierDetection must set consecutive5xxErrors or consecutiveGatewayErrors
loadBalancer.algorithm "Random" is unknown: use RoundRobin, LeastRequest or EWMA
loadBalancer.choiceCount is 1; it must be at least 2
loadBalancer.choiceCount applies only to algorithm LeastRequest or EWMA`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Settings(tc.spec)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
