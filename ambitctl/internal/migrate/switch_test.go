package migrate

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func obj(kind, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"kind": kind, "apiVersion": "x/v1", "metadata": map[string]any{"name": name, "namespace": "shop"}, "spec": spec}}
	return u
}

func svcRef(name string) map[string]any { return map[string]any{"kind": "Service", "name": name} }

func TestWaypointServices(t *testing.T) {
	objs := []*unstructured.Unstructured{
		obj("HTTPRoute", "reviews", map[string]any{"parentRefs": []any{svcRef("reviews"), map[string]any{"kind": "Service", "name": "far", "namespace": "other"}}}),
		obj("BackendPolicy", "ratings", map[string]any{"targetRefs": []any{svcRef("ratings"), svcRef("reviews")}}),
		// L4 only: ztunnel enforces it, no waypoint.
		obj("AuthorizationPolicy", "l4", map[string]any{"targetRefs": []any{svcRef("l4")}, "rules": []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"ports": []any{"80"}}}}}}}),
		obj("AuthorizationPolicy", "l7", map[string]any{"targetRefs": []any{svcRef("details")}, "rules": []any{map[string]any{"to": []any{map[string]any{"operation": map[string]any{"methods": []any{"GET"}}}}}}}),
		obj("AuthorizationPolicy", "when", map[string]any{"targetRefs": []any{svcRef("when")}, "rules": []any{map[string]any{"when": []any{map[string]any{"key": "request.headers[x]"}}}}}),
		// A selector policy names no Service.
		obj("AuthorizationPolicy", "sel", map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "x"}}, "rules": []any{map[string]any{"when": []any{map[string]any{"key": "k"}}}}}),
		obj("PeerAuthentication", "default", map[string]any{"mtls": map[string]any{"mode": "PERMISSIVE"}}),
		obj("HTTPFault", "reviews-0", map[string]any{}),
	}
	got := WaypointServices("shop", objs)
	want := []string{"details", "ratings", "reviews", "when"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("WaypointServices = %v, want %v", got, want)
	}
	if got := WaypointServices("shop", objs[6:]); got != nil {
		t.Errorf("L4-only objects need a waypoint for %v", got)
	}
}

func TestPlanSwitch(t *testing.T) {
	route := obj("HTTPRoute", "reviews", map[string]any{"parentRefs": []any{svcRef("reviews")}})
	pa := obj("PeerAuthentication", "default", nil)
	tests := []struct {
		name string
		st   SwitchState
		// want: per step, "done" or a substring of What.
		want map[Step]string
	}{{
		name: "fresh sidecar namespace with L7",
		st: SwitchState{Namespace: "shop", Labels: map[string]string{"istio-injection": "enabled"},
			Objects: []*unstructured.Unstructured{route, pa}, SidecarWorkloads: []string{"deployment/a", "statefulset/b"}, UnrestartablePods: []string{"bare"}},
		want: map[Step]string{
			StepApply:           "apply 2 objects (field manager ambitctl) and wait until each is Accepted: HTTPRoute/reviews, PeerAuthentication/default",
			StepWaypoint:        "Services reviews are bound",
			StepLabelAmbient:    "label namespace shop ambit.dev/dataplane-mode=ambient",
			StepRemoveInjection: "remove namespace labels istio-injection=enabled",
			StepRestart:         "the workloads with sidecars: deployment/a, statefulset/b; pod/bare has a sidecar and no controller ambitctl restarts: delete it yourself",
			StepVerify:          "captured",
		},
	}, {
		name: "nothing converted, revision label, already enrolled",
		st:   SwitchState{Namespace: "shop", Labels: map[string]string{"istio.io/rev": "1-22", "ambit.dev/dataplane-mode": "ambient"}},
		want: map[Step]string{
			StepApply:           "nothing to apply",
			StepWaypoint:        "no waypoint needed",
			StepLabelAmbient:    "already labelled",
			StepRemoveInjection: "istio.io/rev=1-22",
			StepRestart:         "nothing to restart",
			StepVerify:          "captured",
		},
	}, {
		name: "resumed after the label steps",
		st: SwitchState{Namespace: "shop", Labels: map[string]string{"ambit.dev/dataplane-mode": "ambient"},
			Objects: []*unstructured.Unstructured{pa}, SidecarWorkloads: []string{"deployment/a"},
			Record: &Record{Done: []Step{StepApply, StepWaypoint, StepLabelAmbient, StepRemoveInjection}}},
		want: map[Step]string{
			StepApply: "done", StepWaypoint: "done", StepLabelAmbient: "done", StepRemoveInjection: "done",
			StepRestart: "sidecars: deployment/a",
			StepVerify:  "captured",
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanSwitch(tc.st)
			if len(got) != len(Steps) {
				t.Fatalf("%d actions, want %d: %+v", len(got), len(Steps), got)
			}
			for i, a := range got {
				if a.Step != Steps[i] {
					t.Errorf("action %d is %s, want %s", i, a.Step, Steps[i])
				}
				w := tc.want[a.Step]
				if w == "done" {
					if !a.Done {
						t.Errorf("%s not done: %s", a.Step, a.What)
					}
					continue
				}
				if a.Done || !strings.Contains(a.What, w) {
					t.Errorf("%s: done=%v %q, want not done containing %q", a.Step, a.Done, a.What, w)
				}
			}
		})
	}
}

