package agent

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"ambit.dev/pkg/enrol"
	"ambit.dev/pkg/redirect"
)

const (
	enabled = enrol.RedirectionEnabled
	pending = enrol.RedirectionPending
)

// TestReconcileDecisions walks reconcile's decisions end to end: the plan
// for a state, the outcome of the action (from whether the netns was found
// and ztunnel acked), the annotation it leaves and whether it retries.
func TestReconcileDecisions(t *testing.T) {
	running := PodState{Exists: true, HasIPs: true}
	with := func(st PodState, f func(*PodState)) PodState { f(&st); return st }
	cases := []struct {
		name        string
		st          PodState
		netnsFound  bool
		ztunnelAcks bool
		noZtunnel   bool
		rulesFail   bool
		wantAction  Action
		wantOutcome Outcome
		wantAnnot   string
		wantRetry   bool
	}{
		{name: "enrolled, not captured, found, acked: enabled",
			st: with(running, func(s *PodState) { s.Enrolled = true }), netnsFound: true, ztunnelAcks: true,
			wantAction: ActionCapture, wantOutcome: OutcomeDone, wantAnnot: enabled},
		{name: "enrolled, captured, already enabled: stays enabled",
			st:         with(running, func(s *PodState) { s.Enrolled, s.Captured, s.Annotation = true, true, enabled }),
			netnsFound: true, ztunnelAcks: true,
			wantAction: ActionCapture, wantOutcome: OutcomeDone, wantAnnot: enabled},
		{name: "enrolled, pending, now acked: enabled",
			st:         with(running, func(s *PodState) { s.Enrolled, s.Captured, s.Annotation = true, true, pending }),
			netnsFound: true, ztunnelAcks: true,
			wantAction: ActionCapture, wantOutcome: OutcomeDone, wantAnnot: enabled},
		{name: "enrolled, netns not found: pending, retry",
			st:         with(running, func(s *PodState) { s.Enrolled = true }),
			wantAction: ActionCapture, wantOutcome: OutcomeNetnsNotFound, wantAnnot: pending, wantRetry: true},
		{name: "enrolled, found, no ztunnel: pending, retry",
			st: with(running, func(s *PodState) { s.Enrolled = true }), netnsFound: true, noZtunnel: true,
			wantAction: ActionCapture, wantOutcome: OutcomeNoZtunnel, wantAnnot: pending, wantRetry: true},
		{name: "enrolled, found, ztunnel nacks: pending, retry",
			st: with(running, func(s *PodState) { s.Enrolled = true }), netnsFound: true,
			wantAction: ActionCapture, wantOutcome: OutcomeNotAcked, wantAnnot: pending, wantRetry: true},
		{name: "enrolled, found, rules fail: pending, retry",
			st: with(running, func(s *PodState) { s.Enrolled = true }), netnsFound: true, rulesFail: true,
			wantAction: ActionCapture, wantOutcome: OutcomeRulesFailed, wantAnnot: pending, wantRetry: true},
		{name: "enabled but ztunnel gone: back to pending",
			st:         with(running, func(s *PodState) { s.Enrolled, s.Captured, s.Annotation = true, true, enabled }),
			netnsFound: true, noZtunnel: true,
			wantAction: ActionCapture, wantOutcome: OutcomeNoZtunnel, wantAnnot: pending, wantRetry: true},
		{name: "enrolled without a sandbox yet: wait for CNI ADD",
			st:         PodState{Exists: true, Enrolled: true},
			wantAction: ActionNone, wantOutcome: OutcomeDone, wantAnnot: ""},
		{name: "opted out while captured: release, annotation removed",
			st:         with(running, func(s *PodState) { s.Captured, s.Annotation = true, enabled }),
			netnsFound: true,
			wantAction: ActionRelease, wantOutcome: OutcomeDone, wantAnnot: ""},
		{name: "label removed while agent was down (annotation only): release",
			st:         with(running, func(s *PodState) { s.Annotation = enabled }),
			netnsFound: true,
			wantAction: ActionRelease, wantOutcome: OutcomeDone, wantAnnot: ""},
		{name: "pending pod left the mesh: release removes pending",
			st:         with(running, func(s *PodState) { s.Annotation = pending }),
			wantAction: ActionRelease, wantOutcome: OutcomeDone, wantAnnot: ""},
		{name: "release whose rule removal failed: annotation kept, retry",
			st:         with(running, func(s *PodState) { s.Captured, s.Annotation = true, enabled }),
			netnsFound: true, rulesFail: true,
			wantAction: ActionRelease, wantOutcome: OutcomeRulesFailed, wantAnnot: enabled, wantRetry: true},
		{name: "never enrolled: nothing",
			st:         running,
			wantAction: ActionNone, wantOutcome: OutcomeDone, wantAnnot: ""},
		{name: "deleted while captured: forget",
			st:         PodState{Captured: true},
			wantAction: ActionForget, wantOutcome: OutcomeDone, wantAnnot: ""},
		{name: "finished while captured: forget, annotation untouched",
			st:         with(running, func(s *PodState) { s.Finished, s.Enrolled, s.Captured, s.Annotation = true, true, true, enabled }),
			wantAction: ActionForget, wantOutcome: OutcomeDone, wantAnnot: enabled},
		{name: "finished, not captured: nothing",
			st:         with(running, func(s *PodState) { s.Finished, s.Enrolled = true, true }),
			wantAction: ActionNone, wantOutcome: OutcomeDone, wantAnnot: ""},
		{name: "terminating captured pod keeps serving",
			st:         with(running, func(s *PodState) { s.Terminating, s.Enrolled, s.Captured, s.Annotation = true, true, true, enabled }),
			wantAction: ActionNone, wantOutcome: OutcomeDone, wantAnnot: enabled},
		{name: "terminating pod is not captured",
			st:         with(running, func(s *PodState) { s.Terminating, s.Enrolled = true, true }),
			wantAction: ActionNone, wantOutcome: OutcomeDone, wantAnnot: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			act := Plan(tc.st)
			if act != tc.wantAction {
				t.Fatalf("Plan = %v, want %v", act, tc.wantAction)
			}
			out := OutcomeDone
			switch act {
			case ActionCapture:
				switch {
				case !tc.netnsFound && !tc.st.Captured:
					out = OutcomeNetnsNotFound
				case tc.rulesFail:
					out = OutcomeRulesFailed
				case tc.noZtunnel:
					out = OutcomeNoZtunnel
				case !tc.ztunnelAcks:
					out = OutcomeNotAcked
				}
			case ActionRelease:
				if tc.rulesFail {
					out = OutcomeRulesFailed
				}
			}
			if out != tc.wantOutcome {
				t.Fatalf("outcome = %v, want %v (test table inconsistent)", out, tc.wantOutcome)
			}
			if got := WantAnnotation(tc.st.Annotation, act, out); got != tc.wantAnnot {
				t.Errorf("WantAnnotation = %q, want %q", got, tc.wantAnnot)
			}
			if got := Retry(act, out); got != tc.wantRetry {
				t.Errorf("Retry = %v, want %v", got, tc.wantRetry)
			}
		})
	}
}

