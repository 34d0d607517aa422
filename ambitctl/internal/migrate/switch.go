package migrate

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"ambit.dev/ambitctl/internal/enrolment"
	"ambit.dev/pkg/enrol"
)

// The switch (migrate apply) moves a namespace from Istio's sidecar mode to
// Ambit in these steps, in this order; each is verified before the next
// starts and recorded in the namespace's AnnotationMigration, so a re-run
// continues where an interrupted one stopped and rollback knows what to
// undo.
const (
	StepApply           Step = "apply-objects"
	StepWaypoint        Step = "waypoint"
	StepLabelAmbient    Step = "label-ambient"
	StepRemoveInjection Step = "remove-injection-label"
	StepRestart         Step = "restart"
	StepVerify          Step = "verify"
)

// Step names one step of the switch.
type Step string

// Steps are the switch's steps in order.
var Steps = []Step{StepApply, StepWaypoint, StepLabelAmbient, StepRemoveInjection, StepRestart, StepVerify}

const (
	// AnnotationMigration on the namespace holds the Record (JSON).
	AnnotationMigration = "ambit.dev/migration"
	// AnnotationSidecarRemoved on a Deployment, StatefulSet or DaemonSet
	// holds the sidecar pieces (JSON Sidecar) migrate apply took out of
	// its pod template (a template injected with istioctl kube-inject),
	// for rollback.
	AnnotationSidecarRemoved = "ambit.dev/migration-sidecar"
	// AnnotationRestartedAt on a pod template restarts its pods (the
	// annotation kubectl rollout restart sets).
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
	// LabelIstioInjection and LabelIstioRev select Istio's sidecar
	// injector for a namespace.
	LabelIstioInjection = "istio-injection"
	LabelIstioRev       = "istio.io/rev"
	// IstioInitContainerName is the init container that installs the
	// sidecar's iptables redirect: without istio-proxy it would send the
	// pod's traffic to a port nothing listens on.
	IstioInitContainerName = "istio-init"
)

// InjectionLabels are the namespace labels that turn Istio's injector on.
var InjectionLabels = []string{LabelIstioInjection, LabelIstioRev}

// ObjectRef names an object migrate apply created.
type ObjectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
}

func (r ObjectRef) String() string { return r.Kind + "/" + r.Name }

// RefOf returns the ObjectRef of u.
func RefOf(u *unstructured.Unstructured) ObjectRef {
	return ObjectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Name: u.GetName()}
}

// Record is the progress and undo log of migrate apply, kept as JSON in
// the namespace's AnnotationMigration.
type Record struct {
	// Done are the steps completed, in order.
	Done []Step `json:"done"`
	// Applied are the converted objects apply server-side applied.
	Applied []ObjectRef `json:"applied,omitempty"`
	// AmbientLabelAdded is true when apply set ambit.dev/dataplane-mode
	// (PreviousDataplaneMode is what it was, "" for absent).
	AmbientLabelAdded     bool   `json:"ambientLabelAdded,omitempty"`
	PreviousDataplaneMode string `json:"previousDataplaneMode,omitempty"`
	// RemovedLabels are the injection labels apply removed, with their
	// values.
	RemovedLabels map[string]string `json:"removedLabels,omitempty"`
	// Restarted are the workloads apply restarted, in order:
	// "deployment/x", "statefulset/y", "daemonset/z" (a plain name, as
	// older versions wrote, is a Deployment: ParseWorkloadRef).
	Restarted []string `json:"restarted,omitempty"`
}

// IsDone reports whether step s is recorded as done.
func (r *Record) IsDone(s Step) bool { return r != nil && slices.Contains(r.Done, s) }

// MarkDone records s as done.
func (r *Record) MarkDone(s Step) {
	if !r.IsDone(s) {
		r.Done = append(r.Done, s)
	}
}

// Complete reports whether every step is done.
func (r *Record) Complete() bool {
	for _, s := range Steps {
		if !r.IsDone(s) {
			return false
		}
	}
	return true
}

// ParseRecord reads the namespace annotation value; "" is no record.
func ParseRecord(v string) (*Record, error) {
	if v == "" {
		return nil, nil
	}
	var r Record
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return nil, fmt.Errorf("annotation %s is not a migration record (%w): fix or remove it (kubectl annotate namespace <ns> %s-) before re-running", AnnotationMigration, err, AnnotationMigration)
	}
	return &r, nil
}

// Encode returns the annotation value.
func (r *Record) Encode() string {
	b, _ := json.Marshal(r) // a struct of strings and maps: cannot fail
	return string(b)
}