func withStatus(u *unstructured.Unstructured, gen int64, status map[string]any) *unstructured.Unstructured {
	u = u.DeepCopy()
	u.SetGeneration(gen)
	u.Object["status"] = status
	return u
}

func cond(status, reason string, gen int64) map[string]any {
	return map[string]any{"type": "Accepted", "status": status, "reason": reason, "message": "m-" + reason, "observedGeneration": gen}
}

func TestJudge(t *testing.T) {
	ap := obj("AuthorizationPolicy", "p", nil)
	route := obj("HTTPRoute", "r", nil)
	bp := obj("BackendPolicy", "b", nil)
	ambit := func(conds ...any) map[string]any {
		return map[string]any{"controllerName": "ambit.dev/waypoint-controller", "conditions": conds}
	}
	tests := []struct {
		name string
		u    *unstructured.Unstructured
		want Readiness
		msg  string
	}{
		{"no status", ap, Pending, "no Accepted condition"},
		{"old generation", withStatus(ap, 2, map[string]any{"conditions": []any{cond("True", "Accepted", 1)}}), Pending, ""},
		{"accepted", withStatus(ap, 2, map[string]any{"conditions": []any{cond("True", "Accepted", 2)}}), Accepted, ""},
		{"waypoint required", withStatus(ap, 1, map[string]any{"conditions": []any{cond("False", "WaypointRequired", 1)}}), NeedsWaypoint, "m-WaypointRequired"},
		{"invalid", withStatus(ap, 1, map[string]any{"conditions": []any{cond("False", "Invalid", 1)}}), Rejected, "Invalid: m-Invalid"},
		{"route parent accepted", withStatus(route, 3, map[string]any{"parents": []any{ambit(cond("True", "Accepted", 3))}}), Accepted, ""},
		{"another controller's parent only", withStatus(route, 3, map[string]any{"parents": []any{map[string]any{"controllerName": "x", "conditions": []any{cond("True", "Accepted", 3)}}}}), Pending, ""},
		{"one parent rejected", withStatus(route, 1, map[string]any{"parents": []any{ambit(cond("True", "Accepted", 1)), ambit(cond("False", "NoMatchingParent", 1))}}), Rejected, "NoMatchingParent"},
		{"waypoint then rejected", withStatus(bp, 1, map[string]any{"ancestors": []any{ambit(cond("False", "WaypointRequired", 1)), ambit(cond("False", "Conflicted", 1))}}), Rejected, "Conflicted"},
		{"backend policy needs waypoint", withStatus(bp, 1, map[string]any{"ancestors": []any{ambit(cond("False", "WaypointRequired", 1))}}), NeedsWaypoint, ""},
		{"HTTPFault has no status", obj("HTTPFault", "f", nil), Accepted, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := Judge(tc.u)
			if got != tc.want || !strings.Contains(msg, tc.msg) {
				t.Errorf("Judge = %v %q, want %v containing %q", got, msg, tc.want, tc.msg)
			}
		})
	}
}

