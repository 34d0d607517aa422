package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/enrolment"
	"ambit.dev/ambitctl/internal/migrate"
	"ambit.dev/ambitctl/internal/waypoint"
	"ambit.dev/ambitctl/internal/ztunneladmin"
	"ambit.dev/pkg/enrol"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// SwitchOptions tune migrate apply and rollback.
type SwitchOptions struct {
	// StepTimeout bounds each waiting step (objects Accepted, waypoint,
	// each workload's PodDisruptionBudgets and rollout, verification).
	StepTimeout time.Duration
	// Interval is the polling interval (default 2s).
	Interval time.Duration
	// Out gets the progress lines.
	Out io.Writer
	// AmbitNamespace is where Ambit runs (for the hints about pods not
	// captured).
	AmbitNamespace string
	// Now stamps restarts (default time.Now).
	Now func() time.Time
	// Ztunnel reaches the ztunnels' admin and metrics ports (verify
	// step); nil means a port-forward through the apiserver.
	Ztunnel ztunneladmin.Getter
}

func (o *SwitchOptions) defaults() {
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	if o.StepTimeout == 0 {
		o.StepTimeout = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// switcher runs migrate apply / rollback on one namespace.
type switcher struct {
	c   *Clients
	cl  *Cluster
	ns  string
	opt SwitchOptions
	rec *migrate.Record
}

func (s *switcher) say(format string, args ...any) {
	fmt.Fprintf(s.opt.Out, format+"\n", args...)
}

// ReadSwitchState reads what migrate.PlanSwitch decides from: the
// namespace's labels and migration record, the converted objects (as
// migrate plan converts them), the workloads with sidecars and the pods
// with sidecars ambitctl does not restart.
func ReadSwitchState(ctx context.Context, c *Clients, ns string) (migrate.SwitchState, migrate.Plan, error) {
	st := migrate.SwitchState{Namespace: ns}
	in, err := ReadMigrationInputs(ctx, c.Istio, c.Typed, c.Dynamic, ns)
	if err != nil {
		return st, migrate.Plan{}, err
	}
	plan := migrate.Convert(in)
	st.Objects = plan.Objects()
	obj, err := getNamespace(ctx, c.Typed, ns)
	if err != nil {
		return st, plan, err
	}
	st.Labels = obj.Labels
	if st.Record, err = migrate.ParseRecord(obj.Annotations[migrate.AnnotationMigration]); err != nil {
		return st, plan, err
	}
	st.SidecarWorkloads, st.UnrestartablePods, err = sidecarWorkloads(ctx, c, ns)
	return st, plan, err
}

// saveRecord writes the record (and, when labels is not empty, the label
// changes in the same merge patch, so the record never disagrees with the
// labels). A nil record removes the annotation.
func (s *switcher) saveRecord(ctx context.Context, labels map[string]any) error {
	var ann any
	if s.rec != nil {
		ann = s.rec.Encode()
	}
	meta := map[string]any{"annotations": map[string]any{migrate.AnnotationMigration: ann}}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	if _, err := s.c.Typed.CoreV1().Namespaces().Patch(ctx, s.ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: components.FieldManager}); err != nil {
		return fmt.Errorf("recording migration progress on namespace %s: %w (you need permission to patch namespaces)", s.ns, hint(err))
	}
	return nil
}

// MigrateApply runs the switch on namespace ns (see migrate.Steps),
// skipping the steps the namespace's record says are done. It prints the
// plan of steps, then a line per step and progress lines while waiting.
func MigrateApply(ctx context.Context, c *Clients, ns string, opt SwitchOptions) error {
	opt.defaults()
	st, _, err := ReadSwitchState(ctx, c, ns)
	if err != nil {
		return err
	}
	s := &switcher{c: c, cl: NewCluster(c.Dynamic, c.Typed, c.Mapper), ns: ns, opt: opt, rec: st.Record}
	if s.rec == nil {
		s.rec = &migrate.Record{}
	}
	if s.rec.Complete() {
		s.say("namespace %s is already migrated (annotation %s records every step); ambitctl migrate rollback -n %s undoes it", ns, migrate.AnnotationMigration, ns)
		return nil
	}
	actions := migrate.PlanSwitch(st)
	for i, a := range actions {
		if a.Done {
			s.say("[%d/%d] %s: done by an earlier run", i+1, len(actions), a.Step)
			continue
		}
		s.say("[%d/%d] %s: %s", i+1, len(actions), a.Step, a.What)
		var err error
		switch a.Step {
		case migrate.StepApply:
			err = s.applyObjects(ctx, st.Objects)
		case migrate.StepWaypoint:
			err = s.waitWaypoint(ctx, st.Objects)
		case migrate.StepLabelAmbient:
			err = s.labelAmbient(ctx)
		case migrate.StepRemoveInjection:
			err = s.removeInjection(ctx)
		case migrate.StepRestart:
			err = s.restartAll(ctx)
		case migrate.StepVerify:
			err = s.verify(ctx)
		}
		if err != nil {
			return fmt.Errorf("step %s: %w (fix it and re-run ambitctl migrate apply -n %s to continue from this step, or ambitctl migrate rollback -n %s)", a.Step, err, ns, ns)
		}
		s.rec.MarkDone(a.Step)
		if err := s.saveRecord(ctx, nil); err != nil {
			return err
		}
	}
	s.say("namespace %s migrated to Ambit", ns)
	return nil
}

// poll calls cond every interval until it returns true, an error, or the
// step timeout passes; progress lines are printed when they change.
func (s *switcher) poll(ctx context.Context, what string, cond func(ctx context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, s.opt.StepTimeout)
	defer cancel()
	last := ""
	err := wait.PollUntilContextCancel(ctx, s.opt.Interval, true, func(ctx context.Context) (bool, error) {
		ok, line, err := cond(ctx)
		if err != nil && ctx.Err() != nil {
			return false, nil
		}
		if line != "" && line != last {
			last = line
			s.say("  %s", line)
		}
		return ok, err
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("timed out after %s waiting for %s (last: %s)", s.opt.StepTimeout, what, last)
	}
	return err
}

// applyObjects server-side applies the converted objects and waits until
// each is Accepted (or waits only for a waypoint).
func (s *switcher) applyObjects(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		o.SetNamespace(s.ns)
		live, err := s.cl.Get(ctx, o.GroupVersionKind(), s.ns, o.GetName())
		switch {
		case err == nil && live.GetAnnotations()[migrate.AnnotationMigratedFrom] == "":
			return fmt.Errorf("%s %s/%s exists and was not made by migrate (no annotation %s): rename or delete it, it would be overwritten", o.GetKind(), s.ns, o.GetName(), migrate.AnnotationMigratedFrom)
		case err != nil && !apierrors.IsNotFound(err):
			return fmt.Errorf("reading %s %s/%s: %w", o.GetKind(), s.ns, o.GetName(), err)
		}
		out, err := s.cl.Apply(ctx, o)
		if err != nil {
			return fmt.Errorf("applying %s %s/%s: %w", o.GetKind(), s.ns, o.GetName(), err)
		}
		s.say("  %s %s", migrate.RefOf(o), out)
		if ref := migrate.RefOf(o); !slices.Contains(s.rec.Applied, ref) {
			s.rec.Applied = append(s.rec.Applied, ref)
			if err := s.saveRecord(ctx, nil); err != nil {
				return err
			}
		}
	}
	return s.waitAccepted(ctx, objs, false)
}

// waitAccepted waits until every object is where migrate.Progress wants
// it (waypointBound: after the waypoint step).
func (s *switcher) waitAccepted(ctx context.Context, objs []*unstructured.Unstructured, waypointBound bool) error {
	return s.poll(ctx, "the converted objects to be Accepted", func(ctx context.Context) (bool, string, error) {
		var waiting []string
		accepted := 0
		for _, o := range objs {
			live, err := s.cl.Get(ctx, o.GroupVersionKind(), s.ns, o.GetName())
			if err != nil {
				return false, "", fmt.Errorf("reading %s %s/%s: %w", o.GetKind(), s.ns, o.GetName(), err)
			}
			r, msg := migrate.Judge(live)
			if r == migrate.Accepted {
				accepted++
			}
			done, fatal := migrate.Progress(r, len(migrate.WaypointServices(s.ns, []*unstructured.Unstructured{o})) > 0, waypointBound)
			switch {
			case fatal:
				return false, "", fmt.Errorf("%s %s/%s is not Accepted: %s (kubectl -n %s get %s %s -o yaml shows its status)", o.GetKind(), s.ns, o.GetName(), msg, s.ns, strings.ToLower(o.GetKind()), o.GetName())
			case !done:
				waiting = append(waiting, migrate.RefOf(o).String()+" ("+msg+")")
			}
		}
		line := fmt.Sprintf("%d/%d Accepted", accepted, len(objs))
		if len(waiting) == 0 {
			if accepted < len(objs) {
				line += " (the others wait for the waypoint step)"
			}
			return true, line, nil
		}
		return false, line + "; waiting for " + strings.Join(waiting, ", "), nil
	})
}

// waitWaypoint waits until the Services the L7 objects attach to are
// bound to a Programmed waypoint, then until every object is Accepted.
func (s *switcher) waitWaypoint(ctx context.Context, objs []*unstructured.Unstructured) error {
	svcs := migrate.WaypointServices(s.ns, objs)
	if len(svcs) == 0 {
		return nil
	}
	err := s.poll(ctx, "a Programmed waypoint for Services "+strings.Join(svcs, ", "), func(ctx context.Context) (bool, string, error) {
		nsObj, err := getNamespace(ctx, s.c.Typed, s.ns)
		if err != nil {
			return false, "", err
		}
		var waiting []string
		for _, name := range svcs {
			svc, err := s.c.Typed.CoreV1().Services(s.ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, "", fmt.Errorf("reading Service %s/%s: %w", s.ns, name, hint(err))
			}
			wp, wpNS := svc.Labels[waypoint.LabelUseWaypoint], svc.Labels[waypoint.LabelUseWaypointNamespace]
			if wp == "" {
				wp, wpNS = nsObj.Labels[waypoint.LabelUseWaypoint], nsObj.Labels[waypoint.LabelUseWaypointNamespace]
			}
			switch {
			case wp == waypoint.UseWaypointNone:
				return false, "", fmt.Errorf("Service %s/%s is labelled %s=none but converted L7 objects need a waypoint for it: remove the label", s.ns, name, waypoint.LabelUseWaypoint)
			case wp == "":
				waiting = append(waiting, name+" (not bound yet)")
				continue
			}
			if wpNS == "" {
				wpNS = s.ns
			}
			gw, found, err := gateway(ctx, s.c.Dynamic, wpNS, wp)
			if err != nil {
				return false, "", err
			}
			if !found || !gw.Programmed() {
				waiting = append(waiting, fmt.Sprintf("%s (waypoint %s/%s not Programmed)", name, wpNS, wp))
			}
		}
		if len(waiting) == 0 {
			return true, "every Service is bound to a Programmed waypoint", nil
		}
		return false, "waiting for " + strings.Join(waiting, ", "), nil
	})
	if err != nil {
		return err
	}
	return s.waitAccepted(ctx, objs, true)
}

func (s *switcher) labelAmbient(ctx context.Context) error {
	nsObj, err := getNamespace(ctx, s.c.Typed, s.ns)
	if err != nil {
		return err
	}
	if prev := nsObj.Labels[enrol.LabelDataplaneMode]; prev != enrol.DataplaneModeAmbient {
		s.rec.AmbientLabelAdded, s.rec.PreviousDataplaneMode = true, prev
		s.rec.MarkDone(migrate.StepLabelAmbient)
		if err := s.saveRecord(ctx, map[string]any{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}); err != nil {
			return err
		}
	}
	nsObj, err = getNamespace(ctx, s.c.Typed, s.ns)
	if err != nil {
		return err
	}
	if !enrolment.Enrolled(nsObj.Labels) {
		return fmt.Errorf("namespace %s is not labelled %s=%s after patching it (does an admission policy remove the label?)", s.ns, enrol.LabelDataplaneMode, enrol.DataplaneModeAmbient)
	}
	return nil
}

func (s *switcher) removeInjection(ctx context.Context) error {
	nsObj, err := getNamespace(ctx, s.c.Typed, s.ns)
	if err != nil {
		return err
	}
	rm := migrate.RemoveInjection(nsObj.Labels)
	if len(rm) > 0 {
		if s.rec.RemovedLabels == nil {
			s.rec.RemovedLabels = map[string]string{}
		}
		labels := map[string]any{}
		for k, v := range rm {
			s.rec.RemovedLabels[k] = v
			labels[k] = nil
		}
		s.rec.MarkDone(migrate.StepRemoveInjection)
		if err := s.saveRecord(ctx, labels); err != nil {
			return err
		}
	}
	nsObj, err = getNamespace(ctx, s.c.Typed, s.ns)
	if err != nil {
		return err
	}
	if left := migrate.RemoveInjection(nsObj.Labels); len(left) > 0 {
		return fmt.Errorf("namespace %s still has injection labels %v after removing them", s.ns, left)
	}
	return nil
}

// restartAll restarts, one at a time, the workloads with sidecars (and
// waits again for those an interrupted run restarted); it names the pods
// with sidecars it leaves to the user.
func (s *switcher) restartAll(ctx context.Context) error {
	names, unrestartable, err := sidecarWorkloads(ctx, s.c, s.ns)
	if err != nil {
		return err
	}
	restarted, err := restartedRefs(s.rec)
	if err != nil {
		return err
	}
	var refs []migrate.WorkloadRef
	for _, n := range names {
		ref, err := migrate.ParseWorkloadRef(n)
		if err != nil {
			return err
		}
		refs = append(refs, ref)
	}
	for _, r := range restarted {
		if !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	slices.SortFunc(refs, func(a, b migrate.WorkloadRef) int { return strings.Compare(a.String(), b.String()) })
	for _, p := range unrestartable {
		s.say("  %s", migrate.UnrestartableNote(p))
	}
	for _, ref := range refs {
		if !slices.Contains(restarted, ref) {
			found, err := s.restartWorkload(ctx, ref, stripSidecar, "took the sidecar out of its pod template (kept in annotation "+migrate.AnnotationSidecarRemoved+" for rollback)")
			if err != nil || !found {
				return err
			}
			s.rec.Restarted = append(s.rec.Restarted, ref.String())
			if err := s.saveRecord(ctx, nil); err != nil {
				return err
			}
		}
		if err := s.waitRollout(ctx, ref); err != nil {
			return err
		}
	}
	return nil
}

// restartedRefs parses the record's restarted workloads.
func restartedRefs(rec *migrate.Record) ([]migrate.WorkloadRef, error) {
	var out []migrate.WorkloadRef
	for _, r := range rec.Restarted {
		ref, err := migrate.ParseWorkloadRef(r)
		if err != nil {
			return nil, err
		}
		out = append(out, ref)
	}
	return out, nil
}

// waitPDBs waits until the PodDisruptionBudgets selecting the workload's
// pods allow a disruption (migrate.PDBGate), and warns once about those
// its rolling update can exceed (migrate.PDBWarnings).
func (s *switcher) waitPDBs(ctx context.Context, w *workload) error {
	maxUnavailable, rolling := migrate.MaxUnavailable(w.obj)
	warned := false
	return s.poll(ctx, "the PodDisruptionBudgets of "+w.ref.String()+" to allow a disruption", func(ctx context.Context) (bool, string, error) {
		pdbs, err := s.c.Typed.PolicyV1().PodDisruptionBudgets(s.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", fmt.Errorf("listing PodDisruptionBudgets in %s: %w (you need list on poddisruptionbudgets)", s.ns, hint(err))
		}
		ok, line, err := migrate.PDBGate(pdbs.Items, w.tmpl.Labels, !rolling)
		if err != nil {
			return false, "", fmt.Errorf("%s: %w", w.ref, err)
		}
		if ok && !warned {
			warned = true
			for _, l := range migrate.PDBWarnings(w.ref, maxUnavailable, rolling, pdbs.Items, w.tmpl.Labels) {
				s.say("  %s", l)
			}
		}
		if line != "" {
			line = w.ref.String() + ": " + line
		}
		return ok, line, nil
	})
}

// restart sets the restart annotation on the workload's pod template
// (what kubectl rollout restart does), after edit. A Deployment, or a
// StatefulSet or DaemonSet with a RollingUpdate strategy, then replaces
// its pods itself (no eviction is involved, so PodDisruptionBudgets do not
// block it); with OnDelete, waitRollout evicts them.
func (s *switcher) restart(ctx context.Context, ref migrate.WorkloadRef, edit func(*workload) (bool, error)) (bool, error) {
	var edited bool
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		w, err := getWorkload(ctx, s.c.Typed, s.ns, ref)
		if err != nil {
			return err
		}
		if edited, err = edit(w); err != nil {
			return err
		}
		if w.tmpl.Annotations == nil {
			w.tmpl.Annotations = map[string]string{}
		}
		w.tmpl.Annotations[migrate.AnnotationRestartedAt] = s.opt.Now().UTC().Format(time.RFC3339)
		return w.update(ctx, s.c.Typed)
	})
	if err != nil {
		return false, fmt.Errorf("restarting %s in %s: %w (you need get and update on %ss)", ref, s.ns, hint(err), ref.Kind)
	}
	return edited, nil
}

