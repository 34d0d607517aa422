//go:build harness

package cluster

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var binDir = flag.String("bin-dir", "", "directory with ambit-pause (make build)")

// hostSnapshot is what must look the same before Up and after Down.
type hostSnapshot map[string]string

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func snapshot(t *testing.T) hostSnapshot {
	t.Helper()
	s := hostSnapshot{}
	run := func(key string, name string, args ...string) {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
		s[key] = counters.ReplaceAllString(string(out), "")
	}
	run("netns", "ip", "netns", "list")
	run("links", "ip", "-o", "link", "show")
	run("routes4", "ip", "-4", "route", "show", "table", "all")
	run("routes6", "ip", "-6", "route", "show", "table", "all")
	run("rules", "ip", "rule", "show")
	for _, tbl := range []string{"filter", "nat", "mangle", "raw"} {
		run("iptables-"+tbl, "iptables", "-t", tbl, "-S")
		run("ip6tables-"+tbl, "ip6tables", "-t", tbl, "-S")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			mounts = append(mounts, f[4])
		}
	}
	slices.Sort(mounts)
	s["mounts"] = strings.Join(mounts, "\n")
	cg, _ := os.ReadDir("/sys/fs/cgroup/pids")
	var dirs []string
	for _, e := range cg {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	s["cgroups"] = strings.Join(dirs, "\n")
	// stripped of ephemeral link state (counters, flags like NO-CARRIER) not
	// needed: only names matter.
	var names []string
	for _, l := range strings.Split(s["links"], "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	s["links"] = strings.Join(names, "\n")
	return s
}

// processesOf lists processes whose command line mentions dir.
func processesOf(dir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), dir) {
			out = append(out, p+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func diff(before, after hostSnapshot) []string {
	var d []string
	for k, v := range before {
		if after[k] != v {
			d = append(d, fmt.Sprintf("%s changed:\n--- before\n%s\n--- after\n%s", k, v, after[k]))
		}
	}
	return d
}

// TestHarnessUpDownUp brings a 2-node cluster up, takes it down, and does it
// again; after each Down the host's namespaces, links, routes, firewall
// rules, mounts, cgroups and processes are exactly as before the first Up.
func TestHarnessUpDownUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the harness tier needs root (namespaces, cgroups, routes); run it as root")
	}
	if *binDir == "" {
		t.Fatal("-bin-dir is required (the directory holding ambit-pause)")
	}
	home, _ := os.UserHomeDir()
	cache := os.Getenv("AMBIT_CACHE")
	if cache == "" {
		cache = filepath.Join(home, ".cache", "ambit")
	}
	// A fixed state dir (not t.TempDir) so a run killed half-way is found
	// and taken down by the next one (.ci/run does that).
	cfg := Config{
		Name:         "harness",
		Nodes:        2,
		StateDir:     "/var/lib/ambit-localcluster/harness",
		K8sBinDir:    filepath.Join(cache, "k8s", K8sVersion, "bin"),
		PauseBinary:  filepath.Join(*binDir, "ambit-pause"),
		CNIPluginDir: "/usr/lib/cni",
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	c, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("cleanup down: %v", err)
		}
	})
	// A previous run that was killed may have left its cluster behind.
	if err := c.Down(ctx); err != nil {
		t.Fatalf("take down a leftover harness cluster: %v", err)
	}
	before := snapshot(t)
	for round := 1; round <= 2; round++ {
		start := time.Now()
		if err := c.Up(ctx); err != nil {
			t.Fatalf("round %d: up: %v", round, err)
		}
		t.Logf("round %d: up took %s", round, time.Since(start).Round(time.Millisecond))
		if msg, err := c.Status(ctx); err != nil {
			t.Fatalf("round %d: status after up: %v\n%s", round, err, msg)
		}
		if err := c.Down(ctx); err != nil {
			t.Fatalf("round %d: down: %v", round, err)
		}
		if d := diff(before, snapshot(t)); len(d) > 0 {
			t.Fatalf("round %d: down did not restore the host:\n%s", round, strings.Join(d, "\n"))
		}
		if p := processesOf(cfg.StateDir); len(p) > 0 {
			t.Fatalf("round %d: processes survived down:\n%s", round, strings.Join(p, "\n"))
		}
		if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
			t.Fatalf("round %d: state dir %s still exists (%v)", round, cfg.StateDir, err)
		}
	}
}
