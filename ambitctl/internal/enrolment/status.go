package enrolment

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"ambit.dev/pkg/enrol"
)

// Namespace is an enrolled namespace and its pods.
type Namespace struct {
	Name string
	Pods []Pod
}

// Status is what `ambitctl status` prints.
type Status struct {
	// AmbitNamespace is where Ambit runs.
	AmbitNamespace string
	Namespaces     []Namespace
	Ztunnels       []Ztunnel
}

// Render writes s as three parts: enrolled namespaces, their pods, and the
// ztunnel of each node.
func Render(w io.Writer, s Status) error {
	var b strings.Builder
	if len(s.Namespaces) == 0 {
		fmt.Fprintf(&b, "No namespace is enrolled: enrol one with ambitctl enroll <namespace> (sets the label %s=%s).\n",
			enrol.LabelDataplaneMode, enrol.DataplaneModeAmbient)
	} else {
		fmt.Fprintf(&b, "Enrolled namespaces (label %s=%s):\n", enrol.LabelDataplaneMode, enrol.DataplaneModeAmbient)
		tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tPODS IN MESH\tREDIRECTION ENABLED")
		for _, ns := range s.Namespaces {
			in, enabled := 0, 0
			for _, p := range ns.Pods {
				if p.InMesh {
					in++
					if p.Redirection == enrol.RedirectionEnabled {
						enabled++
					}
				}
			}
			fmt.Fprintf(tw, "%s\t%d/%d\t%d/%d\n", ns.Name, in, len(ns.Pods), enabled, in)
		}
		tw.Flush()
		b.WriteString("\nPods:\n")
		tw = tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "NAMESPACE\tPOD\tNODE\tPHASE\tIN MESH\tREDIRECTION\tNOTE")
		for _, ns := range s.Namespaces {
			for _, p := range ns.Pods {
				inMesh := "no"
				if p.InMesh {
					inMesh = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ns.Name, p.Name, dash(p.Node), dash(string(p.Phase)), inMesh, p.RedirectionState(), dash(p.Note(s.AmbitNamespace)))
			}
		}
		tw.Flush()
	}
	b.WriteString("\nztunnel per node:\n")
	if len(s.Ztunnels) == 0 {
		b.WriteString("(the cluster has no nodes)\n")
	} else {
		tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "NODE\tZTUNNEL POD\tREADY")
		for _, z := range s.Ztunnels {
			ready := "no"
			switch {
			case z.Pod == "":
				ready = fmt.Sprintf("no ztunnel on this node: ambitctl check -n %s", s.AmbitNamespace)
			case z.Ready:
				ready = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", z.Node, dash(z.Pod), ready)
		}
		tw.Flush()
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
