package migrate

import (
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func ptrTo[T any](v T) *T { return &v }

func TestParseWorkloadRef(t *testing.T) {
	tests := []struct {
		in   string
		want WorkloadRef
		err  string
	}{
		{"reviews", WorkloadRef{KindDeployment, "reviews"}, ""}, // written by older versions
		{"deployment/reviews", WorkloadRef{KindDeployment, "reviews"}, ""},
		{"StatefulSet/db", WorkloadRef{KindStatefulSet, "db"}, ""},
		{"daemonset/agent", WorkloadRef{KindDaemonSet, "agent"}, ""},
		{"job/x", WorkloadRef{}, "is not deployment/NAME"},
		{"statefulset/", WorkloadRef{}, "is not deployment/NAME"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseWorkloadRef(tc.in)
			if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("ParseWorkloadRef(%q) = %v, %v; want %v, %q", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestRolloutDone(t *testing.T) {
	dep := func(gen, observed int64, updated, available, total int32, conds ...appsv1.DeploymentCondition) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Generation: gen}, Spec: appsv1.DeploymentSpec{Replicas: ptrTo(int32(2))},
			Status: appsv1.DeploymentStatus{ObservedGeneration: observed, UpdatedReplicas: updated, AvailableReplicas: available, Replicas: total, Conditions: conds}}
	}
	tests := []struct {
		name string
		d    *appsv1.Deployment
		done bool
		line string
	}{
		{"done", dep(2, 2, 2, 2, 2), true, "2/2 updated, 2 available, 2 total"},
		{"restart not seen", dep(3, 2, 2, 2, 2), false, "waiting for the controller to see the restart"},
		{"old pod left", dep(2, 2, 2, 2, 3), false, "2/2 updated, 2 available, 3 total"},
		{"deadline exceeded", dep(2, 2, 1, 2, 3, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Reason: "ProgressDeadlineExceeded"}), false,
			"1/2 updated, 2 available, 3 total (progress deadline exceeded: kubectl describe deployment web)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if done, line := RolloutDone(tc.d); done != tc.done || line != tc.line {
				t.Errorf("RolloutDone = %v %q, want %v %q", done, line, tc.done, tc.line)
			}
		})
	}
}

func TestStatefulSetRolloutDone(t *testing.T) {
	sts := func(mut func(*appsv1.StatefulSet)) *appsv1.StatefulSet {
		s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Generation: 2},
			Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType}},
			Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1,
				CurrentRevision: "db-2", UpdateRevision: "db-2"}}
		if mut != nil {
			mut(s)
		}
		return s
	}
	tests := []struct {
		name string
		s    *appsv1.StatefulSet
		done bool
		line string
		err  string
	}{
		{"done, replicas default 1", sts(nil), true, "1/1 updated, 1 ready, 1 total", ""},
		{"restart not seen", sts(func(s *appsv1.StatefulSet) { s.Generation = 3 }), false, "waiting for the controller to see the restart", ""},
		{"replica not ready", sts(func(s *appsv1.StatefulSet) {
			s.Spec.Replicas = ptrTo(int32(3))
			s.Status.Replicas, s.Status.UpdatedReplicas, s.Status.ReadyReplicas = 3, 3, 2
		}),
			false, "3/3 updated, 2 ready, 3 total", ""},
		{"revision not current yet", sts(func(s *appsv1.StatefulSet) { s.Status.CurrentRevision = "db-1" }), false, "1/1 updated, 1 ready, 1 total (revision db-1 → db-2)", ""},
		{"OnDelete: current revision never moves", sts(func(s *appsv1.StatefulSet) {
			s.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
			s.Status.CurrentRevision = "db-1"
		}), true, "1/1 updated, 1 ready, 1 total", ""},
		{"partition", sts(func(s *appsv1.StatefulSet) {
			s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptrTo(int32(2))}
		}), false, "", "statefulset/db has partition 2: pods below it are never updated; set it to 0 or restart them yourself"},
		{"partition 0", sts(func(s *appsv1.StatefulSet) {
			s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptrTo(int32(0))}
		}), true, "1/1 updated, 1 ready, 1 total", ""},
		{"scaled to 0", sts(func(s *appsv1.StatefulSet) {
			s.Spec.Replicas = ptrTo(int32(0))
			s.Status = appsv1.StatefulSetStatus{ObservedGeneration: 2, CurrentRevision: "a", UpdateRevision: "a"}
		}), true, "0/0 updated, 0 ready, 0 total", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done, line, err := StatefulSetRolloutDone(tc.s)
			if done != tc.done || line != tc.line || (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
				t.Errorf("StatefulSetRolloutDone = %v %q %v, want %v %q %q", done, line, err, tc.done, tc.line, tc.err)
			}
		})
	}
}

