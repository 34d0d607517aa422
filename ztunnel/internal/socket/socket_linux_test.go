package socket

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestValidation(t *testing.T) {
	// Validation happens before the namespace is touched: no root needed.
	ns, err := OpenNetns("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ctx := context.Background()
	cases := []struct {
		name    string
		do      func() error
		wantErr string
	}{
		{"listen udp", func() error { _, err := ListenInNetns(ctx, ns, "udp", ":53", Options{}); return err }, "not supported"},
		{"listen hostname", func() error { _, err := ListenInNetns(ctx, ns, "tcp", "localhost:15001", Options{}); return err }, "literal IP"},
		{"listen no port", func() error { _, err := ListenInNetns(ctx, ns, "tcp", "10.0.0.1", Options{}); return err }, "missing port"},
		{"dial hostname", func() error { _, err := DialInNetns(ctx, ns, "tcp", "example.com:80", DialOptions{}); return err }, "literal ip:port"},
		{"dial v4 dst from v6 source", func() error {
			_, err := DialInNetns(ctx, ns, "tcp", "10.0.0.1:80", DialOptions{TransparentSource: netip.MustParseAddr("2001:db8::1")})
			return err
		}, "different IP families"},
		{"dial v6 dst from v4 source", func() error {
			_, err := DialInNetns(ctx, ns, "tcp", "[2001:db8::1]:80", DialOptions{TransparentSource: netip.MustParseAddr("10.0.0.1")})
			return err
		}, "different IP families"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNetnsFromFDRejectsOtherFiles(t *testing.T) {
	fd, err := unix.Open("/proc/self/ns/uts", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := NetnsFromFD(fd); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("NetnsFromFD(uts ns) error = %v, want 'not a network namespace'", err)
	}
	f, err := unix.Open("/proc/self/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(f)
	if _, err := NetnsFromFD(f); err == nil {
		t.Fatal("NetnsFromFD(regular file) succeeded")
	}
}

func TestParseSockaddr(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) {
		var b [16]byte
		binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:4], 8080)
		copy(b[4:8], []byte{10, 244, 2, 7})
		got, err := parseSockaddrInet4(b)
		if want := netip.MustParseAddrPort("10.244.2.7:8080"); err != nil || got != want {
			t.Fatalf("got %v, %v; want %v", got, err, want)
		}
		binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET6)
		if _, err := parseSockaddrInet4(b); err == nil {
			t.Fatal("accepted a non-AF_INET family")
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: netip.MustParseAddr("fd00::2:7").As16()}
		var p [2]byte
		binary.BigEndian.PutUint16(p[:], 8080)
		sa.Port = binary.NativeEndian.Uint16(p[:])
		got, err := parseSockaddrInet6(sa)
		if want := netip.MustParseAddrPort("[fd00::2:7]:8080"); err != nil || got != want {
			t.Fatalf("got %v, %v; want %v", got, err, want)
		}
		sa.Family = unix.AF_INET
		if _, err := parseSockaddrInet6(sa); err == nil {
			t.Fatal("accepted a non-AF_INET6 family")
		}
	})
}

