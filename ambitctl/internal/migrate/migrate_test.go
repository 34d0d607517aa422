package migrate

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
