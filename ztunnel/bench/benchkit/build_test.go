package benchkit

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBuildTagsLeaveOutTextTemplate guards BuildTags (and the Makefile's
// GOTAGS): built with them, the proxies and the control plane must not
// link text/template, whose reflective method calls disable the linker's
// dead-method elimination. A new dependency that brings it back shows up
// here rather than as a few MB more RSS in the next benchmark.
func TestBuildTagsLeaveOutTextTemplate(t *testing.T) {
	for _, pkg := range []string{
		"ambit.dev/ztunnel/cmd/ztunnel",
		"ambit.dev/waypoint/cmd/ambit-waypoint",
		"ambit.dev/controlplane/cmd/ambit-controlplane",
	} {
		out, err := exec.Command("go", "list", "-tags", BuildTags, "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s (run inside the repository's Go workspace): %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		for _, bad := range []string{"text/template", "html/template"} {
			if slices.Contains(deps, bad) {
				t.Errorf("%s built with -tags %s links %s: find the importer with go list -deps -f '{{.ImportPath}} {{.Imports}}'", pkg, BuildTags, bad)
			}
		}
	}
}
