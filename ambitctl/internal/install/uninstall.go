package install

import (
	"context"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"

	"ambit.dev/ambitctl/internal/manifest"
)

// Kept is an object uninstall leaves in place, and why.
type Kept struct {
	Obj *unstructured.Unstructured
	Why string
}

// Plan is what uninstall deletes, in two phases: the workloads (and what
// is ordered after them), then — once their pods are gone — the rest (RBAC,
// ServiceAccounts, configuration the pods used while shutting down).
type Plan struct {
	Workloads []*unstructured.Unstructured
	Rest      []*unstructured.Unstructured
	Kept      []Kept
}

// DeletePlan decides what uninstall deletes and in which order
// (manifest.DeleteOrder). It keeps:
//   - the CRDs, unless deleteCRDs: deleting a CRD deletes every object of
//     its kind, that is the users' policies;
//   - the Namespace: it holds what Ambit did not render (the mesh root the
//     control plane generated, a plug-in CA Secret) and what users put
//     there.
func DeletePlan(objs []*unstructured.Unstructured, deleteCRDs bool) Plan {
	var p Plan
	ordered := manifest.DeleteOrder(objs)
	lastWorkload := -1
	for i, o := range ordered {
		if isWorkload(o) {
			lastWorkload = i
		}
	}
	for i, o := range ordered {
		switch {
		case manifest.IsCRD(o) && !deleteCRDs:
			p.Kept = append(p.Kept, Kept{o, "keeps the users' policies; --delete-crds deletes it and every object of its kind"})
		case o.GetKind() == "Namespace" && o.GroupVersionKind().Group == "":
			p.Kept = append(p.Kept, Kept{o, fmt.Sprintf("it may hold the mesh root and your CA Secrets; delete it with kubectl delete namespace %s", o.GetName())})
		case i <= lastWorkload:
			p.Workloads = append(p.Workloads, o)
		default:
			p.Rest = append(p.Rest, o)
		}
	}
	return p
}

// Cleanup removes what Ambit's workloads created at run time (not
// rendered by the chart), once they are gone; it returns lines to print.
type Cleanup func(context.Context) ([]string, error)

// Uninstall deletes what Install applied (objs, rendered the same way),
// following DeletePlan: workloads first, then waits until their pods are
// gone (the node agent removes its CNI configuration from each node as its
// pod stops), then runs cleanup (nil: none) — nothing re-creates what it
// removes any more — then deletes the rest. Objects already gone are fine.
func (in *Installer) Uninstall(ctx context.Context, objs []*unstructured.Unstructured, deleteCRDs bool, cleanup Cleanup) error {
	plan := DeletePlan(objs, deleteCRDs)
	if err := in.deleteAll(ctx, plan.Workloads); err != nil {
		return err
	}
	if err := in.waitPodsGone(ctx, plan.Workloads); err != nil {
		return err
	}
	if cleanup != nil {
		lines, err := cleanup(ctx)
		for _, l := range lines {
			fmt.Fprintln(in.opts.Out, l)
		}
		if err != nil {
			return err
		}
	}
	if err := in.deleteAll(ctx, plan.Rest); err != nil {
		return err
	}
	for _, k := range plan.Kept {
		fmt.Fprintf(in.opts.Out, "%s kept: %s\n", manifest.Ref(k.Obj), k.Why)
	}
	fmt.Fprintln(in.opts.Out, "Ambit is uninstalled")
	return nil
}

func (in *Installer) deleteAll(ctx context.Context, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		found, err := in.cluster.Delete(ctx, o)
		if err != nil {
			return fmt.Errorf("deleting %s: %w", manifest.Ref(o), err)
		}
		if found {
			fmt.Fprintf(in.opts.Out, "%s deleted\n", manifest.Ref(o))
		} else {
			fmt.Fprintf(in.opts.Out, "%s already gone\n", manifest.Ref(o))
		}
	}
	return nil
}

// PodSelector returns the label selector of a workload's pods (its
// spec.selector), or "" when it has none.
func PodSelector(w *unstructured.Unstructured) string {
	sel, found, err := unstructured.NestedMap(w.Object, "spec", "selector")
	if err != nil || !found {
		return ""
	}
	var ls metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(sel, &ls); err != nil {
		return ""
	}
	s, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil || s.Empty() {
		return ""
	}
	return s.String()
}

func (in *Installer) waitPodsGone(ctx context.Context, workloads []*unstructured.Unstructured) error {
	type target struct{ ns, selector, title string }
	var targets []target
	for _, w := range workloads {
		if !isWorkload(w) {
			continue
		}
		if sel := PodSelector(w); sel != "" {
			targets = append(targets, target{w.GetNamespace(), sel, NewItem(w).Title})
		}
	}
	if len(targets) == 0 {
		return nil
	}
	var left []string
	lastMsg := ""
	err := wait.PollUntilContextTimeout(ctx, in.opts.Interval, in.opts.Timeout, true, func(ctx context.Context) (bool, error) {
		left = left[:0]
		for _, t := range targets {
			n, err := in.cluster.CountPods(ctx, t.ns, t.selector)
			if err != nil {
				return false, fmt.Errorf("listing the pods of %s: %w", t.title, err)
			}
			if n > 0 {
				left = append(left, fmt.Sprintf("%d %s pod(s)", n, t.title))
			}
		}
		if msg := strings.Join(left, ", "); msg != "" && msg != lastMsg {
			fmt.Fprintf(in.opts.Out, "waiting for %s to terminate\n", msg)
			lastMsg = msg
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%s still running after %s: see kubectl -n %s get pods -o wide; a node agent that cannot stop leaves its CNI configuration on the node: %w",
			strings.Join(left, ", "), in.opts.Timeout, in.opts.Namespace, err)
	}
	return nil
}
