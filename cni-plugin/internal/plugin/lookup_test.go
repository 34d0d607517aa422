package plugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// script writes an executable shell script named name into dir.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFindLookupBinary(t *testing.T) {
	root := t.TempDir()
	mk := func(sub string, perm os.FileMode) string {
		dir := filepath.Join(root, sub)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, LookupBinary)
		if perm != 0 {
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"), perm); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	nextTo := mk("plugin-dir", 0o755)
	inPath := mk("cni-path", 0o755)
	notExec := mk("not-exec", 0o644)
	empty := mk("empty", 0)
	tests := []struct {
		name                         string
		configured, executable, path string
		want                         string
		errHas                       string
	}{
		{name: "configured wins", configured: inPath, executable: filepath.Join(filepath.Dir(nextTo), "ambit-cni"), want: inPath},
		{name: "next to the plugin", executable: filepath.Join(filepath.Dir(nextTo), "ambit-cni"), path: filepath.Dir(inPath), want: nextTo},
		{name: "in CNI_PATH", executable: filepath.Join(filepath.Dir(empty), "ambit-cni"),
			path: filepath.Dir(empty) + ":" + filepath.Dir(inPath), want: inPath},
		{name: "executable unknown, CNI_PATH", path: filepath.Dir(inPath), want: inPath},
		{name: "configured missing", configured: filepath.Join(root, "nope"), executable: nextTo, errHas: `"lookupBinary"`},
		{name: "configured not executable", configured: notExec, errHas: "not executable"},
		{name: "nowhere", executable: filepath.Join(filepath.Dir(empty), "ambit-cni"), path: filepath.Dir(notExec),
			errHas: "cannot find ambit-cni-lookup (looked in " + filepath.Dir(empty) + ", " + filepath.Dir(notExec) + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindLookupBinary(tt.configured, tt.executable, tt.path)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("FindLookupBinary = %q, %v; want an error containing %q", got, err, tt.errHas)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("FindLookupBinary = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestExecLookup runs stand-in lookup programs (shell scripts) and checks
// how their output and exit codes are read.
func TestExecLookup(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		timeout  time.Duration
		enrolled bool
		reason   string
		is       error
		errHas   []string
	}{
		{name: "enrolled", body: `echo '{"enrolled":true,"reason":"namespace shop is ambient"}'`, enrolled: true, reason: "namespace shop is ambient"},
		{name: "not enrolled", body: `echo '{"enrolled":false,"reason":"namespace shop is not labelled"}'`, reason: "namespace shop is not labelled"},
		{name: "pod not found", body: "echo 'some library noise' >&2; echo 'ambit-cni-lookup: pods \"cart-1\" not found' >&2; exit 4",
			is: ErrPodNotFound, errHas: []string{`pods "cart-1" not found`}},
		{name: "API unreachable", body: "echo 'ambit-cni-lookup: dial tcp 10.96.0.1:443: connection refused' >&2; exit 3",
			is: ErrKubernetesAPI, errHas: []string{"connection refused"}},
		{name: "IPv6 API unauthorized", body: "echo 'ambit-cni-lookup: https://[fd00:96::1]:443: Unauthorized' >&2; exit 3",
			is: ErrKubernetesAPI, errHas: []string{"[fd00:96::1]", "Unauthorized"}},
		{name: "bad kubeconfig", body: "echo 'ambit-cni-lookup: cannot use the kubeconfig /k' >&2; exit 2",
			errHas: []string{"failed (exit status 2)", "cannot use the kubeconfig /k"}},
		{name: "not JSON", body: "echo hello", errHas: []string{`printed "hello\n", not a JSON line`}},
		{name: "killed at the deadline", body: "exec sleep 60", timeout: 2 * time.Second, errHas: []string{"did not answer in time"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			argsFile := filepath.Join(dir, "args")
			bin := script(t, dir, LookupBinary, `printf '%s\n' "$@" > `+argsFile+"\n"+tt.body+"\n")
			timeout := tt.timeout
			if timeout == 0 {
				timeout = LookupTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			enrolled, reason, err := ExecLookup{Binary: bin, Kubeconfig: "/etc/cni/net.d/kc"}.Decide(ctx, PodRef{Namespace: "shop", Name: "cart-1"})
			args, readErr := os.ReadFile(argsFile)
			if readErr != nil {
				t.Fatal(readErr)
			}
			if want := "--kubeconfig\n/etc/cni/net.d/kc\n--namespace\nshop\n--name\ncart-1\n--timeout\n"; !strings.HasPrefix(string(args), want) {
				t.Errorf("arguments:\n%s\nwant them to start with\n%s", args, want)
			}
			if len(tt.errHas) == 0 {
				if err != nil || enrolled != tt.enrolled || reason != tt.reason {
					t.Fatalf("Decide = %v, %q, %v; want %v, %q", enrolled, reason, err, tt.enrolled, tt.reason)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decide = %v, %q; want an error", enrolled, reason)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			for _, h := range tt.errHas {
				if !strings.Contains(err.Error(), h) {
					t.Errorf("error %q does not say %q", err, h)
				}
			}
			if strings.Contains(err.Error(), "library noise") {
				t.Errorf("error %q carries more than the program's last line", err)
			}
		})
	}
}

func TestLookupArgs(t *testing.T) {
	got := LookupArgs("/kc", PodRef{Namespace: "ns", Name: "p", UID: "u"}, 9*time.Second)
	want := []string{"--kubeconfig", "/kc", "--namespace", "ns", "--name", "p", "--timeout", "9s"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("LookupArgs = %q, want %q", got, want)
	}
}
