package migrate

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"ambit.dev/ambitctl/internal/readiness"
)

// The kinds of workload the restart step restarts, as Record.Restarted
// writes them ("deployment/reviews").
const (
	KindDeployment  = "deployment"
	KindStatefulSet = "statefulset"
	KindDaemonSet   = "daemonset"
)

// LabelControllerRevisionHash is the label StatefulSet and DaemonSet
// controllers put on their pods: the ControllerRevision the pod runs.
const LabelControllerRevisionHash = appsv1.ControllerRevisionHashLabelKey

// WorkloadRef names a workload the restart step restarts.
type WorkloadRef struct {
	Kind, Name string
}

func (w WorkloadRef) String() string { return w.Kind + "/" + w.Name }

// ParseWorkloadRef reads a Record.Restarted entry: "kind/name", or a plain
// name, which records written before StatefulSets and DaemonSets were
// restarted use for a Deployment.
func ParseWorkloadRef(s string) (WorkloadRef, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok {
		return WorkloadRef{Kind: KindDeployment, Name: s}, nil
	}
	kind = strings.ToLower(kind)
	if !slices.Contains([]string{KindDeployment, KindStatefulSet, KindDaemonSet}, kind) || name == "" {
		return WorkloadRef{}, fmt.Errorf("restarted workload %q in annotation %s is not deployment/NAME, statefulset/NAME or daemonset/NAME: fix the annotation", s, AnnotationMigration)
	}
	return WorkloadRef{Kind: kind, Name: name}, nil
}

// Replicas is spec.replicas with its default of 1.
func Replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// RolloutDone reports whether a Deployment's rollout is complete
// (kubectl rollout status's rule: the controller saw the new generation,
// every replica is updated and available, no old one is left), and a
// progress line.
func RolloutDone(d *appsv1.Deployment) (bool, string) {
	want := Replicas(d.Spec.Replicas)
	st := d.Status
	line := fmt.Sprintf("%d/%d updated, %d available, %d total", st.UpdatedReplicas, want, st.AvailableReplicas, st.Replicas)
	if st.ObservedGeneration < d.Generation {
		return false, "waiting for the controller to see the restart"
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, line + " (progress deadline exceeded: kubectl describe deployment " + d.Name + ")"
		}
	}
	return st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want, line
}

// StatefulSetRolloutDone reports whether a StatefulSet's rollout is
// complete: the controller saw the new generation, every replica is
// updated and ready and, for RollingUpdate, the current revision is the
// update revision (the controller only moves it for RollingUpdate). A
// RollingUpdate partition above 0 is an error: the pods below it are never
// updated, so waiting cannot help.
func StatefulSetRolloutDone(s *appsv1.StatefulSet) (bool, string, error) {
	want := Replicas(s.Spec.Replicas)
	rolling := s.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType
	if ru := s.Spec.UpdateStrategy.RollingUpdate; rolling && ru != nil && ru.Partition != nil && *ru.Partition > 0 {
		return false, "", fmt.Errorf("statefulset/%s has partition %d: pods below it are never updated; set it to 0 or restart them yourself", s.Name, *ru.Partition)
	}
	if s.Status.ObservedGeneration < s.Generation {
		return false, "waiting for the controller to see the restart", nil
	}
	st := s.Status
	line := fmt.Sprintf("%d/%d updated, %d ready, %d total", st.UpdatedReplicas, want, st.ReadyReplicas, st.Replicas)
	done := st.UpdatedReplicas == want && st.Replicas == want && st.ReadyReplicas == want
	if rolling && st.CurrentRevision != st.UpdateRevision {
		done = false
		line += " (revision " + st.CurrentRevision + " → " + st.UpdateRevision + ")"
	}
	return done, line, nil
}

// DaemonSetRolloutDone reports whether a DaemonSet's rollout is complete:
// the controller saw the new generation and every node that should run a
// pod runs an updated, available one.
func DaemonSetRolloutDone(d *appsv1.DaemonSet) (bool, string, error) {
	if d.Status.ObservedGeneration < d.Generation {
		return false, "waiting for the controller to see the restart", nil
	}
	st := d.Status
	line := fmt.Sprintf("%d/%d updated, %d available", st.UpdatedNumberScheduled, st.DesiredNumberScheduled, st.NumberAvailable)
	return st.UpdatedNumberScheduled == st.DesiredNumberScheduled && st.NumberAvailable == st.DesiredNumberScheduled, line, nil
}

// WorkloadRolloutDone dispatches to the rule of obj's kind.
func WorkloadRolloutDone(obj any) (bool, string, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		done, line := RolloutDone(o)
		return done, line, nil
	case *appsv1.StatefulSet:
		return StatefulSetRolloutDone(o)
	case *appsv1.DaemonSet:
		return DaemonSetRolloutDone(o)
	}
	return false, "", fmt.Errorf("no rollout rule for %T", obj)
}

