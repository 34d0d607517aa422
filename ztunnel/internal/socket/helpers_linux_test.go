package socket

import (
	"ambit.dev/pkg/netnstest"

	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// Test network namespaces are named nsPrefix<pid>-<n>; TestMain deletes
// those left by a test binary that died before its t.Cleanup ran.
const nsPrefix = "ambit-sock-"

func TestMain(m *testing.M) {
	netnstest.RemoveStale(nsPrefix)
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	netnstest.RequireRoot(t, "ip", "iptables", "ip6tables")
}

func run(t *testing.T, args ...string) {
	t.Helper()
	netnstest.Run(t, args...)
}

// newNetns creates a named netns with lo up and opens it; both are undone
// when the test ends.
func newNetns(t *testing.T) (string, *Netns) {
	t.Helper()
	name := netnstest.New(t, nsPrefix)
	ns, err := OpenNetns(netnstest.Path(name))
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
