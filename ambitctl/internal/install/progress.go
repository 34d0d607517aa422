package install

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/manifest"
	"ambit.dev/ambitctl/internal/readiness"
)

// Item is one line of the progress display.
type Item struct {
	// Title is the component ("control plane"), Ref the object
	// ("Deployment ambit-system/ambit-controlplane").
	Title, Ref string
	State      readiness.State
}

// NewItem returns the progress item of a workload, not yet evaluated.
func NewItem(w *unstructured.Unstructured) Item {
	return Item{Title: components.Title(w.GetKind(), w.GetName()), Ref: manifest.Ref(w),
		State: readiness.State{Summary: "pending", Reason: "not read yet"}}
}

// ProgressLines renders items as aligned lines:
//
//	[ready]    control plane   Deployment ambit-system/ambit-controlplane   1/1 available
//	[waiting]  ztunnel         DaemonSet ambit-system/ztunnel              1/2 nodes ready: 1 of 2 pods available
func ProgressLines(items []Item) []string {
	tw, rw := 0, 0
	for _, it := range items {
		tw = max(tw, len(it.Title))
		rw = max(rw, len(it.Ref))
	}
	out := make([]string, len(items))
	for i, it := range items {
		mark, detail := "[waiting]", it.State.Summary
		if it.State.Ready {
			mark = "[ready]"
		} else if it.State.Reason != "" {
			detail += ": " + it.State.Reason
		}
		out[i] = fmt.Sprintf("%-9s  %-*s  %-*s  %s", mark, tw, it.Title, rw, it.Ref, detail)
	}
	return out
}

// progress writes ProgressLines: redrawn in place on a terminal (cursor up
// and clear line), else only the lines that changed.
type progress struct {
	w        io.Writer
	terminal bool
	last     []string
}

func newProgress(w io.Writer, terminal bool) *progress { return &progress{w: w, terminal: terminal} }

func (p *progress) show(items []Item) {
	lines := ProgressLines(items)
	if slices.Equal(lines, p.last) {
		return
	}
	var b strings.Builder
	if p.terminal {
		if len(p.last) > 0 {
			fmt.Fprintf(&b, "\x1b[%dA", len(p.last))
		}
		for _, l := range lines {
			b.WriteString("\x1b[2K" + l + "\n")
		}
	} else {
		for i, l := range lines {
			if i >= len(p.last) || p.last[i] != l {
				b.WriteString(l + "\n")
			}
		}
	}
	io.WriteString(p.w, b.String())
	p.last = lines
}