// DaemonSetRevision returns the revision hash the DaemonSet's pods must
// carry (label controller-revision-hash): that of the newest
// ControllerRevision it controls. A DaemonSet's status has no
// updateRevision; the ControllerRevision is what its controller itself
// compares pods against. The pod-template-generation label is not used: it
// follows metadata.generation, which also moves on changes that do not
// touch the template (updateStrategy, minReadySeconds), so up-to-date pods
// would look old.
func DaemonSetRevision(ds *appsv1.DaemonSet, revs []appsv1.ControllerRevision) (string, error) {
	var newest *appsv1.ControllerRevision
	for i, r := range revs {
		if c := metav1.GetControllerOf(&r); c == nil || c.UID != ds.UID {
			continue
		}
		if newest == nil || r.Revision > newest.Revision {
			newest = &revs[i]
		}
	}
	if newest == nil {
		return "", fmt.Errorf("daemonset/%s controls no ControllerRevision yet (is the DaemonSet controller running? kubectl get controllerrevisions)", ds.Name)
	}
	if h := newest.Labels[LabelControllerRevisionHash]; h != "" {
		return h, nil
	}
	// The controller names revisions <daemonset>-<hash>.
	return strings.TrimPrefix(newest.Name, ds.Name+"-"), nil
}

// OnDeleteNext decides the next step of restarting a workload whose update
// strategy is OnDelete (changing its template replaces no pod): from its
// pods, the revision they must run and how many it wants, either wait
// (a pod is terminating, a replacement is missing or an updated pod is not
// Ready: the previous eviction is not done), evict the named pod (one
// still on an old revision; an unready one first, then the highest
// StatefulSet ordinal first, as a rolling update goes), or done (no pod
// left on an old revision).
func OnDeleteNext(pods []corev1.Pod, revision string, want int32) (evict string, line string, done bool) {
	var old []corev1.Pod
	live, updatedReady := 0, 0
	var waiting []string
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			waiting = append(waiting, "pod/"+p.Name+" terminating")
			continue
		}
		live++
		switch {
		case p.Labels[LabelControllerRevisionHash] != revision:
			old = append(old, p)
		case readiness.PodReady(&p):
			updatedReady++
		default:
			waiting = append(waiting, "pod/"+p.Name+" not Ready")
		}
	}
	line = fmt.Sprintf("%d/%d pods updated and Ready", updatedReady, want)
	if live < int(want) {
		waiting = append(waiting, fmt.Sprintf("%d of %d pods exist", live, want))
	}
	if len(waiting) > 0 {
		return "", line + "; waiting: " + strings.Join(waiting, ", "), false
	}
	if len(old) == 0 {
		return "", line, true
	}
	slices.SortFunc(old, func(a, b corev1.Pod) int {
		if ra, rb := readiness.PodReady(&a), readiness.PodReady(&b); ra != rb {
			if !ra {
				return -1
			}
			return 1
		}
		if len(a.Name) != len(b.Name) { // web-10 after web-9
			return len(b.Name) - len(a.Name)
		}
		return strings.Compare(b.Name, a.Name)
	})
	return old[0].Name, line, false
}

// matchingPDBs returns the PodDisruptionBudgets whose selector matches
// pods with these labels (policy/v1: an empty selector matches every pod,
// a missing one none).
func matchingPDBs(pdbs []policyv1.PodDisruptionBudget, podLabels map[string]string) []policyv1.PodDisruptionBudget {
	var out []policyv1.PodDisruptionBudget
	for _, p := range pdbs {
		if p.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && sel.Matches(labels.Set(podLabels)) {
			out = append(out, p)
		}
	}
	return out
}

// PDBGate decides whether a workload whose pods have these labels may be
// restarted now: every PodDisruptionBudget selecting them has been seen by
// the disruption controller and allows at least one disruption (the
// application is not already degraded). The line names the budgets waited
// for. A budget that allows no disruption although every pod it expects is
// healthy never will: with evicts (OnDelete: ambitctl evicts the pods)
// that is an error, waiting cannot help; without (the controller's rolling
// update, which does not evict), the restart goes on and the line says so.
func PDBGate(pdbs []policyv1.PodDisruptionBudget, podLabels map[string]string, evicts bool) (ok bool, line string, err error) {
	var waiting, notes []string
	for _, p := range matchingPDBs(pdbs, podLabels) {
		st := p.Status
		switch {
		case st.ObservedGeneration < p.Generation:
			waiting = append(waiting, "pdb/"+p.Name+" not yet seen by the disruption controller")
		case st.DisruptionsAllowed >= 1:
		case st.ExpectedPods > 0 && st.CurrentHealthy >= st.ExpectedPods && evicts:
			return false, "", fmt.Errorf("pdb/%s allows no disruption with all %d of its pods healthy (it needs %d healthy): no pod can ever be evicted; lower its minAvailable (or raise its maxUnavailable) or scale the workload up", p.Name, st.ExpectedPods, st.DesiredHealthy)
		case st.ExpectedPods > 0 && st.CurrentHealthy >= st.ExpectedPods:
			notes = append(notes, fmt.Sprintf("pdb/%s allows no disruption even with all %d pods healthy; going on: the rolling update does not evict", p.Name, st.ExpectedPods))
		default:
			waiting = append(waiting, fmt.Sprintf("pdb/%s allows 0 disruptions (%d healthy, %d needed)", p.Name, st.CurrentHealthy, st.DesiredHealthy))
		}
	}
	if len(waiting) > 0 {
		return false, "waiting for " + strings.Join(waiting, ", "), nil
	}
	return true, strings.Join(notes, "; "), nil
}

