// Package ztunneladmin is `ambitctl ztunnel certs|workloads|services|
// connections`: it reads the admin port of the ztunnel on each node (a
// loopback port of the node, reached through the apiserver's pod
// port-forward, so it works from a laptop) and prints the tables of
// ztunnel-admin — the same code, ambit.dev/ztunnel/pkg/admincli — one
// section per node.
package ztunneladmin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"ambit.dev/ambitctl/internal/readiness"
	"ambit.dev/ztunnel/pkg/admincli"
)

// Target is the ztunnel pod of one node.
type Target struct {
	Node, Namespace, Pod string
}

// Getter GETs path from port of a pod's network namespace (127.0.0.1:port
// there; ztunnel is host-network, so that is its node's loopback).
type Getter interface {
	Get(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error)
}

// Targets picks one ztunnel pod per node among pods (ztunnel's pods in
// namespace): the ready one when a node has several. node restricts the
// result to one node; "" means every node that runs ztunnel. Targets are
// sorted by node.
func Targets(namespace string, pods []corev1.Pod, node string) ([]Target, error) {
	best := map[string]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning || (node != "" && p.Spec.NodeName != node) {
			continue
		}
		if cur, ok := best[p.Spec.NodeName]; !ok || (readiness.PodReady(p) && !readiness.PodReady(cur)) {
			best[p.Spec.NodeName] = p
		}
	}
	if len(best) == 0 {
		if node != "" {
			return nil, fmt.Errorf("no running ztunnel pod on node %s: check the node name (kubectl get nodes) and ztunnel there (ambitctl check -n %s)", node, namespace)
		}
		return nil, fmt.Errorf("no running ztunnel pod in namespace %s: is Ambit installed there (ambitctl check -n %s; pass -n if it runs elsewhere)?", namespace, namespace)
	}
	out := make([]Target, 0, len(best))
	for n, p := range best {
		out = append(out, Target{Node: n, Namespace: p.Namespace, Pod: p.Name})
	}
	slices.SortFunc(out, func(a, b Target) int { return cmp.Compare(a.Node, b.Node) })
	return out, nil
}

// Options say what Print shows.
type Options struct {
	View admincli.View
	// Output is admincli.OutputTable or admincli.OutputJSON.
	Output string
	// Port is ztunnel's admin port.
	Port int
	// Now is the clock of the AGE and VALID columns.
	Now time.Time
	// Sections prints a "# node ..." header before each node's table; with
	// false and one target the output is exactly ztunnel-admin's.
	Sections bool
}

// Print reads opts.View from each target and writes it to w: tables one
// section per node, or JSON (one target: the admin answer as is; several:
// an object mapping node names to the answers). A node that cannot be read
// does not stop the others; the error names every such node.
func Print(ctx context.Context, w io.Writer, g Getter, targets []Target, opts Options) error {
	if err := admincli.CheckOutput(opts.Output); err != nil {
		return err
	}
	var errs []error
	jsonByNode := map[string]json.RawMessage{}
	for i, t := range targets {
		out, err := fetch(ctx, g, t, opts)
		if err != nil {
			errs = append(errs, err)
		}
		switch {
		case opts.Output == admincli.OutputJSON:
			if err == nil {
				jsonByNode[t.Node] = json.RawMessage(out)
			}
		default:
			if opts.Sections {
				if i > 0 {
					io.WriteString(w, "\n")
				}
				fmt.Fprintf(w, "# node %s (pod %s/%s)\n", t.Node, t.Namespace, t.Pod)
			}
			if err != nil {
				fmt.Fprintf(w, "error: %v\n", err)
				continue
			}
			if _, err := w.Write(out); err != nil {
				return err
			}
		}
	}
	if opts.Output == admincli.OutputJSON {
		switch {
		case len(targets) == 1 && !opts.Sections:
			if raw, ok := jsonByNode[targets[0].Node]; ok {
				if _, err := w.Write(raw); err != nil {
					return err
				}
			}
		case len(jsonByNode) > 0:
			b, err := json.MarshalIndent(jsonByNode, "", "  ")
			if err != nil {
				return err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
		}
	}
	return errors.Join(errs...)
}

func fetch(ctx context.Context, g Getter, t Target, opts Options) ([]byte, error) {
	body, err := g.Get(ctx, t.Namespace, t.Pod, opts.Port, opts.View.Path)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", t.Node, err)
	}
	out, err := opts.View.Format(body, opts.Output, opts.Now)
	if err != nil {
		return nil, fmt.Errorf("node %s: the answer of pod %s/%s port %d to GET %s is not ztunnel admin JSON (is ambitctl as new as ztunnel?): %w",
			t.Node, t.Namespace, t.Pod, opts.Port, opts.View.Path, err)
	}
	return out, nil
}
