package migrate

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

func (e Entry) becomes() string {
	var names []string
	for _, o := range e.Objects {
		names = append(names, o.GetKind()+"/"+o.GetName())
	}
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ", ")
}

// Table prints one row per source object: SOURCE, BECOMES (the objects
// it becomes) and NOT MAPPED (field: reason), one line per field.
func (p Plan) Table(w io.Writer) error {
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if len(p.Entries) == 0 {
		_, err := fmt.Fprintf(w, "No Istio objects (VirtualService, DestinationRule, AuthorizationPolicy, PeerAuthentication, Sidecar) in namespace %s.\n", p.Namespace)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tBECOMES\tNOT MAPPED")
	for _, e := range p.Entries {
		first := "-"
		if len(e.NotMapped) > 0 {
			first = e.NotMapped[0].Field + ": " + e.NotMapped[0].Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Source, e.becomes(), first)
		for _, g := range e.NotMapped[min(1, len(e.NotMapped)):] {
			fmt.Fprintf(tw, "\t\t%s: %s\n", g.Field, g.Reason)
		}
	}
	return tw.Flush()
}

// YAML prints the produced objects as a multi-document YAML stream
// kubectl apply -f accepts: a comment per source object naming what it
// becomes, its objects, and at the end a comment listing what was not
// mapped.
func (p Plan) YAML(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# ambitctl migrate plan -n %s\n", p.Namespace)
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "# note: %s\n", n)
	}
	var gaps []string
	for _, e := range p.Entries {
		fmt.Fprintf(&b, "# %s becomes: %s\n", e.Source, e.becomes())
		for _, o := range e.Objects {
			y, err := yaml.Marshal(o.Object)
			if err != nil {
				return fmt.Errorf("marshalling %s/%s converted from %s: %w", o.GetKind(), o.GetName(), e.Source, err)
			}
			b.WriteString("---\n")
			b.Write(y)
		}
		for _, g := range e.NotMapped {
			gaps = append(gaps, fmt.Sprintf("#   %s %s: %s", e.Source, g.Field, g.Reason))
		}
	}
	if len(gaps) > 0 {
		fmt.Fprintf(&b, "# Not mapped (%d):\n%s\n", len(gaps), strings.Join(gaps, "\n"))
	} else {
		b.WriteString("# Everything mapped.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