func TestPrivilegedListenerLivesInNetns(t *testing.T) {
	requireRoot(t)
	for _, loop := range []string{"127.0.0.1", "::1"} {
		t.Run(loop, func(t *testing.T) {
			_, ns := newNetns(t)
			ln := listen(t, ns, "tcp", net.JoinHostPort(loop, "0"), Options{})
			port := addrPort(ln.Addr()).Port()

			// The same address is free in the root netns: the listener is
			// not there. (Binding without SO_REUSEPORT would fail if it were.)
			rootLn, err := net.Listen("tcp", net.JoinHostPort(loop, strconv.Itoa(int(port))))
			if err != nil {
				t.Fatalf("binding %s:%d in the root netns failed, so the netns listener leaked into it: %v", loop, port, err)
			}
			root := tcpLn(t, rootLn)

			// From the root netns, the connection reaches the root listener.
			rc, err := net.Dial("tcp", root.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			acceptFrom(t, root, rc.LocalAddr())

			// From inside the netns, it reaches the netns listener.
			c := dial(t, ns, net.JoinHostPort(loop, strconv.Itoa(int(port))), DialOptions{})
			acceptFrom(t, ln, c.LocalAddr())
		})
	}
}

func TestPrivilegedReusePortAllowsTwoListeners(t *testing.T) {
	requireRoot(t)
	_, ns := newNetns(t)
	first := listen(t, ns, "tcp", ":15008", Options{Mark: 0x539})
	second := listen(t, ns, "tcp", ":15008", Options{Mark: 0x539})
	if first.Addr().String() != second.Addr().String() {
		t.Fatalf("listeners on %v and %v, want the same address", first.Addr(), second.Addr())
	}
	for _, ln := range []*net.TCPListener{first, second} {
		if v := getsockopt(t, ln, unix.SOL_SOCKET, unix.SO_REUSEPORT); v != 1 {
			t.Errorf("SO_REUSEPORT = %d, want 1", v)
		}
	}
	// Control: a socket without SO_REUSEPORT cannot join them.
	err := ns.Do(func() error {
		ln, err := net.Listen("tcp", ":15008")
		if err == nil {
			ln.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("plain listen on the shared port: %v, want EADDRINUSE", err)
	}
}

func TestPrivilegedOriginalDst(t *testing.T) {
	requireRoot(t)
	name, ns := newNetns(t)
	addVeth(t, name)
	// REDIRECT rules inside the test netns only.
	run(t, "ip", "netns", "exec", name, "iptables", "-t", "nat", "-A", "OUTPUT",
		"-p", "tcp", "-d", remoteV4.String(), "--dport", "80", "-j", "REDIRECT", "--to-ports", "15001")
	run(t, "ip", "netns", "exec", name, "ip6tables", "-t", "nat", "-A", "OUTPUT",
		"-p", "tcp", "-d", remoteV6.String(), "--dport", "80", "-j", "REDIRECT", "--to-ports", "15001")
	// Dual-stack listener: IPv4 connections arrive v4-mapped.
	ln := listen(t, ns, "tcp", ":15001", Options{Mark: 0x539})

	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(remoteV4, 80), netip.AddrPortFrom(remoteV6, 80)} {
		t.Run(dst.String(), func(t *testing.T) {
			c := dial(t, ns, dst.String(), DialOptions{})
			accepted := acceptFrom(t, ln, c.LocalAddr())
			if local := addrPort(accepted.LocalAddr()); local.Port() != 15001 {
				t.Fatalf("accepted on %v, want port 15001", local)
			}
			got, err := OriginalDst(accepted)
			if err != nil {
				t.Fatalf("OriginalDst: %v", err)
			}
			if got != dst {
				t.Fatalf("OriginalDst = %v, want %v", got, dst)
			}
		})
	}
	t.Run("not redirected", func(t *testing.T) {
		c := dial(t, ns, "127.0.0.1:15001", DialOptions{})
		got, err := OriginalDst(acceptFrom(t, ln, c.LocalAddr()))
		if want := netip.MustParseAddrPort("127.0.0.1:15001"); err != nil || got != want {
			t.Fatalf("OriginalDst = %v, %v; want %v", got, err, want)
		}
	})
}

func TestPrivilegedDialSetsMark(t *testing.T) {
	requireRoot(t)
	_, ns := newNetns(t)
	ln := listen(t, ns, "tcp", "127.0.0.1:0", Options{Mark: 0x539})
	if v := getsockopt(t, ln, unix.SOL_SOCKET, unix.SO_MARK); v != 0x539 {
		t.Errorf("listener SO_MARK = %#x, want 0x539", v)
	}
	for _, mark := range []uint32{0x539, 0} {
		c := dial(t, ns, ln.Addr().String(), DialOptions{Mark: mark})
		if v := getsockopt(t, c, unix.SOL_SOCKET, unix.SO_MARK); v != int(mark) {
			t.Errorf("dial with Mark %#x: SO_MARK = %#x", mark, v)
		}
		acceptFrom(t, ln, c.LocalAddr())
	}
}

func TestPrivilegedDialTransparentSource(t *testing.T) {
	requireRoot(t)
	name, ns := newNetns(t)
	addVeth(t, name)
	// Route replies to the (non-local) client addresses back locally, as the
	// pod's connmark + policy route does for ztunnel.
	run(t, "ip", "-n", name, "rule", "add", "to", clientV4.String()+"/32", "lookup", "100")
	run(t, "ip", "-n", name, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
	run(t, "ip", "-n", name, "-6", "rule", "add", "to", clientV6.String()+"/128", "lookup", "100")
	run(t, "ip", "-n", name, "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100")
	app := listen(t, ns, "tcp", ":8080", Options{})

	for _, tc := range []struct{ client, dst netip.Addr }{{clientV4, localV4}, {clientV6, localV6}} {
		t.Run(tc.client.String(), func(t *testing.T) {
			dst := netip.AddrPortFrom(tc.dst, 8080).String()
			// Without IP_TRANSPARENT the kernel refuses the foreign source.
			err := ns.Do(func() error {
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(tc.client, 0))}
				c, err := d.Dial("tcp", dst)
				if err == nil {
					c.Close()
				}
				return err
			})
			if !errors.Is(err, syscall.EADDRNOTAVAIL) {
				t.Fatalf("plain bind to %v: %v, want EADDRNOTAVAIL", tc.client, err)
			}

			c := dial(t, ns, dst, DialOptions{Mark: 0x539, TransparentSource: tc.client})
			if got := addrPort(c.LocalAddr()).Addr(); got != tc.client {
				t.Fatalf("client socket bound to %v, want %v", got, tc.client)
			}
			a := acceptFrom(t, app, c.LocalAddr())
			if got := addrPort(a.RemoteAddr()).Addr(); got != tc.client {
				t.Fatalf("app sees client %v, want %v", got, tc.client)
			}
		})
	}
}

type syscallConner interface {
	SyscallConn() (syscall.RawConn, error)
}

func getsockopt(t *testing.T, s syscallConner, level, opt int) int {
	t.Helper()
	raw, err := s.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func listen(t *testing.T, ns *Netns, network, addr string, opts Options) *net.TCPListener {
	t.Helper()
	ln, err := ListenInNetns(context.Background(), ns, network, addr, opts)
	if err != nil {
		t.Fatalf("ListenInNetns(%s, %s, %+v): %v", network, addr, opts, err)
	}
	return tcpLn(t, ln)
}

func dial(t *testing.T, ns *Netns, dst string, opts DialOptions) *net.TCPConn {
	t.Helper()
	c, err := DialInNetns(context.Background(), ns, "tcp", dst, opts)
	if err != nil {
		t.Fatalf("DialInNetns(%s, %+v): %v", dst, opts, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
