package waypoint

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Kinds of objects that bind to a waypoint by label.
const (
	KindNamespace = "Namespace"
	KindService   = "Service"
	KindPod       = "Pod"
)

// Object is a Namespace, Service or pod and its labels.
type Object struct {
	Kind string
	// Namespace is empty for a Namespace.
	Namespace, Name string
	Labels          map[string]string
}

// Ref is "namespace/<name>", "service <ns>/<name>" or "pod <ns>/<name>".
func (o Object) Ref() string {
	if o.Kind == KindNamespace {
		return "namespace " + o.Name
	}
	return strings.ToLower(o.Kind) + " " + o.Namespace + "/" + o.Name
}

// Names reports whether o's labels name the waypoint namespace/name:
// LabelUseWaypoint is name, and LabelUseWaypointNamespace (default o's own
// namespace, or o itself for a Namespace) is namespace.
func (o Object) Names(namespace, name string) bool {
	if o.Labels[LabelUseWaypoint] != name {
		return false
	}
	want := o.Namespace
	if o.Kind == KindNamespace {
		want = o.Name
	}
	if n := o.Labels[LabelUseWaypointNamespace]; n != "" {
		want = n
	}
	return want == namespace
}

var kindOrder = map[string]int{KindNamespace: 0, KindService: 1, KindPod: 2}

// Bound returns the objects whose labels name the waypoint namespace/name,
// namespaces first, then Services, then pods, each by namespace and name.
func Bound(namespace, name string, objs []Object) []Object {
	var out []Object
	for _, o := range objs {
		if o.Names(namespace, name) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b Object) int {
		return cmp.Or(cmp.Compare(kindOrder[a.Kind], kindOrder[b.Kind]), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// RenderList writes the table of `ambitctl waypoint list`; gws are sorted
// by namespace and name. Gateways of another class are left out.
func RenderList(w io.Writer, gws []Info, scope string) error {
	var b strings.Builder
	var rows []Info
	for _, g := range gws {
		if g.Class == Class {
			rows = append(rows, g)
		}
	}
	slices.SortFunc(rows, func(a, b Info) int { return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name)) })
	if len(rows) == 0 {
		fmt.Fprintf(&b, "No waypoint %s: create one with ambitctl waypoint apply -n <namespace>\n", scope)
	} else {
		tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tFOR\tPROGRAMMED\tADDRESS")
		for _, g := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.Namespace, g.Name, g.For, g.ProgrammedState(), dash(strings.Join(g.Addresses, ",")))
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Pod is a pod of a waypoint's Deployment.
type Pod struct {
	Name, Node, Phase string
	Ready             bool
}

// Status is what `ambitctl waypoint status` prints.
type Status struct {
	Gateway Info
	Pods    []Pod
	// Bound are the objects whose labels name the waypoint (Bound).
	Bound []Object
}

// RenderStatus writes s: the Gateway and its conditions, its pods, and
// what is bound to it.
func RenderStatus(w io.Writer, s Status) error {
	var b strings.Builder
	g := s.Gateway
	fmt.Fprintf(&b, "Waypoint %s (class %s, for %s traffic)\n", g.Ref(), g.Class, g.For)
	fmt.Fprintf(&b, "Address: %s\n", dash(strings.Join(g.Addresses, ", ")))
	if len(g.Conditions) == 0 {
		b.WriteString("Conditions: none: no waypoint controller has seen it (is Ambit installed? ambitctl check)\n")
	} else {
		b.WriteString("Conditions:\n")
		tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tMESSAGE")
		for _, c := range g.Conditions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Type, dash(c.Status), dash(c.Reason), dash(c.Message))
		}
		tw.Flush()
	}
	b.WriteString("\n")
	if len(s.Pods) == 0 {
		fmt.Fprintf(&b, "Pods: none (kubectl -n %s describe deployment %s)\n", g.Namespace, g.Name)
	} else {
		b.WriteString("Pods:\n")
		tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "  POD\tNODE\tPHASE\tREADY")
		for _, p := range s.Pods {
			ready := "no"
			if p.Ready {
				ready = "yes"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", p.Name, dash(p.Node), dash(p.Phase), ready)
		}
		tw.Flush()
	}
	b.WriteString("\n")
	if len(s.Bound) == 0 {
		fmt.Fprintf(&b, "Bound: nothing names it: label a Service, pod or namespace %s=%s", LabelUseWaypoint, g.Name)
		if g.Namespace != "" {
			fmt.Fprintf(&b, " (outside namespace %s, also %s=%s)", g.Namespace, LabelUseWaypointNamespace, g.Namespace)
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "Bound (label %s=%s):\n", LabelUseWaypoint, g.Name)
		for _, o := range s.Bound {
			note := ""
			if o.Kind == KindNamespace {
				note = " (its Services and pods without their own " + LabelUseWaypoint + " label)"
			}
			fmt.Fprintf(&b, "  %s%s\n", o.Ref(), note)
		}
		if !g.Programmed() {
			b.WriteString("The waypoint is not Programmed: until it is, their traffic goes without it.\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// DeleteLines describes the outcome of delete. unlabelled says the
// namespace's LabelUseWaypoint named the waypoint and was removed; deleted
// is false when the Gateway did not exist; still are the Services and pods
// whose labels still name it.
func DeleteLines(namespace, name string, unlabelled, deleted bool, still []Object) []string {
	var out []string
	if unlabelled {
		out = append(out, fmt.Sprintf("namespace %s: removed label %s=%s", namespace, LabelUseWaypoint, name))
	}
	if deleted {
		out = append(out, fmt.Sprintf("waypoint %s/%s deleted (its Deployment, Service and ServiceAccount go with it)", namespace, name))
	} else {
		out = append(out, fmt.Sprintf("waypoint %s/%s not found: nothing to delete", namespace, name))
	}
	if len(still) > 0 {
		refs := make([]string, 0, len(still))
		for _, o := range still {
			refs = append(refs, o.Ref())
		}
		out = append(out,
			fmt.Sprintf("warning: %d object(s) still name it with %s=%s: %s", len(still), LabelUseWaypoint, name, strings.Join(refs, ", ")),
			"  their traffic now goes directly, without a waypoint; remove the label (kubectl label <kind> <name> "+LabelUseWaypoint+"-) or apply the waypoint again")
	}
	return out
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