// waitRollout waits until the workload's rollout completed (the rule of
// its kind, migrate.WorkloadRolloutDone), evicting the old pods first when
// its update strategy is OnDelete.
func (s *switcher) waitRollout(ctx context.Context, ref migrate.WorkloadRef) error {
	w, err := getWorkload(ctx, s.c.Typed, s.ns, ref)
	if apierrors.IsNotFound(err) {
		s.say("  %s is gone", ref)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s in %s: %w", ref, s.ns, hint(err))
	}
	if _, rolling := migrate.MaxUnavailable(w.obj); !rolling {
		if err := s.evictOld(ctx, ref); err != nil {
			return err
		}
	}
	return s.poll(ctx, "the rollout of "+ref.String(), func(ctx context.Context) (bool, string, error) {
		w, err := getWorkload(ctx, s.c.Typed, s.ns, ref)
		if apierrors.IsNotFound(err) {
			return true, ref.String() + " is gone", nil
		}
		if err != nil {
			return false, "", hint(err)
		}
		done, line, err := migrate.WorkloadRolloutDone(w.obj)
		return done, ref.String() + ": " + line, err
	})
}

// evictOld replaces, one at a time, the pods of an OnDelete workload that
// still run an old revision, through the Eviction API (which respects
// PodDisruptionBudgets: a refusal is retried until the step's timeout),
// waiting after each for its replacement (migrate.OnDeleteNext).
func (s *switcher) evictOld(ctx context.Context, ref migrate.WorkloadRef) error {
	return s.poll(ctx, "the pods of "+ref.String()+" on an old revision to be evicted and replaced", func(ctx context.Context) (bool, string, error) {
		w, err := getWorkload(ctx, s.c.Typed, s.ns, ref)
		if apierrors.IsNotFound(err) {
			return true, ref.String() + " is gone", nil
		}
		if err != nil {
			return false, "", hint(err)
		}
		if w.meta.Generation > observedGeneration(w.obj) {
			return false, ref.String() + ": waiting for the controller to see the restart", nil
		}
		revision, want, err := s.onDeleteTarget(ctx, w)
		if err != nil {
			return false, "", err
		}
		pods, err := s.c.Typed.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", listErr("pods", err)
		}
		var mine []corev1.Pod
		for _, p := range pods.Items {
			if c := metav1.GetControllerOf(&p); c != nil && c.UID == w.meta.UID && w.selects(p) {
				mine = append(mine, p)
			}
		}
		evict, line, done := migrate.OnDeleteNext(mine, revision, want)
		line = ref.String() + " (OnDelete): " + line
		if done || evict == "" {
			return done, line, nil
		}
		err = s.c.Typed.CoreV1().Pods(s.ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: evict, Namespace: s.ns}})
		switch {
		case apierrors.IsTooManyRequests(err):
			return false, fmt.Sprintf("%s; eviction of pod/%s refused for now (%v): waiting for its PodDisruptionBudget", line, evict, err), nil
		case apierrors.IsNotFound(err):
			return false, line, nil
		case err != nil:
			return false, "", fmt.Errorf("evicting pod %s/%s: %w (you need create on pods/eviction)", s.ns, evict, hint(err))
		}
		s.say("  %s: evicted pod/%s (old revision)", ref, evict)
		return false, line, nil
	})
}

