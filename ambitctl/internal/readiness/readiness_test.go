package readiness

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

func ptr[T any](v T) *T { return &v }

func TestDeployment(t *testing.T) {
	dep := func(gen, observed int64, replicas *int32, st appsv1.DeploymentStatus) *appsv1.Deployment {
		st.ObservedGeneration = observed
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: gen}, Spec: appsv1.DeploymentSpec{Replicas: replicas}, Status: st}
	}
	tests := []struct {
		name       string
		d          *appsv1.Deployment
		wantReady  bool
		wantReason string
		wantSum    string
	}{
		{"available", dep(2, 2, ptr[int32](1), appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}), true, "", "1/1 available"},
		{"default one replica", dep(1, 1, nil, appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}), true, "", "1/1 available"},
		{"not observed", dep(3, 2, ptr[int32](1), appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}), false,
			"the deployment controller has not seen the latest spec yet", "1/1 available"},
		{"not updated", dep(1, 1, ptr[int32](2), appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 1, AvailableReplicas: 2}), false,
			"1 of 2 replicas updated", "2/2 available"},
		{"old replicas left", dep(1, 1, ptr[int32](1), appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 1, AvailableReplicas: 1}), false,
			"1 old replicas are still terminating", "1/1 available"},
		{"not available", dep(1, 1, ptr[int32](1), appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1}), false,
			"0 of 1 replicas available", "0/1 available"},
		{"no status yet", dep(1, 0, ptr[int32](1), appsv1.DeploymentStatus{}), false,
			"the deployment controller has not seen the latest spec yet", "0/1 available"},
		{"scaled to zero", dep(2, 2, ptr[int32](0), appsv1.DeploymentStatus{}), false,
			"scaled to 0 replicas: nothing serves (kubectl -n  scale deployment  --replicas=1, or ambitctl install)", "0/0 available"},
		{"deadline exceeded", dep(1, 1, ptr[int32](1), appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Reason: "ProgressDeadlineExceeded", Message: "ReplicaSet x has timed out"}}}),
			false, "rollout stuck (progress deadline exceeded): ReplicaSet x has timed out", "0/1 available"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Deployment(tc.d)
			if got.Ready != tc.wantReady || got.Reason != tc.wantReason || got.Summary != tc.wantSum {
				t.Fatalf("Deployment = %+v, want ready=%v reason=%q summary=%q", got, tc.wantReady, tc.wantReason, tc.wantSum)
			}
		})
	}
}

func TestDaemonSet(t *testing.T) {
	ds := func(gen, observed int64, desired, updated, available int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Generation: gen}, Status: appsv1.DaemonSetStatus{
			ObservedGeneration: observed, DesiredNumberScheduled: desired, UpdatedNumberScheduled: updated, NumberAvailable: available}}
	}
	tests := []struct {
		name       string
		ds         *appsv1.DaemonSet
		wantReady  bool
		wantReason string
	}{
		{"every node", ds(1, 1, 2, 2, 2), true, ""},
		{"one node missing", ds(1, 1, 2, 2, 1), false, "1 of 2 pods available"},
		{"rolling", ds(2, 2, 2, 1, 2), false, "1 of 2 pods updated"},
		{"not observed", ds(2, 1, 2, 2, 2), false, "the daemonset controller has not seen the latest spec yet"},
		{"no nodes", ds(1, 1, 0, 0, 0), false, "scheduled on no node: are there nodes, and do its nodeSelector and tolerations match them?"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := DaemonSet(tc.ds)
			if got.Ready != tc.wantReady || got.Reason != tc.wantReason {
				t.Fatalf("DaemonSet = %+v, want ready=%v reason=%q", got, tc.wantReady, tc.wantReason)
			}
		})
	}
}

func crd(conds ...map[string]any) *unstructured.Unstructured {
	cs := make([]any, len(conds))
	for i, c := range conds {
		cs[i] = c
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "peerauthentications.security.ambit.dev"},
		"status":   map[string]any{"conditions": cs},
	}}
}

func TestCRD(t *testing.T) {
	tests := []struct {
		name       string
		u          *unstructured.Unstructured
		wantReady  bool
		wantReason string
	}{
		{"established", crd(map[string]any{"type": "NamesAccepted", "status": "True"}, map[string]any{"type": "Established", "status": "True"}), true, ""},
		{"no status", crd(), false, "not established yet"},
		{"established false", crd(map[string]any{"type": "Established", "status": "False"}), false, "not established yet"},
		{"name clash", crd(map[string]any{"type": "NamesAccepted", "status": "False", "message": "\"pa\" is already in use"}), false,
			"names not accepted: \"pa\" is already in use"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CRD(tc.u)
			if got.Ready != tc.wantReady || got.Reason != tc.wantReason {
				t.Fatalf("CRD = %+v, want ready=%v reason=%q", got, tc.wantReady, tc.wantReason)
			}
		})
	}
}

func TestPodReady(t *testing.T) {
	pod := func(phase corev1.PodPhase, ready corev1.ConditionStatus, deleting bool) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{Phase: phase}}
		if ready != "" {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		}
		if deleting {
			p.DeletionTimestamp = &metav1.Time{}
		}
		return p
	}
	tests := []struct {
		name string
		p    *corev1.Pod
		want bool
	}{
		{"running and ready", pod(corev1.PodRunning, corev1.ConditionTrue, false), true},
		{"running not ready", pod(corev1.PodRunning, corev1.ConditionFalse, false), false},
		{"pending", pod(corev1.PodPending, "", false), false},
		{"terminating", pod(corev1.PodRunning, corev1.ConditionTrue, true), false},
		{"no condition", pod(corev1.PodRunning, "", false), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PodReady(tc.p); got != tc.want {
				t.Fatalf("PodReady = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestObject(t *testing.T) {
	toU := func(obj runtime.Object) *unstructured.Unstructured {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		return &unstructured.Unstructured{Object: m}
	}
	readyDS := &appsv1.DaemonSet{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}}
	notReadyDep := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}}
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}}
	tests := []struct {
		name              string
		u                 *unstructured.Unstructured
		wantOK, wantReady bool
	}{
		{"daemonset", toU(readyDS), true, true},
		{"deployment", toU(notReadyDep), true, false},
		{"crd", crd(map[string]any{"type": "Established", "status": "True"}), true, true},
		{"configmap has no readiness", toU(cm), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ok, err := Object(tc.u)
			if err != nil || ok != tc.wantOK || s.Ready != tc.wantReady {
				t.Fatalf("Object = %+v, %v, %v; want ok=%v ready=%v", s, ok, err, tc.wantOK, tc.wantReady)
			}
		})
	}
}