// SwitchState is what the switch planning reads about the namespace.
type SwitchState struct {
	Namespace string
	// Labels are the namespace's labels.
	Labels map[string]string
	// Record is the namespace's migration record (nil: none).
	Record *Record
	// Objects are the converted objects (Plan.Objects()).
	Objects []*unstructured.Unstructured
	// SidecarWorkloads are the Deployments, StatefulSets and DaemonSets
	// whose pods (or pod template) carry an Istio sidecar, as
	// "kind/name", sorted.
	SidecarWorkloads []string
	// UnrestartablePods are the pods with a sidecar that no controller
	// ambitctl restarts owns (UnrestartablePods), sorted: left to the user.
	UnrestartablePods []string
}

// Action is one step as apply (or --dry-run) shows it.
type Action struct {
	Step Step
	// Done: recorded as done by an earlier run, skipped.
	Done bool
	// What the step does (or did), one line.
	What string
}

// PlanSwitch decides the steps of migrate apply for the namespace's state:
// each step, whether an earlier run already did it, and what it does. The
// steps are always all listed, in order; a step with nothing to do says so.
func PlanSwitch(s SwitchState) []Action {
	var out []Action
	add := func(st Step, what string) {
		out = append(out, Action{Step: st, Done: s.Record.IsDone(st), What: what})
	}
	if len(s.Objects) == 0 {
		add(StepApply, "nothing to apply: no converted objects")
	} else {
		var names []string
		for _, o := range s.Objects {
			names = append(names, RefOf(o).String())
		}
		add(StepApply, fmt.Sprintf("server-side apply %d objects (field manager ambitctl) and wait until each is Accepted: %s", len(names), strings.Join(names, ", ")))
	}
	if svcs := WaypointServices(s.Namespace, s.Objects); len(svcs) > 0 {
		add(StepWaypoint, fmt.Sprintf("wait until Services %s are bound to a waypoint (the control plane provisions one for L7 objects) that is Programmed, and every object is Accepted", strings.Join(svcs, ", ")))
	} else {
		add(StepWaypoint, "no waypoint needed: no converted object is L7")
	}
	if s.Labels[enrol.LabelDataplaneMode] == enrol.DataplaneModeAmbient && !s.Record.IsDone(StepLabelAmbient) {
		add(StepLabelAmbient, fmt.Sprintf("namespace already labelled %s=%s", enrol.LabelDataplaneMode, enrol.DataplaneModeAmbient))
	} else {
		add(StepLabelAmbient, fmt.Sprintf("label namespace %s %s=%s", s.Namespace, enrol.LabelDataplaneMode, enrol.DataplaneModeAmbient))
	}
	if rm := injectionLabels(s.Labels); len(rm) > 0 {
		add(StepRemoveInjection, "remove namespace labels "+strings.Join(rm, ", "))
	} else {
		add(StepRemoveInjection, "no injection label to remove")
	}
	restart := "no Deployment, StatefulSet or DaemonSet has sidecars: nothing to restart"
	if len(s.SidecarWorkloads) > 0 {
		restart = "restart, one at a time (each after its PodDisruptionBudgets allow a disruption; OnDelete workloads by evicting their pods), the workloads with sidecars: " + strings.Join(s.SidecarWorkloads, ", ")
	}
	for _, p := range s.UnrestartablePods {
		restart += "; " + UnrestartableNote(p)
	}
	add(StepRestart, restart)
	add(StepVerify, "verify every pod is captured by Ambit, none has a sidecar, and its node's ztunnel holds a Valid certificate of its identity; report the inbound HBONE traffic")
	return out
}