// observedGeneration is the workload's status.observedGeneration.
func observedGeneration(obj any) int64 {
	switch o := obj.(type) {
	case *appsv1.StatefulSet:
		return o.Status.ObservedGeneration
	case *appsv1.DaemonSet:
		return o.Status.ObservedGeneration
	case *appsv1.Deployment:
		return o.Status.ObservedGeneration
	}
	return 0
}

// onDeleteTarget returns the revision an OnDelete workload's pods must
// run and how many pods it wants: a StatefulSet's status.updateRevision
// and replicas, a DaemonSet's newest ControllerRevision
// (migrate.DaemonSetRevision) and desiredNumberScheduled.
func (s *switcher) onDeleteTarget(ctx context.Context, w *workload) (string, int32, error) {
	switch o := w.obj.(type) {
	case *appsv1.StatefulSet:
		return o.Status.UpdateRevision, migrate.Replicas(o.Spec.Replicas), nil
	case *appsv1.DaemonSet:
		revs, err := s.c.Typed.AppsV1().ControllerRevisions(s.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", 0, fmt.Errorf("listing ControllerRevisions in %s: %w (you need list on controllerrevisions)", s.ns, hint(err))
		}
		rev, err := migrate.DaemonSetRevision(o, revs.Items)
		return rev, o.Status.DesiredNumberScheduled, err
	}
	return "", 0, fmt.Errorf("%s has no OnDelete strategy", w.ref)
}