func TestDaemonSetRolloutDone(t *testing.T) {
	ds := func(gen int64, updated, desired, available int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Generation: gen},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 2, UpdatedNumberScheduled: updated, DesiredNumberScheduled: desired, NumberAvailable: available}}
	}
	tests := []struct {
		name string
		d    *appsv1.DaemonSet
		done bool
		line string
	}{
		{"done", ds(2, 3, 3, 3), true, "3/3 updated, 3 available"},
		{"restart not seen", ds(3, 3, 3, 3), false, "waiting for the controller to see the restart"},
		{"one node left", ds(2, 2, 3, 3), false, "2/3 updated, 3 available"},
		{"one not available", ds(2, 3, 3, 2), false, "3/3 updated, 2 available"},
		{"no node", ds(2, 0, 0, 0), true, "0/0 updated, 0 available"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if done, line, err := DaemonSetRolloutDone(tc.d); done != tc.done || line != tc.line || err != nil {
				t.Errorf("DaemonSetRolloutDone = %v %q %v, want %v %q", done, line, err, tc.done, tc.line)
			}
		})
	}
}

func TestDaemonSetRevision(t *testing.T) {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", UID: "u1"}}
	rev := func(name string, n int64, owner types.UID, hash string) appsv1.ControllerRevision {
		r := appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}, OwnerReferences: []metav1.OwnerReference{{UID: owner, Controller: ptrTo(true)}}}, Revision: n}
		if hash != "" {
			r.Labels[LabelControllerRevisionHash] = hash
		}
		return r
	}
	tests := []struct {
		name string
		revs []appsv1.ControllerRevision
		want string
		err  string
	}{
		{"newest wins", []appsv1.ControllerRevision{rev("agent-aaa", 1, "u1", "aaa"), rev("agent-ccc", 3, "u1", "ccc"), rev("agent-bbb", 2, "u1", "bbb")}, "ccc", ""},
		{"another owner's newer revision", []appsv1.ControllerRevision{rev("agent-aaa", 1, "u1", "aaa"), rev("other-zzz", 9, "u2", "zzz")}, "aaa", ""},
		{"no hash label: from the name", []appsv1.ControllerRevision{rev("agent-5d4f", 1, "u1", "")}, "5d4f", ""},
		{"none", nil, "", "daemonset/agent controls no ControllerRevision yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DaemonSetRevision(ds, tc.revs)
			if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("DaemonSetRevision = %q %v, want %q %q", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestOnDeleteNext(t *testing.T) {
	pod := func(name, rev string, ready bool, terminating bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelControllerRevisionHash: rev}}}
		if ready {
			p.Status.Phase = corev1.PodRunning
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		if terminating {
			now := metav1.Now()
			p.DeletionTimestamp = &now
		}
		return p
	}
	tests := []struct {
		name  string
		pods  []corev1.Pod
		want  int32
		evict string
		line  string
		done  bool
	}{
		{"highest ordinal first", []corev1.Pod{pod("db-0", "old", true, false), pod("db-1", "old", true, false), pod("db-2", "old", true, false)}, 3,
			"db-2", "0/3 pods updated and Ready", false},
		{"ordinals past 9", []corev1.Pod{pod("db-9", "old", true, false), pod("db-10", "old", true, false)}, 2, "db-10", "0/2 pods updated and Ready", false},
		{"an unready old pod first", []corev1.Pod{pod("db-0", "old", false, false), pod("db-1", "old", true, false)}, 2, "db-0", "0/2 pods updated and Ready", false},
		{"evicted pod terminating", []corev1.Pod{pod("db-0", "old", true, false), pod("db-1", "old", true, true)}, 2,
			"", "0/2 pods updated and Ready; waiting: pod/db-1 terminating, 1 of 2 pods exist", false},
		{"replacement not ready", []corev1.Pod{pod("db-0", "old", true, false), pod("db-1", "new", false, false)}, 2,
			"", "0/2 pods updated and Ready; waiting: pod/db-1 not Ready", false},
		{"replacement ready: next", []corev1.Pod{pod("db-0", "old", true, false), pod("db-1", "new", true, false)}, 2, "db-0", "1/2 pods updated and Ready", false},
		{"done", []corev1.Pod{pod("db-0", "new", true, false), pod("db-1", "new", true, false)}, 2, "", "2/2 pods updated and Ready", true},
		{"replacement not created yet", []corev1.Pod{pod("agent-a", "new", true, false)}, 2, "", "1/2 pods updated and Ready; waiting: 1 of 2 pods exist", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evict, line, done := OnDeleteNext(tc.pods, "new", tc.want)
			if evict != tc.evict || line != tc.line || done != tc.done {
				t.Errorf("OnDeleteNext = %q %q %v, want %q %q %v", evict, line, done, tc.evict, tc.line, tc.done)
			}
		})
	}
}

