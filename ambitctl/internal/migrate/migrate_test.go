package migrate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden converts each testdata/<case>.in.yaml and compares the table
// and the YAML with <case>.table.golden and <case>.yaml.golden.
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no testdata/*.in.yaml (%v)", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			inputs, err := Decode("demo", data)
			if err != nil {
				t.Fatal(err)
			}
			plan := Convert(inputs)
			var table, yml bytes.Buffer
			if err := plan.Table(&table); err != nil {
				t.Fatal(err)
			}
			if err := plan.YAML(&yml); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", name+".table.golden"), table.Bytes())
			golden(t, filepath.Join("testdata", name+".yaml.golden"), yml.Bytes())
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestHTTPRouteCRD: with the standard channel's HTTPRoute CRD a route's
// retries are reported (the apiserver would drop them); without the CRD
// the plan says to install it.
func TestHTTPRouteCRD(t *testing.T) {
	data, err := os.ReadFile("testdata/virtualservice.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := Decode("demo", data)
	if err != nil {
		t.Fatal(err)
	}
	retryGaps := func(p Plan) (n int) {
		for _, e := range p.Entries {
			for _, g := range e.NotMapped {
				if strings.HasSuffix(g.Field, ".retries") && strings.Contains(g.Reason, "standard channel") {
					n++
				}
			}
		}
		return n
	}
	for _, c := range []struct {
		crd      string
		gaps     int
		noteWord string
	}{
		{"", 0, ""},
		{HTTPRouteCRDExperimental, 0, ""},
		{HTTPRouteCRDStandard, 3, ""},
		{HTTPRouteCRDMissing, 0, "no HTTPRoute CRD"},
	} {
		in.HTTPRouteCRD = c.crd
		p := Convert(in)
		if got := retryGaps(p); got != c.gaps {
			t.Errorf("%q: %d retry gaps, want %d", c.crd, got, c.gaps)
		}
		notes := strings.Join(p.Notes, "\n")
		if (c.noteWord == "") != (notes == "") || !strings.Contains(notes, c.noteWord) {
			t.Errorf("%q: notes %q, want %q", c.crd, notes, c.noteWord)
		}
	}
	std := HTTPRouteCRDChannel(&unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"versions": []any{map[string]any{"name": "v1"}}}}})
	if std != HTTPRouteCRDStandard || HTTPRouteCRDChannel(nil) != HTTPRouteCRDMissing {
		t.Errorf("HTTPRouteCRDChannel: %q for a CRD without retry, %q for none", std, HTTPRouteCRDChannel(nil))
	}
}