// verify waits until every live pod of the namespace is captured by
// Ambit, none has a sidecar, and the ztunnel of each pod's node serves it
// with a Valid certificate of its identity; then it reports the inbound
// HBONE traffic the ztunnels counted for the namespace.
func (s *switcher) verify(ctx context.Context) error {
	td, err := ZtunnelTrustDomain(ctx, s.c.Typed, s.opt.AmbitNamespace)
	if err != nil {
		return err
	}
	var z migrate.Ztunnels
	var live []corev1.Pod
	err = s.poll(ctx, "every pod of "+s.ns+" to be captured and served with its identity", func(ctx context.Context) (bool, string, error) {
		nsObj, err := getNamespace(ctx, s.c.Typed, s.ns)
		if err != nil {
			return false, "", err
		}
		pods, err := s.c.Typed.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", listErr("pods", err)
		}
		unrestartable, err := unrestartablePods(ctx, s.c.Typed, s.ns, pods.Items)
		if err != nil {
			return false, "", err
		}
		z = s.readZtunnels(ctx, td)
		live = pods.Items
		ok, line := migrate.Verify(nsObj.Labels, pods.Items, s.opt.AmbitNamespace, unrestartable, &z)
		return ok, line, nil
	})
	if err != nil {
		return err
	}
	var ids []string
	for _, p := range live {
		ids = append(ids, migrate.SPIFFEID(td, p.Namespace, p.Spec.ServiceAccountName))
	}
	traffic, terr := migrate.InboundTraffic(s.ns, z)
	for _, l := range migrate.TrafficReport(traffic, ids) {
		s.say("  %s", l)
	}
	if terr != nil {
		s.say("  %v", terr)
	}
	return nil
}

