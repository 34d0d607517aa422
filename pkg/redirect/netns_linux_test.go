package redirect

import (
	"ambit.dev/pkg/netnstest"

	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Test network namespaces are named nsPrefix<pid>-<n>; TestMain deletes
// those left by a test binary that died (e.g. killed by -timeout) before its
// t.Cleanup ran.
const nsPrefix = "ambit-rd-"

func TestMain(m *testing.M) {
	netnstest.RemoveStale(nsPrefix)
	os.Exit(m.Run())
}

func requireRoot(t testing.TB) {
	t.Helper()
	netnstest.RequireRoot(t, "ip", "iptables-save", "ip6tables-save")
}

// run runs a command and fails the test when it fails.
func run(t testing.TB, args ...string) string {
	t.Helper()
	return netnstest.Run(t, args...)
}

// newNetns creates a named netns with lo up, deleted when the test ends.
// It returns the name; the path is /run/netns/<name>.
func newNetns(t *testing.T) string {
	t.Helper()
	return netnstest.New(t, nsPrefix)
}

func nsPath(name string) string { return netnstest.Path(name) }

// Addresses of the two-namespace topology: the pod (A) and a peer (B) on a
// veth pair, documentation prefixes only.
var (
	podV4, peerV4, probeSrcV4 = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.20")
	podV6, peerV6, probeSrcV6 = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8::20")
)

// newPodAndPeer creates the pod netns and a peer netns joined by a veth.
func newPodAndPeer(t *testing.T) (pod, peer string) {
	t.Helper()
	pod, peer = newNetns(t), newNetns(t)
	run(t, "ip", "-n", pod, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", peer)
	run(t, "ip", "-n", pod, "addr", "add", podV4.String()+"/24", "dev", "va")
	run(t, "ip", "-n", pod, "-6", "addr", "add", podV6.String()+"/64", "dev", "va", "nodad")
	for _, a := range []netip.Addr{peerV4, probeSrcV4} {
		run(t, "ip", "-n", peer, "addr", "add", a.String()+"/24", "dev", "vb")
	}
	for _, a := range []netip.Addr{peerV6, probeSrcV6} {
		run(t, "ip", "-n", peer, "-6", "addr", "add", a.String()+"/64", "dev", "vb", "nodad")
	}
	run(t, "ip", "-n", pod, "link", "set", "va", "up")
	run(t, "ip", "-n", peer, "link", "set", "vb", "up")
	return pod, peer
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// dump returns what the netns holds: iptables-save and ip6tables-save
// output (without the timestamped comment lines and counters), the ip rules
// and the routes of table 100, for both families.
func dump(t *testing.T, ns string, b Backend) string {
	t.Helper()
	var out strings.Builder
	for _, f := range []Family{IPv4, IPv6} {
		_, save, err := b.Binaries(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "## %s\n", save)
		for _, line := range strings.Split(run(t, "ip", "netns", "exec", ns, save), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			out.WriteString(counters.ReplaceAllString(line, "[0:0]") + "\n")
		}
		fam := "-" + strconv.Itoa(int(f))
		fmt.Fprintf(&out, "## ip %s rule\n%s", fam, run(t, "ip", "-n", ns, fam, "rule", "show"))
		routes, err := exec.Command("ip", "-n", ns, fam, "route", "show", "table", "100").CombinedOutput()
		if err != nil {
			if !strings.Contains(string(routes), "FIB table does not exist") {
				t.Fatalf("ip %s route show table 100: %v\n%s", fam, err, routes)
			}
			routes = nil // an empty table does not exist
		}
		fmt.Fprintf(&out, "## ip %s route table 100\n%s", fam, routes)
	}
	return out.String()
}

// sockOpts sets the socket options ztunnel uses: SO_MARK and
// IP(V6)_TRANSPARENT.
func sockOpts(mark uint32, transparent bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if mark != 0 {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); serr != nil {
					return
				}
			}
			if transparent {
				if strings.HasSuffix(network, "6") {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
				} else {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// listenIn opens a TCP listener inside the netns, closed when the test ends.
func listenIn(t *testing.T, ns, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := inNetns(nsPath(ns), func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

type dialSpec struct {
	dst         netip.AddrPort
	src         netip.Addr // zero: kernel's choice
	mark        uint32
	transparent bool
}

func (d dialSpec) String() string {
	return fmt.Sprintf("dst=%v src=%v mark=%#x transparent=%v", d.dst, d.src, d.mark, d.transparent)
}

// dialIn connects from inside the netns.
func dialIn(t *testing.T, ns string, d dialSpec) *net.TCPConn {
	t.Helper()
	var c net.Conn
	err := inNetns(nsPath(ns), func() error {
		dialer := net.Dialer{Timeout: 10 * time.Second, Control: sockOpts(d.mark, d.transparent)}
		if d.src.IsValid() {
			dialer.LocalAddr = &net.TCPAddr{IP: d.src.AsSlice()}
		}
		var err error
		c, err = dialer.Dial("tcp", d.dst.String())
		return err
	})
	if err != nil {
		t.Fatalf("dial %v from %s: %v", d, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// acceptFrom accepts the next connection on ln and fails unless it comes
// from the client socket (its remote address is the client's local one).
// The deadline only bounds a failing test.
func acceptFrom(t *testing.T, ln *net.TCPListener, client *net.TCPConn) *net.TCPConn {
	t.Helper()
	if err := ln.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("no connection from %v arrived at %v: %v", client.LocalAddr(), ln.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	got, want := addrPort(c.RemoteAddr()), addrPort(client.LocalAddr())
	if got != want {
		t.Fatalf("listener %v accepted a connection from %v, want the one from %v", ln.Addr(), got, want)
	}
	return c
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