func TestAnnotationPatch(t *testing.T) {
	cases := []struct {
		name  string
		value string
		want  string
	}{
		{name: "set", value: enabled, want: `{"metadata":{"annotations":{"ambit.dev/redirection":"enabled"},"uid":"u1"}}`},
		{name: "remove with null", value: "", want: `{"metadata":{"annotations":{"ambit.dev/redirection":null},"uid":"u1"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(annotationPatch("u1", tc.value))
			var a, b any
			if err := json.Unmarshal([]byte(got), &a); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal([]byte(tc.want), &b)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("patch = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFamiliesAndIPs(t *testing.T) {
	a := netip.MustParseAddr
	cases := []struct {
		name string
		raw  []string
		ips  []netip.Addr
		fams []redirect.Family
	}{
		{name: "IPv4", raw: []string{"10.244.1.5"}, ips: []netip.Addr{a("10.244.1.5")}, fams: []redirect.Family{redirect.IPv4}},
		{name: "IPv6 with prefix", raw: []string{"fd00:244:1::5/64"}, ips: []netip.Addr{a("fd00:244:1::5")}, fams: []redirect.Family{redirect.IPv6}},
		{name: "dual stack, v6 first", raw: []string{"fd00::5", "10.0.0.5/24"}, ips: []netip.Addr{a("fd00::5"), a("10.0.0.5")}, fams: []redirect.Family{redirect.IPv4, redirect.IPv6}},
		{name: "mapped IPv4 and duplicates", raw: []string{"::ffff:10.0.0.5", "10.0.0.5", "junk"}, ips: []netip.Addr{a("10.0.0.5")}, fams: []redirect.Family{redirect.IPv4}},
		{name: "none: both families", raw: nil, ips: nil, fams: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ips := parseIPs(tc.raw)
			if !reflect.DeepEqual(ips, tc.ips) {
				t.Fatalf("parseIPs = %v, want %v", ips, tc.ips)
			}
			if got := familiesOf(ips); !reflect.DeepEqual(got, tc.fams) {
				t.Fatalf("familiesOf = %v, want %v", got, tc.fams)
			}
		})
	}
	if !sameIPs([]netip.Addr{a("10.0.0.1"), a("fd00::1")}, []netip.Addr{a("fd00::1"), a("10.0.0.1")}) {
		t.Error("sameIPs ignores order")
	}
	if sameIPs([]netip.Addr{a("10.0.0.1")}, []netip.Addr{a("10.0.0.2")}) {
		t.Error("sameIPs of different addresses")
	}
}