func pdb(name string, sel *metav1.LabelSelector, gen, observed int64, allowed, healthy, desired, expected int32) policyv1.PodDisruptionBudget {
	return policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: gen}, Spec: policyv1.PodDisruptionBudgetSpec{Selector: sel},
		Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: observed, DisruptionsAllowed: allowed, CurrentHealthy: healthy, DesiredHealthy: desired, ExpectedPods: expected}}
}

func TestPDBGate(t *testing.T) {
	app := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "reviews"}}
	other := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ratings"}}
	labels := map[string]string{"app": "reviews", "version": "v1"}
	tests := []struct {
		name   string
		pdbs   []policyv1.PodDisruptionBudget
		evicts bool
		ok     bool
		line   string
		err    string
	}{
		{"no budget", nil, false, true, "", ""},
		{"allows one", []policyv1.PodDisruptionBudget{pdb("reviews", app, 1, 1, 1, 2, 1, 2)}, true, true, "", ""},
		{"another app's budget blocks nothing", []policyv1.PodDisruptionBudget{pdb("ratings", other, 1, 1, 0, 0, 1, 1)}, true, true, "", ""},
		{"a nil selector selects nothing", []policyv1.PodDisruptionBudget{pdb("none", nil, 1, 1, 0, 0, 1, 1)}, true, true, "", ""},
		{"an empty selector selects every pod", []policyv1.PodDisruptionBudget{pdb("all", &metav1.LabelSelector{}, 1, 1, 0, 1, 2, 2)}, true, false,
			"waiting for pdb/all allows 0 disruptions (1 healthy, 2 needed)", ""},
		{"not observed yet", []policyv1.PodDisruptionBudget{pdb("reviews", app, 2, 1, 1, 2, 1, 2)}, false, false,
			"waiting for pdb/reviews not yet seen by the disruption controller", ""},
		{"degraded: waits", []policyv1.PodDisruptionBudget{pdb("reviews", app, 1, 1, 0, 1, 1, 2)}, false, false,
			"waiting for pdb/reviews allows 0 disruptions (1 healthy, 1 needed)", ""},
		{"never allows, evicting", []policyv1.PodDisruptionBudget{pdb("reviews", app, 1, 1, 0, 2, 2, 2)}, true, false, "",
			"pdb/reviews allows no disruption with all 2 of its pods healthy (it needs 2 healthy): no pod can ever be evicted"},
		{"never allows, rolling update goes on", []policyv1.PodDisruptionBudget{pdb("reviews", app, 1, 1, 0, 2, 2, 2)}, false, true,
			"pdb/reviews allows no disruption even with all 2 pods healthy; going on: the rolling update does not evict", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, line, err := PDBGate(tc.pdbs, labels, tc.evicts)
			if ok != tc.ok || line != tc.line || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("PDBGate = %v %q %v, want %v %q %q", ok, line, err, tc.ok, tc.line, tc.err)
			}
		})
	}
}