// readZtunnels reads /config_dump and /metrics of the ztunnel of every
// node. A node whose ztunnel cannot be read is kept with the error, for
// the verify line; none found leaves Nodes empty.
func (s *switcher) readZtunnels(ctx context.Context, trustDomain string) migrate.Ztunnels {
	z := migrate.Ztunnels{TrustDomain: trustDomain, Nodes: map[string]migrate.ZtunnelState{}}
	pods, err := ZtunnelPods(ctx, s.c.Typed, s.opt.AmbitNamespace)
	if err != nil {
		return z
	}
	targets, err := ztunneladmin.Targets(s.opt.AmbitNamespace, pods, "")
	if err != nil {
		return z
	}
	g := s.opt.Ztunnel
	if g == nil {
		g = NewPortForwarder(s.c.Config, s.c.Typed)
	}
	for _, t := range targets {
		st := migrate.ZtunnelState{Pod: t.Namespace + "/" + t.Pod}
		body, err := g.Get(ctx, t.Namespace, t.Pod, components.ZtunnelAdminPort, adminapi.PathConfigDump)
		if err == nil {
			var d adminapi.ConfigDump
			if err = json.Unmarshal(body, &d); err == nil {
				st.Dump = &d
			} else {
				err = fmt.Errorf("its %s is not the JSON ambitctl expects (ztunnel and ambitctl versions differ?): %w", adminapi.PathConfigDump, err)
			}
		}
		st.DumpErr = err
		if m, err := g.Get(ctx, t.Namespace, t.Pod, components.ZtunnelMetricsPort, "/metrics"); err == nil {
			st.Metrics = m
		}
		z.Nodes[t.Node] = st
	}
	return z
}

