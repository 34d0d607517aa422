// Package install applies a rendered Ambit manifest to a cluster and waits
// until it runs (`ambitctl install`), and deletes it again (`ambitctl
// uninstall`). The Kubernetes I/O is behind Cluster (internal/kube
// implements it with server-side apply through a dynamic client); the
// decisions — order, what uninstall keeps, when a component is ready, what
// the progress display shows — are pure functions here.
package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	"ambit.dev/ambitctl/internal/manifest"
	"ambit.dev/ambitctl/internal/readiness"
)

// Outcome is what applying one object did.
type Outcome string

// Outcomes of Cluster.Apply.
const (
	Created    Outcome = "created"
	Configured Outcome = "configured"
	Unchanged  Outcome = "unchanged"
)

// Cluster is the Kubernetes I/O install and uninstall need.
type Cluster interface {
	// Apply server-side applies obj (field manager "ambitctl", forcing
	// conflicts) and says whether that created or changed it.
	Apply(ctx context.Context, obj *unstructured.Unstructured) (Outcome, error)
	// Get returns the live object; an error satisfying
	// apierrors.IsNotFound when there is none.
	Get(ctx context.Context, gvk schema.GroupVersionKind, namespace, name string) (*unstructured.Unstructured, error)
	// Delete deletes obj (background propagation); found is false when it
	// did not exist.
	Delete(ctx context.Context, obj *unstructured.Unstructured) (found bool, err error)
	// CountPods counts the pods in namespace matching a label selector.
	CountPods(ctx context.Context, namespace, selector string) (int, error)
}

// Options configure an Installer.
type Options struct {
	// Namespace is Ambit's namespace (for messages).
	Namespace string
	// Out receives the progress display.
	Out io.Writer
	// Timeout bounds each wait: a CRD becoming established, the
	// components becoming ready, the pods going away (default 5m).
	Timeout time.Duration
	// Interval is how often waits poll (default 2s).
	Interval time.Duration
	// Terminal redraws the progress lines in place (Out is a terminal);
	// otherwise a line is printed whenever a component's state changes.
	Terminal bool
}

// Installer installs and uninstalls Ambit.
type Installer struct {
	cluster Cluster
	opts    Options
}

// New validates opts and returns an Installer. It does no I/O.
func New(cluster Cluster, opts Options) (*Installer, error) {
	if cluster == nil {
		return nil, errors.New("install: a Cluster is required")
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	return &Installer{cluster: cluster, opts: opts}, nil
}

// Install applies objs in manifest.ApplyOrder, waiting for each CRD to be
// established before going on, then waits until every Deployment and
// DaemonSet among objs is ready, showing progress. Applying the same objs
// again changes nothing.
func (in *Installer) Install(ctx context.Context, objs []*unstructured.Unstructured) error {
	if len(objs) == 0 {
		return errors.New("the rendered chart has no objects: check the values (-f, --set)")
	}
	counts := map[Outcome]int{}
	for _, obj := range manifest.ApplyOrder(objs) {
		outcome, err := in.cluster.Apply(ctx, obj)
		if err != nil {
			return fmt.Errorf("applying %s: %w", manifest.Ref(obj), err)
		}
		counts[outcome]++
		if outcome != Unchanged {
			fmt.Fprintf(in.opts.Out, "%s %s\n", manifest.Ref(obj), outcome)
		}
		if manifest.IsCRD(obj) {
			if err := in.waitCRD(ctx, obj); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(in.opts.Out, "applied %d objects: %d created, %d configured, %d unchanged\n",
		len(objs), counts[Created], counts[Configured], counts[Unchanged])
	return in.WaitReady(ctx, Workloads(objs))
}

func (in *Installer) waitCRD(ctx context.Context, crd *unstructured.Unstructured) error {
	var last readiness.State
	err := wait.PollUntilContextTimeout(ctx, in.opts.Interval, in.opts.Timeout, true, func(ctx context.Context) (bool, error) {
		live, err := in.cluster.Get(ctx, crd.GroupVersionKind(), "", crd.GetName())
		if err != nil {
			return false, fmt.Errorf("reading %s: %w", manifest.Ref(crd), err)
		}
		last = readiness.CRD(live)
		return last.Ready, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s to be established (%s): %w; see kubectl get crd %s -o yaml",
			manifest.Ref(crd), last.Reason, err, crd.GetName())
	}
	return nil
}

// Workloads returns the Deployments and DaemonSets among objs, in apply
// order: what Install waits for.
func Workloads(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range manifest.ApplyOrder(objs) {
		if isWorkload(o) {
			out = append(out, o)
		}
	}
	return out
}

func isWorkload(o *unstructured.Unstructured) bool {
	gvk := o.GroupVersionKind()
	return gvk.Group == "apps" && (gvk.Kind == "Deployment" || gvk.Kind == "DaemonSet")
}

// WaitReady polls workloads until all are ready or Timeout passes,
// redrawing one progress line per workload.
func (in *Installer) WaitReady(ctx context.Context, workloads []*unstructured.Unstructured) error {
	if len(workloads) == 0 {
		return nil
	}
	p := newProgress(in.opts.Out, in.opts.Terminal)
	items := make([]Item, len(workloads))
	for i, w := range workloads {
		items[i] = NewItem(w)
	}
	err := wait.PollUntilContextTimeout(ctx, in.opts.Interval, in.opts.Timeout, true, func(ctx context.Context) (bool, error) {
		all := true
		for i, w := range workloads {
			live, err := in.cluster.Get(ctx, w.GroupVersionKind(), w.GetNamespace(), w.GetName())
			switch {
			case err != nil:
				items[i].State = readiness.State{Summary: "unknown", Reason: "cannot read it: " + err.Error()}
			default:
				st, _, err := readiness.Object(live)
				if err != nil {
					return false, err
				}
				items[i].State = st
			}
			all = all && items[i].State.Ready
		}
		p.show(items)
		return all, nil
	})
	if err == nil {
		fmt.Fprintln(in.opts.Out, "Ambit is ready")
		return nil
	}
	var waiting []string
	for _, it := range items {
		if !it.State.Ready {
			waiting = append(waiting, fmt.Sprintf("%s (%s)", it.Title, it.State.Reason))
		}
	}
	return fmt.Errorf("not ready after %s: %s: see ambitctl check -n %s and kubectl -n %s get pods -o wide: %w",
		in.opts.Timeout, strings.Join(waiting, "; "), in.opts.Namespace, in.opts.Namespace, err)
}
