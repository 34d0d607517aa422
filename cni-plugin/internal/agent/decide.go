package agent

import (
	"encoding/json"

	"ambit.dev/pkg/enrol"
)

// PodState is what the agent knows about one pod when it reconciles it.
type PodState struct {
	// Exists: the pod is in the informer cache and scheduled to this node.
	Exists bool
	// Finished: phase Succeeded or Failed; its sandbox is gone or going.
	Finished bool
	// Terminating: the pod has a deletionTimestamp (graceful shutdown: it
	// still serves traffic until its sandbox is deleted).
	Terminating bool
	// HasIPs: status.podIPs is set, so the pod's sandbox runs.
	HasIPs bool
	// Enrolled is enrol.Decide's answer.
	Enrolled bool
	// Captured: the agent holds the pod's netns, or hands ztunnel a Keep
	// for it.
	Captured bool
	// Annotation is the current ambit.dev/redirection value ("" if absent).
	Annotation string
}

// Action is what reconcile does for a pod.
type Action int

// Actions of reconcile.
const (
	// ActionNone changes nothing.
	ActionNone Action = iota
	// ActionCapture makes sure the pod is captured: find and hold its
	// netns, install the rules, hand it to ztunnel, annotate it.
	ActionCapture
	// ActionRelease takes an un-enrolled pod out: remove the rules,
	// DelWorkload, close the netns, remove the annotation.
	ActionRelease
	// ActionForget drops a pod whose sandbox is gone: DelWorkload, close
	// the netns (its rules died with it).
	ActionForget
)

// String names the action (for logs and metrics).
func (a Action) String() string {
	return [...]string{"none", "capture", "release", "forget"}[a]
}

// Plan decides what reconcile does for a pod in state st:
//
//   - a pod that is gone (or finished) is forgotten if it was captured;
//   - a terminating pod is left as it is: it still serves while it shuts
//     down, and the CNI DEL of its sandbox forgets it;
//   - an enrolled pod whose sandbox runs is captured (idempotent: a
//     captured pod only has its annotation checked);
//   - an enrolled pod without a sandbox yet waits for its CNI ADD;
//   - a pod that is not enrolled but was captured, or still carries the
//     annotation, is released.
func Plan(st PodState) Action {
	switch {
	case !st.Exists || st.Finished:
		if st.Captured {
			return ActionForget
		}
		return ActionNone
	case st.Terminating:
		return ActionNone
	case st.Enrolled:
		if st.HasIPs {
			return ActionCapture
		}
		return ActionNone
	case st.Captured || st.Annotation != "":
		return ActionRelease
	default:
		return ActionNone
	}
}

// Outcome is how an action ended.
type Outcome int

// Outcomes of actions.
const (
	// OutcomeDone: the action did everything (captured: rules in place and
	// a ztunnel acked; released; forgotten; nothing to do).
	OutcomeDone Outcome = iota
	// OutcomeNetnsNotFound: no netns on the node has the pod's IPs.
	OutcomeNetnsNotFound
	// OutcomeNetnsAmbiguous: the pod's IPs are in more than one netns.
	OutcomeNetnsAmbiguous
	// OutcomeRulesFailed: installing (or removing) the rules failed.
	OutcomeRulesFailed
	// OutcomeNoZtunnel: no ztunnel is connected.
	OutcomeNoZtunnel
	// OutcomeNotAcked: ztunnel nacked the pod or did not answer in time.
	OutcomeNotAcked
)

// String names the outcome (for logs and metric labels).
func (o Outcome) String() string {
	return [...]string{"done", "netns_not_found", "netns_ambiguous", "rules_failed", "no_ztunnel", "not_acked"}[o]
}

// WantAnnotation is the value the ambit.dev/redirection annotation should
// have after action a ended with o; "" means no annotation. A capture
// that did not complete is "pending"; a completed release removes it;
// everything else keeps the current value.
func WantAnnotation(current string, a Action, o Outcome) string {
	switch a {
	case ActionCapture:
		if o == OutcomeDone {
			return enrol.RedirectionEnabled
		}
		return enrol.RedirectionPending
	case ActionRelease:
		if o == OutcomeDone {
			return ""
		}
	}
	return current
}

// Retry reports whether the pod must be reconciled again (with backoff):
// every action that did not complete.
func Retry(a Action, o Outcome) bool {
	return a != ActionNone && o != OutcomeDone
}

// annotationPatch is the JSON merge patch that sets the annotation to
// value, or removes it (null) when value is empty. It names the pod's uid,
// which the API server refuses to change, so a patch cannot land on a
// newer pod of the same name.
func annotationPatch(uid, value string) []byte {
	var v any
	if value != "" {
		v = value
	}
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"uid":         uid,
			"annotations": map[string]any{enrol.AnnotationRedirection: v},
		},
	})
	return b
}