// ReadMigrationRecord reads namespace ns's migration record; it is an
// error when there is none.
func ReadMigrationRecord(ctx context.Context, c *Clients, ns string) (*migrate.Record, error) {
	nsObj, err := getNamespace(ctx, c.Typed, ns)
	if err != nil {
		return nil, err
	}
	rec, err := migrate.ParseRecord(nsObj.Annotations[migrate.AnnotationMigration])
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("namespace %s has no annotation %s: migrate apply did not run there (or rollback already finished), nothing to roll back", ns, migrate.AnnotationMigration)
	}
	return rec, nil
}

// MigrateRollback undoes what the namespace's migration record says
// migrate apply did (migrate.PlanRollback), recording as it goes so an
// interrupted rollback can be re-run.
func MigrateRollback(ctx context.Context, c *Clients, ns string, opt SwitchOptions) error {
	opt.defaults()
	rec, err := ReadMigrationRecord(ctx, c, ns)
	if err != nil {
		return err
	}
	s := &switcher{c: c, cl: NewCluster(c.Dynamic, c.Typed, c.Mapper), ns: ns, opt: opt, rec: rec}
	for _, l := range migrate.PlanRollback(ns, rec) {
		s.say("- %s", l)
	}
	if labels := migrate.RollbackLabels(rec); len(labels) > 0 {
		rec.RemovedLabels, rec.AmbientLabelAdded, rec.PreviousDataplaneMode = nil, false, ""
		if err := s.saveRecord(ctx, labels); err != nil {
			return err
		}
		s.say("  labels restored")
	}
	for len(rec.Restarted) > 0 {
		ref, err := migrate.ParseWorkloadRef(rec.Restarted[0])
		if err != nil {
			return err
		}
		if err := s.rollbackWorkload(ctx, ref); err != nil {
			return err
		}
		rec.Restarted = rec.Restarted[1:]
		if err := s.saveRecord(ctx, nil); err != nil {
			return err
		}
	}
	for len(rec.Applied) > 0 {
		ref := rec.Applied[0]
		if err := s.deleteApplied(ctx, ref); err != nil {
			return err
		}
		rec.Applied = rec.Applied[1:]
		if err := s.saveRecord(ctx, nil); err != nil {
			return err
		}
	}
	s.rec = nil
	if err := s.saveRecord(ctx, nil); err != nil {
		return err
	}
	s.say("namespace %s rolled back", ns)
	return nil
}