func TestMaxUnavailable(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int32) *intstr.IntOrString { v := intstr.FromInt32(n); return &v }
	dep := func(n int32, s appsv1.DeploymentStrategy) *appsv1.Deployment {
		return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: &n, Strategy: s}}
	}
	rolling := func(v *intstr.IntOrString) appsv1.DeploymentStrategy {
		return appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: v}}
	}
	tests := []struct {
		name    string
		obj     any
		n       int
		rolling bool
	}{
		{"deployment default 25% of 8", dep(8, appsv1.DeploymentStrategy{}), 2, true},
		{"deployment 25% of 3 rounds down", dep(3, rolling(nil)), 0, true},
		{"deployment 50% of 5", dep(5, rolling(pct("50%"))), 2, true},
		{"deployment 0", dep(5, rolling(num(0))), 0, true},
		{"deployment Recreate", dep(4, appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}), 4, true},
		{"statefulset default 1", &appsv1.StatefulSet{}, 1, true},
		{"statefulset OnDelete", &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}}}, 0, false},
		{"daemonset 50% of 4 nodes", &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: pct("50%")}}},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 4}}, 2, true},
		{"daemonset OnDelete", &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}}}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n, r := MaxUnavailable(tc.obj); n != tc.n || r != tc.rolling {
				t.Errorf("MaxUnavailable = %d %v, want %d %v", n, r, tc.n, tc.rolling)
			}
		})
	}
}

func TestPDBWarnings(t *testing.T) {
	app := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "reviews"}}
	budgets := []policyv1.PodDisruptionBudget{pdb("reviews", app, 1, 1, 1, 3, 2, 3)}
	labels := map[string]string{"app": "reviews"}
	ref := WorkloadRef{KindDeployment, "reviews-v1"}
	tests := []struct {
		name    string
		max     int
		rolling bool
		pdbs    []policyv1.PodDisruptionBudget
		want    []string
	}{
		{"within the budget", 1, true, budgets, nil},
		{"over the budget", 2, true, budgets, []string{"warning: deployment/reviews-v1 may take down 2 pods at once (maxUnavailable) but pdb/reviews allows 1 disruptions: a rolling update does not go through eviction, so the PodDisruptionBudget cannot stop it (lower maxUnavailable if that matters)"}},
		{"eviction respects the budget", 2, false, budgets, nil},
		{"no budget", 2, true, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PDBWarnings(ref, tc.max, tc.rolling, tc.pdbs, labels); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("PDBWarnings = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUnrestartablePods(t *testing.T) {
	pod := func(name string, sidecar bool, ownerKind, ownerName string) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if sidecar {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
		}
		if ownerKind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: ownerKind, Name: ownerName, Controller: ptrTo(true)}}
		}
		return p
	}
	finished := pod("job-done", true, "Job", "j")
	finished.Status.Phase = corev1.PodSucceeded
	tests := []struct {
		name string
		pods []corev1.Pod
		want []string
	}{
		{"bare pod", []corev1.Pod{pod("bare", true, "", "")}, []string{"bare"}},
		{"bare pod without a sidecar", []corev1.Pod{pod("plain", false, "", "")}, nil},
		{"deployment's pod", []corev1.Pod{pod("web-1", true, "ReplicaSet", "web-abc")}, nil},
		{"orphan ReplicaSet's pod", []corev1.Pod{pod("rs-1", true, "ReplicaSet", "lonely")}, []string{"rs-1"}},
		{"statefulset and daemonset pods", []corev1.Pod{pod("db-0", true, "StatefulSet", "db"), pod("agent-x", true, "DaemonSet", "agent")}, nil},
		{"job pod, running and finished", []corev1.Pod{pod("job-run", true, "Job", "j"), finished}, []string{"job-run"}},
		{"sorted", []corev1.Pod{pod("b", true, "", ""), pod("a", true, "Rollout", "r")}, []string{"a", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := UnrestartablePods(tc.pods, map[string]string{"web-abc": "Deployment", "lonely": ""}); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("UnrestartablePods = %v, want %v", got, tc.want)
			}
		})
	}
}