// injectionLabels returns "key=value" of the injection labels set on a
// namespace with these labels.
func injectionLabels(labels map[string]string) []string {
	var out []string
	for _, k := range InjectionLabels {
		if v, ok := labels[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// RemoveInjection returns the injection labels present (to remove) and
// their values.
func RemoveInjection(labels map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range InjectionLabels {
		if v, ok := labels[k]; ok {
			out[k] = v
		}
	}
	return out
}

// WaypointServices returns the Services of namespace ns that the objects
// need a waypoint for, sorted: the Service parentRefs of HTTPRoutes and
// the Service targetRefs of BackendPolicies and of AuthorizationPolicies
// with HTTP rules — the rule of the control plane's waypoint
// auto-provisioning (controlplane/internal/autowaypoint).
func WaypointServices(ns string, objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		var refs []any
		switch o.GetKind() {
		case "HTTPRoute", "GRPCRoute":
			refs, _, _ = unstructured.NestedSlice(o.Object, "spec", "parentRefs")
		case "BackendPolicy":
			refs, _, _ = unstructured.NestedSlice(o.Object, "spec", "targetRefs")
		case "AuthorizationPolicy":
			if policyUsesHTTP(o) {
				refs, _, _ = unstructured.NestedSlice(o.Object, "spec", "targetRefs")
			}
		}
		for _, r := range refs {
			m, _ := r.(map[string]any)
			group, _ := m["group"].(string)
			kind, _ := m["kind"].(string)
			name, _ := m["name"].(string)
			refNS, _ := m["namespace"].(string)
			if (group == "" || group == "core") && kind == "Service" && name != "" && (refNS == "" || refNS == ns) && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// policyUsesHTTP reports whether an Ambit AuthorizationPolicy has a rule
// only a waypoint enforces (HTTP operation fields or a when condition).
func policyUsesHTTP(o *unstructured.Unstructured) bool {
	rules, _, _ := unstructured.NestedSlice(o.Object, "spec", "rules")
	for _, r := range rules {
		rule, _ := r.(map[string]any)
		if when, _ := rule["when"].([]any); len(when) > 0 {
			return true
		}
		to, _ := rule["to"].([]any)
		for _, t := range to {
			op, _ := t.(map[string]any)["operation"].(map[string]any)
			for _, f := range []string{"methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"} {
				if v, _ := op[f].([]any); len(v) > 0 {
					return true
				}
			}
		}
	}
	return false
}

// HasSidecar reports whether a pod (or pod template) with these
// annotations and spec carries an Istio sidecar: pkg/enrol's rule.
func HasSidecar(annotations map[string]string, spec corev1.PodSpec) bool {
	if _, ok := annotations[enrol.AnnotationSidecarStatus]; ok {
		return true
	}
	has := func(cs []corev1.Container) bool {
		return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == enrol.SidecarContainerName })
	}
	return has(spec.Containers) || has(spec.InitContainers)
}

// Condition is an Accepted condition read from an object's status.
type Condition struct {
	Status, Reason, Message string
}

// Readiness of a converted object after apply.
type Readiness int

const (
	// Pending: no Accepted condition for the current generation yet.
	Pending Readiness = iota
	// Accepted: Accepted True.
	Accepted
	// NeedsWaypoint: Accepted False only because no waypoint serves the
	// target yet (the waypoint step provides it).
	NeedsWaypoint
	// Rejected: Accepted False for another reason; the switch stops.
	Rejected
)

// ReasonWaypointRequired is the Accepted reason of a policy waiting for a
// waypoint.
const ReasonWaypointRequired = "WaypointRequired"

// AcceptedConditions returns the Accepted conditions for u's current
// generation that Ambit wrote: status.conditions (AuthorizationPolicy,
// PeerAuthentication, HTTPFault) or, for a route or BackendPolicy, those of
// the status.parents / status.ancestors entries written by Ambit's
// waypoint controller.
func AcceptedConditions(u *unstructured.Unstructured) []Condition {
	gen := u.GetGeneration()
	var lists [][]any
	if cs, ok, _ := unstructured.NestedSlice(u.Object, "status", "conditions"); ok {
		lists = append(lists, cs)
	}
	for _, l := range []string{"parents", "ancestors"} {
		entries, _, _ := unstructured.NestedSlice(u.Object, "status", l)
		for _, e := range entries {
			em, _ := e.(map[string]any)
			if em["controllerName"] != "ambit.dev/waypoint-controller" {
				continue
			}
			cs, _ := em["conditions"].([]any)
			lists = append(lists, cs)
		}
	}
	var out []Condition
	for _, cs := range lists {
		for _, c := range cs {
			cm, _ := c.(map[string]any)
			og, _ := cm["observedGeneration"].(int64)
			if cm["type"] != "Accepted" || og != gen {
				continue
			}
			s, _ := cm["status"].(string)
			r, _ := cm["reason"].(string)
			m, _ := cm["message"].(string)
			out = append(out, Condition{Status: s, Reason: r, Message: m})
		}
	}
	return out
}

// kindsWithoutStatus are converted kinds the control plane writes no
// status for (an HTTPFault is judged through the route that names it).
var kindsWithoutStatus = []string{"HTTPFault"}

// Judge says how far a converted object got: Accepted when every Accepted
// condition is True, NeedsWaypoint when the False ones only wait for a
// waypoint, Rejected (with the message) otherwise, Pending without any.
func Judge(u *unstructured.Unstructured) (Readiness, string) {
	if slices.Contains(kindsWithoutStatus, u.GetKind()) {
		return Accepted, ""
	}
	cs := AcceptedConditions(u)
	if len(cs) == 0 {
		return Pending, "no Accepted condition for generation " + fmt.Sprint(u.GetGeneration()) + " yet"
	}
	r := Accepted
	var msgs []string
	for _, c := range cs {
		switch {
		case c.Status == "True":
		case c.Reason == ReasonWaypointRequired:
			if r == Accepted {
				r = NeedsWaypoint
			}
			msgs = append(msgs, c.Message)
		default:
			r = Rejected
			msgs = append(msgs, c.Reason+": "+c.Message)
		}
	}
	return r, strings.Join(msgs, "; ")
}

// Sidecar is what migrate apply takes out of a pod template that has the
// sidecar in it (istioctl kube-inject): the istio-proxy and istio-init
// containers and the sidecar.istio.io/status annotation. Rollback puts
// them back.
type Sidecar struct {
	InitContainers []corev1.Container `json:"initContainers,omitempty"`
	Containers     []corev1.Container `json:"containers,omitempty"`
	Annotations    map[string]string  `json:"annotations,omitempty"`
}

// StripSidecar removes the sidecar from a pod template (in place) and
// returns what it removed; nil when the template has none (an injector
// adds it at admission: removing the injection label is what stops it).
// Volumes the sidecar used are kept: unused volumes are harmless.
func StripSidecar(t *corev1.PodTemplateSpec) *Sidecar {
	var s Sidecar
	sidecarish := func(c corev1.Container) bool {
		return c.Name == enrol.SidecarContainerName || c.Name == IstioInitContainerName
	}
	keep := func(cs []corev1.Container, removed *[]corev1.Container) []corev1.Container {
		var out []corev1.Container
		for _, c := range cs {
			if sidecarish(c) {
				*removed = append(*removed, c)
			} else {
				out = append(out, c)
			}
		}
		return out
	}
	t.Spec.InitContainers = keep(t.Spec.InitContainers, &s.InitContainers)
	t.Spec.Containers = keep(t.Spec.Containers, &s.Containers)
	if v, ok := t.Annotations[enrol.AnnotationSidecarStatus]; ok {
		s.Annotations = map[string]string{enrol.AnnotationSidecarStatus: v}
		delete(t.Annotations, enrol.AnnotationSidecarStatus)
	}
	if len(s.InitContainers)+len(s.Containers)+len(s.Annotations) == 0 {
		return nil
	}
	return &s
}

// RestoreSidecar puts back (in place) what StripSidecar removed: init
// containers first (istio-init runs before the others), containers last.
// A container of the same name already there is left as it is.
func RestoreSidecar(t *corev1.PodTemplateSpec, s *Sidecar) {
	has := func(cs []corev1.Container, n string) bool {
		return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == n })
	}
	var inits []corev1.Container
	for _, c := range s.InitContainers {
		if !has(t.Spec.InitContainers, c.Name) {
			inits = append(inits, c)
		}
	}
	t.Spec.InitContainers = append(inits, t.Spec.InitContainers...)
	for _, c := range s.Containers {
		if !has(t.Spec.Containers, c.Name) {
			t.Spec.Containers = append(t.Spec.Containers, c)
		}
	}
	for k, v := range s.Annotations {
		if t.Annotations == nil {
			t.Annotations = map[string]string{}
		}
		t.Annotations[k] = v
	}
}

// PlanRollback lists what rollback undoes from the record, in the order
// it does it: restore the namespace labels (injection label back, ambient
// label as it was), restart the restarted workloads (putting back a
// sidecar apply took out of a template; an injector, if present, injects
// the new pods), delete the objects apply made, remove the record.
func PlanRollback(ns string, r *Record) []string {
	if r == nil {
		return nil
	}
	var out []string
	var ls []string
	for _, k := range sortedKeys(r.RemovedLabels) {
		ls = append(ls, k+"="+r.RemovedLabels[k])
	}
	if r.AmbientLabelAdded {
		if r.PreviousDataplaneMode == "" {
			ls = append(ls, enrol.LabelDataplaneMode+"-")
		} else {
			ls = append(ls, enrol.LabelDataplaneMode+"="+r.PreviousDataplaneMode)
		}
	}
	if len(ls) > 0 {
		out = append(out, "label namespace "+ns+" "+strings.Join(ls, " "))
	}
	if len(r.Restarted) > 0 {
		var names []string
		for _, w := range r.Restarted {
			if ref, err := ParseWorkloadRef(w); err == nil {
				w = ref.String()
			}
			names = append(names, w)
		}
		out = append(out, "restart, one at a time (putting back a sidecar apply took out of the template), of "+strings.Join(names, ", "))
	}
	if len(r.Applied) > 0 {
		var names []string
		for _, o := range r.Applied {
			names = append(names, o.String())
		}
		out = append(out, fmt.Sprintf("delete the objects apply made (those annotated %s and managed by ambitctl): %s", AnnotationMigratedFrom, strings.Join(names, ", ")))
	}
	out = append(out, "remove namespace annotation "+AnnotationMigration)
	return out
}

// RollbackLabels returns the label merge patch (value nil: remove) that
// undoes the record's label changes.
func RollbackLabels(r *Record) map[string]any {
	out := map[string]any{}
	for k, v := range r.RemovedLabels {
		out[k] = v
	}
	if r.AmbientLabelAdded {
		if r.PreviousDataplaneMode == "" {
			out[enrol.LabelDataplaneMode] = nil
		} else {
			out[enrol.LabelDataplaneMode] = r.PreviousDataplaneMode
		}
	}
	return out
}

// Verify judges the verify step from the namespace's labels and pods:
// every live pod (not terminating, not finished) has no sidecar and is
// captured by Ambit, except the pods that stay out of the mesh on purpose
// (labelled ambit.dev/dataplane-mode=none, like the waypoint's own pods, or
// host-network), and, with z, the ztunnel on each captured pod's node
// serves it with a Valid certificate of its identity (IdentityProblem).
// The line counts them and names each pod that is not there yet, and why;
// a pod in unrestartable (UnrestartablePods) is named with what the user
// has to do.
func Verify(nsLabels map[string]string, pods []corev1.Pod, ambitNamespace string, unrestartable []string, z *Ztunnels) (bool, string) {
	var problems []string
	var meshPods []corev1.Pod
	optedOut := 0
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		switch {
		case HasSidecar(p.Annotations, p.Spec) && slices.Contains(unrestartable, p.Name):
			problems = append(problems, p.Name+" has a sidecar and no controller ambitctl restarts: delete it yourself (kubectl -n "+p.Namespace+" delete pod "+p.Name+"; its replacement, if something makes one, joins Ambit)")
		case HasSidecar(p.Annotations, p.Spec):
			problems = append(problems, p.Name+" has a sidecar")
		case p.Spec.HostNetwork || p.Labels[enrol.LabelDataplaneMode] == enrol.DataplaneModeNone:
			optedOut++
		default:
			meshPods = append(meshPods, p)
		}
	}
	captured := map[string]bool{}
	for _, p := range enrolment.Pods(nsLabels, meshPods) {
		switch {
		case !p.InMesh:
			problems = append(problems, p.Name+": "+p.Why)
		case p.Redirection != enrol.RedirectionEnabled:
			problems = append(problems, p.Name+": "+p.Note(ambitNamespace))
		default:
			captured[p.Name] = true
		}
	}
	line := fmt.Sprintf("%d/%d pods captured", len(captured), len(captured)+len(problems))
	if z != nil {
		served := 0
		for _, p := range meshPods {
			if !captured[p.Name] {
				continue
			}
			if why := IdentityProblem(p, *z); why != "" {
				problems = append(problems, p.Name+": "+why)
			} else {
				served++
			}
		}
		line += fmt.Sprintf(", %d/%d served by ztunnel with their identity", served, len(captured))
	}
	if optedOut > 0 {
		line += fmt.Sprintf(" (%d out of the mesh on purpose: %s=%s or host network)", optedOut, enrol.LabelDataplaneMode, enrol.DataplaneModeNone)
	}
	if len(problems) > 0 {
		line += "; " + strings.Join(problems, "; ")
	}
	return len(problems) == 0, line
}

// Progress says what the switch does with a converted object's readiness
// r: done (go on), fatal (stop the step with the object's message) or
// neither (wait). Before the waypoint step (waypointBound false), an L7
// object's status is about a Service without a waypoint and may be any of
// NeedsWaypoint or Rejected (e.g. a policy with several Service targets
// is Invalid until they have a waypoint): any condition will do. An L4
// object must be Accepted then, and a rejection is final. After the
// waypoint step, every object must be Accepted; a rejection may still be
// the one from before the binding, so it is waited out (until the step's
// timeout, which then reports it).
func Progress(r Readiness, l7, waypointBound bool) (done, fatal bool) {
	switch {
	case r == Pending:
		return false, false
	case r == Accepted:
		return true, false
	case !waypointBound && l7:
		return true, false
	case !waypointBound:
		return r == NeedsWaypoint, r == Rejected
	default:
		return false, false
	}
}
