package testtopo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"ambit.dev/pkg/redirect"
	"ambit.dev/ztunnel/internal/socket"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this privileged test needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run it as root")
	}
}

// testCtx bounds a failing test; passing tests finish long before.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// netnsWithPrefix lists the netns names starting with prefix.
func netnsWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

func rootLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v\n%s", err, out)
	}
	// Keep names only: counters and states of real links change.
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}

// roundTrip accepts one connection on ln, echoes one line back, and
// returns the address the server saw the client come from.
func serveOnce(t *testing.T, ln net.Listener) <-chan netip.AddrPort {
	t.Helper()
	got := make(chan netip.AddrPort, 1)
	go func() {
		defer close(got)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
		ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		got <- netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}()
	return got
}

func TestPrivilegedPodToPodAcrossNodes(t *testing.T) {
	requireRoot(t)
	linksBefore := rootLinks(t)
	ctx := testCtx(t)
	topo, err := New(ctx, Options{Nodes: 2, PodsPerNode: 1, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.Close() })
	if got := rootLinks(t); got != linksBefore {
		t.Errorf("the root netns links changed:\nbefore: %s\nafter:  %s", linksBefore, got)
	}
	client, server := topo.Nodes[0].Pods[0], topo.Nodes[1].Pods[0]
	if client.IP != netip.MustParseAddr("10.10.1.2") || server.IP != netip.MustParseAddr("10.10.2.2") {
		t.Fatalf("pod addresses %v, %v; want 10.10.1.2, 10.10.2.2", client.IP, server.IP)
	}
	for _, tc := range []struct {
		name             string
		network          string
		clientIP, server netip.Addr
	}{
		{"IPv4", "tcp4", client.IP, server.IP},
		{"IPv6", "tcp6", client.IPv6, server.IPv6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := topo.Listen(server.NetnsPath, tc.network, netip.AddrPortFrom(tc.server, 8080).String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			seen := serveOnce(t, ln)
			c, err := topo.Dial(ctx, client.NetnsPath, tc.network, netip.AddrPortFrom(tc.server, 8080).String())
			if err != nil {
				t.Fatalf("dial server pod across nodes: %v", err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
				t.Fatalf("echo = %q, %v; want hello", buf, err)
			}
			from := <-seen
			if from.Addr() != tc.clientIP {
				t.Errorf("server saw the connection from %v, want the client pod's %v (no NAT)", from, tc.clientIP)
			}
		})
	}

	// Node and pod setup as documented.
	out, err := topo.Exec(ctx, topo.Nodes[0].NetnsPath, "cat", "/proc/sys/net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("node1 ip_forward = %q, %v; want 1", out, err)
	}
	out, err = topo.Exec(ctx, client.NetnsPath, "ip", "-o", "link", "show", "lo")
	if err != nil || !strings.Contains(string(out), "UP") {
		t.Errorf("pod lo is not up: %q, %v", out, err)
	}

	prefix := topo.base
	if err := topo.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := netnsWithPrefix(t, prefix); len(left) > 0 {
		t.Errorf("after Close these namespaces remain: %v", left)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPrivilegedStartCapturesOutputAndStops(t *testing.T) {
	requireRoot(t)
	ctx := testCtx(t)
	topo := Setup(t, Options{Nodes: 1, PodsPerNode: 1})
	pod := topo.Nodes[0].Pods[0]
	p, err := topo.Start(ctx, pod.NetnsPath, "sh", "-c", "ip -o -4 addr show dev eth0; sleep 1000 & sleep 1000")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Output(), pod.IP.String()) {
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("the process did not report the pod address %v; output %q, err %v", pod.IP, p.Output(), p.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	pid := p.Pid()
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() {
		t.Errorf("process %d still runs after Close", pid)
	}
	// The background sleep was in the same process group: gone too.
	if out, _ := exec.Command("pgrep", "-g", fmt.Sprint(pid)).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("processes of group %d survive Close: %s", pid, out)
	}
}

func TestPrivilegedInstallRedirectCapturesOutbound(t *testing.T) {
	requireRoot(t)
	ctx := testCtx(t)
	topo := Setup(t, Options{Nodes: 2, PodsPerNode: 1})
	client, server := topo.Nodes[0].Pods[0], topo.Nodes[1].Pods[0]
	if err := topo.InstallRedirect(ctx, client); err != nil {
		t.Fatal(err)
	}
	st, err := redirect.NewInstaller(topo.log).Check(ctx, client.NetnsPath, topo.RedirectConfig())
	if err != nil || !st.Installed() {
		t.Fatalf("redirect check after install: %v, problems %v", err, st.Problems)
	}
	// What ztunnel would do: listen on the outbound capture port in the
	// pod; a connection the app opens to the server lands there.
	ln, err := topo.Listen(client.NetnsPath, "tcp", fmt.Sprintf(":%d", redirect.DefaultOutboundPort))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c.(*net.TCPConn)
		}
		close(accepted)
	}()
	dst := netip.AddrPortFrom(server.IP, 80)
	c, err := topo.Dial(ctx, client.NetnsPath, "tcp4", dst.String())
	if err != nil {
		t.Fatalf("dial %v from the captured pod: %v", dst, err)
	}
	defer c.Close()
	var got *net.TCPConn
	select {
	case got = <-accepted:
	case <-time.After(30 * time.Second):
	}
	if got == nil {
		t.Fatal("the outbound connection was not captured on :15001")
	}
	defer got.Close()
	orig, err := socket.OriginalDst(got)
	if err != nil || orig != dst {
		t.Errorf("original destination = %v, %v; want %v", orig, err, dst)
	}
	if err := topo.RemoveRedirect(ctx, client); err != nil {
		t.Fatal(err)
	}
}

func TestPrivilegedAddPodAndRemoveStale(t *testing.T) {
	requireRoot(t)
	ctx := testCtx(t)

	// A dead process's pid: run one and wait for it.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	stale := fmt.Sprintf("%s%d-1-fabric", NamePrefix, dead)
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", stale).Run() })

	topo := Setup(t, Options{Nodes: 1})
	if left := netnsWithPrefix(t, stale); len(left) > 0 && !processExists(dead) {
		t.Errorf("New left the stale netns %v of dead pid %d", left, dead)
	}

	node := topo.Nodes[0]
	a, err := topo.AddPod(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	b, err := topo.AddPod(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if a.IP != netip.MustParseAddr("10.10.1.2") || b.IP != netip.MustParseAddr("10.10.1.3") {
		t.Errorf("added pods got %v and %v, want 10.10.1.2 and 10.10.1.3", a.IP, b.IP)
	}
	// Two pods of the same node reach each other through the node.
	ln, err := topo.Listen(b.NetnsPath, "tcp4", netip.AddrPortFrom(b.IP, 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	seen := serveOnce(t, ln)
	c, err := topo.Dial(ctx, a.NetnsPath, "tcp4", netip.AddrPortFrom(b.IP, 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if from := <-seen; from.Addr() != a.IP {
		t.Errorf("server saw %v, want %v", from, a.IP)
	}
}