// MaxUnavailable returns how many pods a rolling update of obj may take
// down at once, resolved against its replicas (percentages round down, as
// the controllers do); rolling is false when the update does not go
// through the controller's rolling update (OnDelete: ambitctl evicts,
// and eviction respects PodDisruptionBudgets).
func MaxUnavailable(obj any) (n int, rolling bool) {
	scaled := func(v *intstr.IntOrString, def intstr.IntOrString, total int32) int {
		if v == nil {
			v = &def
		}
		n, err := intstr.GetScaledValueFromIntOrPercent(v, int(total), false)
		if err != nil {
			return 1
		}
		return n
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		want := Replicas(o.Spec.Replicas)
		if o.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			return int(want), true
		}
		var v *intstr.IntOrString
		if ru := o.Spec.Strategy.RollingUpdate; ru != nil {
			v = ru.MaxUnavailable
		}
		return scaled(v, intstr.FromString("25%"), want), true
	case *appsv1.StatefulSet:
		if o.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
			return 0, false
		}
		ru := o.Spec.UpdateStrategy.RollingUpdate
		if ru == nil {
			ru = &appsv1.RollingUpdateStatefulSetStrategy{}
		}
		return scaled(ru.MaxUnavailable, intstr.FromInt32(1), Replicas(o.Spec.Replicas)), true
	case *appsv1.DaemonSet:
		if o.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType {
			return 0, false
		}
		ru := o.Spec.UpdateStrategy.RollingUpdate
		if ru == nil {
			ru = &appsv1.RollingUpdateDaemonSet{}
		}
		return scaled(ru.MaxUnavailable, intstr.FromInt32(1), o.Status.DesiredNumberScheduled), true
	}
	return 0, false
}

// PDBWarnings returns a warning per PodDisruptionBudget selecting the
// workload's pods that allows fewer disruptions than its rolling update
// may cause: a rolling update deletes pods itself, without eviction, so
// the budget cannot stop it.
func PDBWarnings(ref WorkloadRef, maxUnavailable int, rolling bool, pdbs []policyv1.PodDisruptionBudget, podLabels map[string]string) []string {
	if !rolling {
		return nil
	}
	var out []string
	for _, p := range matchingPDBs(pdbs, podLabels) {
		if int32(maxUnavailable) > p.Status.DisruptionsAllowed {
			out = append(out, fmt.Sprintf("warning: %s may take down %d pods at once (maxUnavailable) but pdb/%s allows %d disruptions: a rolling update does not go through eviction, so the PodDisruptionBudget cannot stop it (lower maxUnavailable if that matters)", ref, maxUnavailable, p.Name, p.Status.DisruptionsAllowed))
		}
	}
	return out
}

// UnrestartablePods returns, sorted, the live pods with a sidecar that no
// controller ambitctl restarts owns: pods without a controller, and pods
// of a ReplicaSet not controlled by a Deployment, of a Job, of any other
// kind. rsOwner maps each ReplicaSet's name to the kind of its controller
// ("" when it has none). Migrate leaves them alone: the user deletes them
// (or has their owner replace them) once the namespace is ambient.
func UnrestartablePods(pods []corev1.Pod, rsOwner map[string]string) []string {
	var out []string
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !HasSidecar(p.Annotations, p.Spec) {
			continue
		}
		c := metav1.GetControllerOf(&p)
		switch {
		case c == nil:
		case c.Kind == "StatefulSet" || c.Kind == "DaemonSet":
			continue
		case c.Kind == "ReplicaSet" && rsOwner[c.Name] == "Deployment":
			continue
		}
		out = append(out, p.Name)
	}
	slices.Sort(out)
	return out
}

// UnrestartableNote is what the restart step and the plan say about such
// a pod.
func UnrestartableNote(pod string) string {
	return "pod/" + pod + " has a sidecar and no controller ambitctl restarts: delete it yourself once the namespace is ambient"
}
