package socket

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Test network namespaces are named nsPrefix<pid>-<n>; TestMain deletes
// those left by a test binary that died before its t.Cleanup ran.
const nsPrefix = "ambit-sock-"

var nsCount atomic.Int64

func TestMain(m *testing.M) {
	removeStaleNetns()
	os.Exit(m.Run())
}

func removeStaleNetns() {
	if os.Geteuid() != 0 {
		return
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
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

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this privileged test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run it as root")
	}
	for _, bin := range []string{"ip", "iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("this privileged test needs %s: %v", bin, err)
		}
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates a named netns with lo up and opens it; both are undone
// when the test ends.
func newNetns(t *testing.T) (string, *Netns) {
	t.Helper()
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsCount.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v\n%s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	ns, err := OpenNetns("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return name, ns
}

// Addresses inside the test netns (documentation prefixes): the netns owns
// localV4/localV6 on a veth (both ends inside it) and routes remoteNet*
// through it, so connections there leave unless redirected.
var (
	localV4, localV6   = netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:2::1")
	remoteV4, remoteV6 = netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8:3::7")
	clientV4, clientV6 = netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("2001:db8:9::77")
)

func addVeth(t *testing.T, name string) {
	t.Helper()
	run(t, "ip", "-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	run(t, "ip", "-n", name, "addr", "add", localV4.String()+"/24", "dev", "v0")
	run(t, "ip", "-n", name, "-6", "addr", "add", localV6.String()+"/64", "dev", "v0", "nodad")
	run(t, "ip", "-n", name, "link", "set", "v0", "up")
	run(t, "ip", "-n", name, "link", "set", "v1", "up")
	run(t, "ip", "-n", name, "route", "add", "198.51.100.0/24", "dev", "v0")
	run(t, "ip", "-n", name, "-6", "route", "add", "2001:db8:3::/64", "dev", "v0")
}

func tcpLn(t *testing.T, ln net.Listener) *net.TCPListener {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// acceptFrom accepts the next connection and fails unless it is the one
// whose local address is client (the deadline only bounds a failing test).
func acceptFrom(t *testing.T, ln *net.TCPListener, client net.Addr) *net.TCPConn {
	t.Helper()
	if err := ln.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("no connection from %v arrived at %v: %v", client, ln.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	if got, want := addrPort(c.RemoteAddr()), addrPort(client); got != want {
		t.Fatalf("listener %v accepted a connection from %v, want %v", ln.Addr(), got, want)
	}
	return c
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
