// Package readiness judges from an object's status whether an Ambit
// component is up: a Deployment available, a DaemonSet rolled out on every
// node it targets, a CRD established, a pod ready. The rules follow
// `kubectl rollout status`. Everything here is a pure function of the
// object.
package readiness

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// State is the readiness of one object.
type State struct {
	Ready bool
	// Summary is a short progress text: "1/1 available", "1/2 nodes ready".
	Summary string
	// Reason says what is missing when not ready; empty when ready.
	Reason string
}

// Deployment judges a Deployment: it wants at least one replica (a control
// plane scaled to zero serves nothing), the controller has seen the latest
// spec, every replica is updated, old replicas are gone and the updated ones
// are available.
func Deployment(d *appsv1.Deployment) State {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	summary := fmt.Sprintf("%d/%d available", st.AvailableReplicas, want)
	if d.Generation > st.ObservedGeneration {
		return State{Summary: summary, Reason: "the deployment controller has not seen the latest spec yet"}
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return State{Summary: summary, Reason: "rollout stuck (progress deadline exceeded): " + c.Message}
		}
	}
	switch {
	case want == 0:
		return State{Summary: summary, Reason: "scaled to 0 replicas: nothing serves (kubectl -n " + d.Namespace + " scale deployment " + d.Name + " --replicas=1, or ambitctl install)"}
	case st.UpdatedReplicas < want:
		return State{Summary: summary, Reason: fmt.Sprintf("%d of %d replicas updated", st.UpdatedReplicas, want)}
	case st.Replicas > st.UpdatedReplicas:
		return State{Summary: summary, Reason: fmt.Sprintf("%d old replicas are still terminating", st.Replicas-st.UpdatedReplicas)}
	case st.AvailableReplicas < st.UpdatedReplicas || st.AvailableReplicas < want:
		return State{Summary: summary, Reason: fmt.Sprintf("%d of %d replicas available", st.AvailableReplicas, want)}
	}
	return State{Ready: true, Summary: summary}
}

// DaemonSet judges a DaemonSet: the controller has seen the latest spec and
// every node it targets runs an updated, available pod. A DaemonSet that
// targets no node is not ready: Ambit's DaemonSets must run everywhere.
func DaemonSet(ds *appsv1.DaemonSet) State {
	st := ds.Status
	summary := fmt.Sprintf("%d/%d nodes ready", st.NumberAvailable, st.DesiredNumberScheduled)
	if ds.Generation > st.ObservedGeneration {
		return State{Summary: summary, Reason: "the daemonset controller has not seen the latest spec yet"}
	}
	switch {
	case st.DesiredNumberScheduled == 0:
		return State{Summary: summary, Reason: "scheduled on no node: are there nodes, and do its nodeSelector and tolerations match them?"}
	case st.UpdatedNumberScheduled < st.DesiredNumberScheduled:
		return State{Summary: summary, Reason: fmt.Sprintf("%d of %d pods updated", st.UpdatedNumberScheduled, st.DesiredNumberScheduled)}
	case st.NumberAvailable < st.DesiredNumberScheduled:
		return State{Summary: summary, Reason: fmt.Sprintf("%d of %d pods available", st.NumberAvailable, st.DesiredNumberScheduled)}
	}
	return State{Ready: true, Summary: summary}
}

// CRD judges a CustomResourceDefinition: ready once Established, with the
// reason of NamesAccepted=False (a name clash) otherwise.
func CRD(u *unstructured.Unstructured) State {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var established bool
	var reason string
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		typ, _ := m["type"].(string)
		status, _ := m["status"].(string)
		msg, _ := m["message"].(string)
		switch {
		case typ == "Established" && status == "True":
			established = true
		case typ == "NamesAccepted" && status == "False":
			reason = "names not accepted: " + msg
		}
	}
	if established {
		return State{Ready: true, Summary: "established"}
	}
	if reason == "" {
		reason = "not established yet"
	}
	return State{Summary: "not established", Reason: reason}
}

// PodReady reports whether p is Running with condition Ready=True.
func PodReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Object judges an unstructured Deployment, DaemonSet or CRD. ok is false
// for other kinds, which have no readiness to wait for.
func Object(u *unstructured.Unstructured) (s State, ok bool, err error) {
	switch gk := u.GroupVersionKind().GroupKind(); {
	case gk.Group == "apps" && gk.Kind == "Deployment":
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
			return State{}, true, fmt.Errorf("reading Deployment %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		return Deployment(&d), true, nil
	case gk.Group == "apps" && gk.Kind == "DaemonSet":
		var ds appsv1.DaemonSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ds); err != nil {
			return State{}, true, fmt.Errorf("reading DaemonSet %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		return DaemonSet(&ds), true, nil
	case gk.Group == "apiextensions.k8s.io" && gk.Kind == "CustomResourceDefinition":
		return CRD(u), true, nil
	}
	return State{}, false, nil
}
