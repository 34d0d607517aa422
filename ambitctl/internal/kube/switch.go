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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
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
	// each Deployment's rollout, verification).
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
// migrate plan converts them) and the Deployments with sidecars.
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
	st.SidecarDeployments, err = sidecarDeployments(ctx, c, ns)
	return st, plan, err
}

// sidecarDeployments returns the Deployments of ns whose pod template or
// live pods carry an Istio sidecar, sorted.
func sidecarDeployments(ctx context.Context, c *Clients, ns string) ([]string, error) {
	deps, err := c.Typed.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("deployments", err)
	}
	pods, err := c.Typed.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr("pods", err)
	}
	var out []string
	for _, d := range deps.Items {
		if migrate.HasSidecar(d.Spec.Template.Annotations, d.Spec.Template.Spec) || slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool {
			return p.DeletionTimestamp == nil && ownedBy(p, d) && migrate.HasSidecar(p.Annotations, p.Spec)
		}) {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ownedBy reports whether pod p belongs to Deployment d: its selector
// matches the pod's labels.
func ownedBy(p corev1.Pod, d appsv1.Deployment) bool {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		return false
	}
	return sel.Matches(labels.Set(p.Labels))
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

// restartAll restarts, one at a time, the Deployments with sidecars (and
// waits again for those an interrupted run restarted).
func (s *switcher) restartAll(ctx context.Context) error {
	deps, err := sidecarDeployments(ctx, s.c, s.ns)
	if err != nil {
		return err
	}
	for _, r := range s.rec.Restarted {
		if !slices.Contains(deps, r) {
			deps = append(deps, r)
		}
	}
	slices.Sort(deps)
	for _, d := range deps {
		if !slices.Contains(s.rec.Restarted, d) {
			removed, err := s.restart(ctx, d, stripSidecar)
			if err != nil {
				return err
			}
			if removed {
				s.say("  deployment/%s: took the sidecar out of its pod template (kept in annotation %s for rollback)", d, migrate.AnnotationSidecarRemoved)
			}
			s.rec.Restarted = append(s.rec.Restarted, d)
			if err := s.saveRecord(ctx, nil); err != nil {
				return err
			}
		}
		if err := s.waitRollout(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// stripSidecar takes the sidecar out of a Deployment's template, keeping
// it in AnnotationSidecarRemoved; it reports whether it took anything.
func stripSidecar(d *appsv1.Deployment) (bool, error) {
	sc := migrate.StripSidecar(&d.Spec.Template)
	if sc == nil {
		return false, nil
	}
	b, err := json.Marshal(sc)
	if err != nil {
		return false, err
	}
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[migrate.AnnotationSidecarRemoved] = string(b)
	return true, nil
}

// restoreSidecar puts back what stripSidecar took.
func restoreSidecar(d *appsv1.Deployment) (bool, error) {
	v, ok := d.Annotations[migrate.AnnotationSidecarRemoved]
	if !ok {
		return false, nil
	}
	var sc migrate.Sidecar
	if err := json.Unmarshal([]byte(v), &sc); err != nil {
		return false, fmt.Errorf("annotation %s of deployment %s/%s: %w", migrate.AnnotationSidecarRemoved, d.Namespace, d.Name, err)
	}
	migrate.RestoreSidecar(&d.Spec.Template, &sc)
	delete(d.Annotations, migrate.AnnotationSidecarRemoved)
	return true, nil
}

// restart sets the restart annotation on Deployment name's pod template
// (what kubectl rollout restart does), after edit; the Deployment's own
// rolling update then replaces the pods (maxUnavailable/maxSurge; no
// eviction is involved, so PodDisruptionBudgets do not block it).
func (s *switcher) restart(ctx context.Context, name string, edit func(*appsv1.Deployment) (bool, error)) (bool, error) {
	var edited bool
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := s.c.Typed.AppsV1().Deployments(s.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if edited, err = edit(d); err != nil {
			return err
		}
		if d.Spec.Template.Annotations == nil {
			d.Spec.Template.Annotations = map[string]string{}
		}
		d.Spec.Template.Annotations[migrate.AnnotationRestartedAt] = s.opt.Now().UTC().Format(time.RFC3339)
		_, err = s.c.Typed.AppsV1().Deployments(s.ns).Update(ctx, d, metav1.UpdateOptions{FieldManager: components.FieldManager})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("restarting deployment %s/%s: %w (you need get and update on deployments)", s.ns, name, hint(err))
	}
	return edited, nil
}

// waitRollout waits until Deployment name's rollout completed: the
// controller saw the new generation, every replica is updated and
// available and no old one is left (kubectl rollout status's rule).
func (s *switcher) waitRollout(ctx context.Context, name string) error {
	return s.poll(ctx, "the rollout of deployment "+name, func(ctx context.Context) (bool, string, error) {
		d, err := s.c.Typed.AppsV1().Deployments(s.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "deployment/" + name + " is gone", nil
		}
		if err != nil {
			return false, "", hint(err)
		}
		done, line := RolloutDone(d)
		return done, "deployment/" + name + ": " + line, nil
	})
}

// RolloutDone reports whether a Deployment's rollout is complete, and a
// progress line.
func RolloutDone(d *appsv1.Deployment) (bool, string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
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
		z = s.readZtunnels(ctx, td)
		live = pods.Items
		ok, line := migrate.Verify(nsObj.Labels, pods.Items, s.opt.AmbitNamespace, &z)
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
		d := rec.Restarted[0]
		restored, err := s.restart(ctx, d, restoreSidecar)
		switch {
		case apierrors.IsNotFound(err):
			s.say("  deployment/%s is gone", d)
		case err != nil:
			return err
		default:
			if restored {
				s.say("  deployment/%s: sidecar put back into its pod template", d)
			}
			if err := s.waitRollout(ctx, d); err != nil {
				return err
			}
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