func TestStripAndRestoreSidecar(t *testing.T) {
	orig := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`, "keep": "x"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "istio-init"}, {Name: "setup"}},
			Containers:     []corev1.Container{{Name: "app"}, {Name: "istio-proxy", Image: "proxyv2"}},
		},
	}
	tmpl := *orig.DeepCopy()
	s := StripSidecar(&tmpl)
	if s == nil {
		t.Fatal("nothing stripped")
	}
	if HasSidecar(tmpl.Annotations, tmpl.Spec) {
		t.Errorf("template still has a sidecar: %+v", tmpl)
	}
	if len(tmpl.Spec.InitContainers) != 1 || tmpl.Spec.InitContainers[0].Name != "setup" || len(tmpl.Spec.Containers) != 1 || tmpl.Annotations["keep"] != "x" {
		t.Errorf("stripped too much: %+v", tmpl)
	}
	RestoreSidecar(&tmpl, s)
	if !reflect.DeepEqual(tmpl, orig) {
		t.Errorf("restored template\n%+v\nwant\n%+v", tmpl, orig)
	}
	// Restoring twice adds nothing.
	RestoreSidecar(&tmpl, s)
	if !reflect.DeepEqual(tmpl, orig) {
		t.Errorf("second restore changed the template: %+v", tmpl)
	}
	plain := corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	if s := StripSidecar(&plain); s != nil {
		t.Errorf("stripped %+v from a template without sidecar", s)
	}
}

func TestHasSidecar(t *testing.T) {
	if !HasSidecar(map[string]string{"sidecar.istio.io/status": "{}"}, corev1.PodSpec{}) {
		t.Error("annotation not recognised")
	}
	if !HasSidecar(nil, corev1.PodSpec{InitContainers: []corev1.Container{{Name: "istio-proxy"}}}) {
		t.Error("native sidecar not recognised")
	}
	if HasSidecar(nil, corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}) {
		t.Error("plain pod has a sidecar")
	}
}

func TestRecordRoundTripAndRollback(t *testing.T) {
	r := &Record{Applied: []ObjectRef{{APIVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Name: "reviews"}},
		AmbientLabelAdded: true, RemovedLabels: map[string]string{"istio-injection": "enabled"}, Restarted: []string{"a", "statefulset/b"}}
	for _, s := range Steps[:5] {
		r.MarkDone(s)
	}
	r.MarkDone(StepApply)
	if r.Complete() {
		t.Error("complete without verify")
	}
	got, err := ParseRecord(r.Encode())
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %+v %v, want %+v", got, err, r)
	}
	if _, err := ParseRecord("{"); err == nil || !strings.Contains(err.Error(), "kubectl annotate namespace") {
		t.Errorf("bad record: %v", err)
	}
	if got, err := ParseRecord(""); got != nil || err != nil {
		t.Errorf("empty record: %v %v", got, err)
	}
	want := []string{
		"label namespace shop istio-injection=enabled ambit.dev/dataplane-mode-",
		"restart, one at a time (putting back a sidecar apply took out of the template), of deployment/a, statefulset/b",
		"delete the objects apply made (those annotated ambit.dev/migrated-from and managed by ambitctl): HTTPRoute/reviews",
		"remove namespace annotation ambit.dev/migration",
	}
	if lines := PlanRollback("shop", r); !reflect.DeepEqual(lines, want) {
		t.Errorf("PlanRollback =\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if l := RollbackLabels(r); !reflect.DeepEqual(l, map[string]any{"istio-injection": "enabled", "ambit.dev/dataplane-mode": nil}) {
		t.Errorf("RollbackLabels = %v", l)
	}
	r.PreviousDataplaneMode = "none"
	if l := RollbackLabels(r); l["ambit.dev/dataplane-mode"] != "none" {
		t.Errorf("previous mode not restored: %v", l)
	}
	// Enrolled by the user before: rollback leaves the label.
	if l := RollbackLabels(&Record{}); len(l) != 0 {
		t.Errorf("empty record changes labels %v", l)
	}
}

func TestVerify(t *testing.T) {
	pod := func(name string, mut ...func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{}, Annotations: map[string]string{"ambit.dev/redirection": "enabled"}},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		for _, m := range mut {
			m(&p)
		}
		return p
	}
	sidecar := func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
	}
	pending := func(p *corev1.Pod) { p.Annotations["ambit.dev/redirection"] = "pending" }
	optOut := func(p *corev1.Pod) {
		p.Labels["ambit.dev/dataplane-mode"] = "none"
		delete(p.Annotations, "ambit.dev/redirection")
	}
	gone := func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
	done := func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }
	ambient := map[string]string{"ambit.dev/dataplane-mode": "ambient"}
	tests := []struct {
		name   string
		labels map[string]string
		pods   []corev1.Pod
		ok     bool
		line   string
	}{
		{"all captured, waypoint opted out, old pod terminating", ambient,
			[]corev1.Pod{pod("a"), pod("b"), pod("waypoint", optOut), pod("old", sidecar, gone), pod("job", sidecar, done)},
			true, "2/2 pods captured (1 out of the mesh on purpose: ambit.dev/dataplane-mode=none or host network)"},
		{"a sidecar left", ambient, []corev1.Pod{pod("a"), pod("b", sidecar)}, false, "1/2 pods captured; b has a sidecar"},
		{"a bare pod with a sidecar", ambient, []corev1.Pod{pod("a"), pod("bare", sidecar)}, false,
			"1/2 pods captured; bare has a sidecar and no controller ambitctl restarts: delete it yourself (kubectl -n shop delete pod bare;"},
		{"capture pending", ambient, []corev1.Pod{pod("a", pending)}, false, "0/1 pods captured; a: capture pending; see the logs of the node agent on n1"},
		{"namespace not enrolled", nil, []corev1.Pod{pod("a")}, false, `0/1 pods captured; a: namespace "shop" is not labelled`},
		{"empty namespace", ambient, nil, true, "0/0 pods captured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, line := Verify(tc.labels, tc.pods, "ambit-system", []string{"bare"}, nil)
			if ok != tc.ok || !strings.HasPrefix(line, tc.line) {
				t.Errorf("Verify = %v %q, want %v %q…", ok, line, tc.ok, tc.line)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	tests := []struct {
		r                 Readiness
		l7, bound         bool
		wantDone, wantErr bool
	}{
		{Pending, false, false, false, false},
		{Pending, true, true, false, false},
		{Accepted, false, false, true, false},
		{Accepted, true, true, true, false},
		// Before the waypoint: an L7 object's verdict is provisional.
		{NeedsWaypoint, true, false, true, false},
		{Rejected, true, false, true, false},
		// An L4 object cannot be helped by a waypoint.
		{Rejected, false, false, false, true},
		{NeedsWaypoint, false, false, true, false},
		// After the waypoint: only Accepted goes on; the rest is waited out.
		{NeedsWaypoint, true, true, false, false},
		{Rejected, true, true, false, false},
		{Rejected, false, true, false, false},
	}
	for _, tc := range tests {
		done, fatal := Progress(tc.r, tc.l7, tc.bound)
		if done != tc.wantDone || fatal != tc.wantErr {
			t.Errorf("Progress(%v, l7=%v, bound=%v) = %v, %v; want %v, %v", tc.r, tc.l7, tc.bound, done, fatal, tc.wantDone, tc.wantErr)
		}
	}
}
