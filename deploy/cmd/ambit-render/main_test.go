package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.yaml")
	over := filepath.Join(dir, "over.yaml")
	if err := os.WriteFile(base, []byte("logLevel: debug\nztunnel:\n  image: {registry: reg.example.com, tag: v1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(over, []byte("ztunnel:\n  image: {tag: v2}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		want    []string // substrings of the output
		notWant []string
		wantErr string
	}{
		{
			name: "defaults",
			want: []string{"# (namespace ambit-system; values: chart defaults).", "kind: Namespace", "image: localhost/ambit-ztunnel:dev"},
		},
		{
			name: "later files and --set win, maps merge",
			args: []string{"--namespace=mesh", "-f", base, "-f", over, "--set", "logLevel=warn"},
			want: []string{
				"values: chart defaults, -f " + base + ", -f " + over + ", --set logLevel=warn",
				"image: reg.example.com/ambit-ztunnel:v2", // registry from base, tag from over
				"--log-level=warn", "namespace: mesh",
			},
			notWant: []string{"--log-level=debug", "namespace: ambit-system"},
		},
		{name: "bad --set", args: []string{"--set", "controlplane.replicas=x"}, wantErr: "/controlplane/replicas"},
		{name: "missing file", args: []string{"-f", filepath.Join(dir, "nope.yaml")}, wantErr: "nope.yaml"},
		{name: "positional argument", args: []string{"values.yaml"}, wantErr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tc.args, &out, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("run(%q) error %v, want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("run(%q): %v", tc.args, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out.String(), w) {
					t.Errorf("output contains %q", w)
				}
			}
		})
	}
}
