// Package podnstest makes network namespaces that look like pod sandboxes
// on a bridge CNI, for the node agent's privileged tests: an interface with
// the pod's addresses, default routes via a gateway, and a process living
// in the namespace (as the pause container does) so that a /proc scan sees
// it. Everything is removed when the test ends.
package podnstest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"ambit.dev/pkg/netnstest"
)

// Sandbox is a pod-like network namespace.
type Sandbox struct {
	// Name is the `ip netns` name; Path its bind mount (/run/netns/Name).
	Name, Path string
	// IPs are the pod's addresses; Gateways the default routes' gateways.
	IPs, Gateways []netip.Addr
	// PID is the process living in the namespace.
	PID int
}

// Addr is one pod address with its gateway, e.g. {"10.99.7.2/24",
// "10.99.7.1"}.
type Addr struct {
	CIDR, Gateway string
}

// New creates a sandbox named prefix<pid>-<n> holding addrs on its
// interface "eth0". It fails the test unless run as root.
func New(t *testing.T, prefix string, addrs ...Addr) *Sandbox {
	t.Helper()
	netnstest.RequireRoot(t, "ip", "sleep")
	name := netnstest.New(t, prefix)
	s := &Sandbox{Name: name, Path: netnstest.Path(name)}
	// A veth pair with both ends inside (the dummy driver may be missing).
	netnstest.Run(t, "ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	netnstest.Run(t, "ip", "-n", name, "link", "set", "peer0", "up")
	netnstest.Run(t, "ip", "-n", name, "link", "set", "eth0", "up")
	for _, a := range addrs {
		p := netip.MustParsePrefix(a.CIDR)
		gw := netip.MustParseAddr(a.Gateway)
		args := []string{"ip", "-n", name, "addr", "add", a.CIDR, "dev", "eth0"}
		fam := "-4"
		if p.Addr().Is6() {
			args = append(args, "nodad")
			fam = "-6"
		}
		netnstest.Run(t, args...)
		netnstest.Run(t, "ip", "-n", name, fam, "route", "add", "default", "via", a.Gateway, "dev", "eth0")
		s.IPs = append(s.IPs, p.Addr())
		s.Gateways = append(s.Gateways, gw)
	}
	cmd := exec.Command("ip", "netns", "exec", name, "sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start a process in netns %s: %v", name, err)
	}
	s.PID = cmd.Process.Pid
	// Registered after netnstest.New's cleanup, so it runs before it.
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// Wait until the process has entered the namespace (ip setns()s, then
	// execs sleep).
	want := inode(t, s.Path)
	deadline := time.Now().Add(20 * time.Second)
	for inode(t, fmt.Sprintf("/proc/%d/ns/net", s.PID)) != want {
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not enter netns %s", s.PID, name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

func inode(t *testing.T, path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}