// restartWorkload waits until the workload's PodDisruptionBudgets allow
// a disruption, then restarts it after edit, saying edited when edit
// changed its template. found is false (and said) when it is gone.
func (s *switcher) restartWorkload(ctx context.Context, ref migrate.WorkloadRef, edit func(*workload) (bool, error), edited string) (found bool, err error) {
	w, err := getWorkload(ctx, s.c.Typed, s.ns, ref)
	if apierrors.IsNotFound(err) {
		s.say("  %s is gone", ref)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s in %s: %w", ref, s.ns, hint(err))
	}
	if err := s.waitPDBs(ctx, w); err != nil {
		return true, err
	}
	changed, err := s.restart(ctx, ref, edit)
	if err != nil {
		return true, err
	}
	if changed {
		s.say("  %s: %s", ref, edited)
	}
	return true, nil
}

// rollbackWorkload restarts a workload apply restarted, putting back the
// sidecar apply took out of its template, and waits for its rollout. A
// workload that is gone is skipped.
func (s *switcher) rollbackWorkload(ctx context.Context, ref migrate.WorkloadRef) error {
	found, err := s.restartWorkload(ctx, ref, restoreSidecar, "sidecar put back into its pod template")
	if err != nil || !found {
		return err
	}
	return s.waitRollout(ctx, ref)
}

// deleteApplied deletes an object apply made, only when it still carries
// the migrated-from annotation and ambitctl manages fields of it.
func (s *switcher) deleteApplied(ctx context.Context, ref migrate.ObjectRef) error {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(ref.APIVersion)
	u.SetKind(ref.Kind)
	u.SetName(ref.Name)
	u.SetNamespace(s.ns)
	live, err := s.cl.Get(ctx, u.GroupVersionKind(), s.ns, ref.Name)
	if apierrors.IsNotFound(err) {
		s.say("  %s is already gone", ref)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", ref, err)
	}
	managed := slices.ContainsFunc(live.GetManagedFields(), func(m metav1.ManagedFieldsEntry) bool { return m.Manager == components.FieldManager })
	if live.GetAnnotations()[migrate.AnnotationMigratedFrom] == "" || !managed {
		s.say("  %s kept: it is no longer annotated %s or managed by ambitctl (someone took it over)", ref, migrate.AnnotationMigratedFrom)
		return nil
	}
	if _, err := s.cl.Delete(ctx, u); err != nil {
		return fmt.Errorf("deleting %s: %w", ref, err)
	}
	s.say("  %s deleted", ref)
	return nil
}
