// Package netnstest gives privileged tests named network namespaces that
// are deleted when the test ends, and removes the ones a test binary left
// behind when it was killed before its cleanups ran. Namespaces are named
// <prefix><pid>-<n>, so a leftover is recognised by its dead owner PID.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

var count atomic.Int64

// RemoveStale deletes /run/netns/<prefix><pid>-* whose pid no longer runs.
// Call it from TestMain; it does nothing without root.
func RemoveStale(prefix string) {
	if os.Geteuid() != 0 {
		return
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its test binary still runs
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// RequireRoot fails (never skips) the test unless it runs as root and the
// named binaries are on PATH.
func RequireRoot(t testing.TB, bins ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this privileged test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run it as root")
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("this privileged test needs %s: %v", bin, err)
		}
	}
}

// Run runs a command, fails the test when it fails, and returns its output.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// New creates a named netns with lo up, deleted when the test ends, and
// returns its name; its path is Path(name).
func New(t testing.TB, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), count.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v\n%s", name, err, out)
		}
	})
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// Path is the bind-mount path of a named netns.
func Path(name string) string { return "/run/netns/" + name }
