package inpod

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/inbound"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/outbound"
	"ambit.dev/ztunnel/internal/socket"
	"ambit.dev/ztunnel/internal/state"
	"ambit.dev/ztunnel/internal/testtopo"
)

// TestPrivilegedAddRemovePod drives the ZDS-style entry point directly:
// AddPod opens the pod's listeners in its netns, an HBONE stream through
// them reaches the app from the client's IP, RemovePod closes them while
// the open stream finishes, and Run returns with nothing left running.
func TestPrivilegedAddRemovePod(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this privileged test needs root to create network namespaces; run it as root")
	}
	topo := testtopo.Setup(t, testtopo.Options{Nodes: 1, PodsPerNode: 2})
	server, client := topo.Nodes[0].Pods[0], topo.Nodes[0].Pods[1]
	// The server pod's rules route the app's replies to the transparent
	// (client-addressed) socket back to ztunnel.
	if err := topo.InstallRedirect(context.Background(), server); err != nil {
		t.Fatal(err)
	}
	// The app in the server pod echoes after a greeting naming the client.
	ln, err := topo.Listen(server.NetnsPath, "tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()+"\n")
				io.Copy(c, c)
			}()
		}
	}()
	leakOpts := goleak.IgnoreCurrent()

	ca, err := identity.NewLocalCA(identity.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := identity.NewManager(identity.ManagerConfig{Signer: ca})
	if err != nil {
		t.Fatal(err)
	}
	serverID := identity.ID{TrustDomain: "cluster.local", Namespace: "ns", ServiceAccount: "server"}
	snap, err := state.NewSnapshot([]model.Workload{{
		UID: "server", Name: "server", Namespace: "ns", ServiceAccount: "server", TrustDomain: "cluster.local",
		Node: "node1", Addresses: []netip.Addr{server.IP}, Protocol: model.ProtocolHBONE,
		MTLSMode: model.MTLSStrict, Status: model.StatusHealthy,
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	store := state.NewStore()
	store.Replace(snap)
	log := slog.New(slog.DiscardHandler)
	in, err := inbound.New(inbound.Config{Store: store, Certs: certs, Roots: ca.Roots, Mark: DefaultMark, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	out, err := outbound.NewHandler(outbound.HandlerConfig{Store: store, Mark: DefaultMark, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{
		Store: store, Inbound: in, Outbound: out, Logger: log, DrainPeriod: 20 * time.Second,
		NewDialer: func(ns *socket.Netns) (*hbone.Dialer, error) {
			return hbone.NewDialer(hbone.DialerConfig{Certificate: certs.TLSCertificate, Roots: ca.Roots, DialTCP: outbound.NetnsDialTCP(ns, DefaultMark)})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := socket.OpenNetns(server.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AddPod("server", ns); err == nil || !strings.Contains(err.Error(), "before Run") {
		t.Fatalf("AddPod before Run = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- m.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-runErr
		}
	}()
	waitUntil(t, func() bool { return m.Ready() == nil })
	if err := m.AddPod("server", ns); err != nil {
		t.Fatal(err)
	}
	dup, err := socket.OpenNetns(server.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AddPod("server", dup); err != nil || !m.Captured("server") || len(m.Pods()) != 1 {
		t.Fatalf("second AddPod = %v; pods %v", err, m.Pods())
	}

	// A client in the other pod (no redirection rules) speaks HBONE to the
	// server pod's 15008 directly.
	clientID := identity.ID{TrustDomain: "cluster.local", Namespace: "ns", ServiceAccount: "client"}
	clientNs, err := topo.Netns(client.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := hbone.NewDialer(hbone.DialerConfig{
		Certificate: certs.TLSCertificate,
		Roots:       ca.Roots,
		DialTCP: func(ctx context.Context, tg hbone.Target) (net.Conn, error) {
			return socket.DialInNetns(ctx, clientNs, "tcp", tg.HBONEAddr.String(), socket.DialOptions{})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	target := hbone.Target{SourceID: clientID, DestID: serverID, HBONEAddr: netip.AddrPortFrom(server.IP, hbone.Port), Authority: netip.AddrPortFrom(server.IP, 8080)}
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	stream, err := d.Dial(dctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	stream.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(stream)
	greeting, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(greeting) != client.IP.String() {
		t.Fatalf("app greeting %q, %v; want the client pod IP %s (source preserved)", greeting, err, client.IP)
	}

	// Release the pod: no new tunnels, but the open stream keeps working.
	if err := m.RemovePod("server"); err != nil || m.Captured("server") {
		t.Fatalf("RemovePod = %v, captured %v", err, m.Captured("server"))
	}
	if _, err := socket.DialInNetns(dctx, clientNs, "tcp", target.HBONEAddr.String(), socket.DialOptions{}); err == nil {
		t.Fatal("the pod's HBONE port still accepts connections after RemovePod")
	}
	for _, msg := range []string{"still there?\n", "yes\n"} {
		if _, err := io.WriteString(stream, msg); err != nil {
			t.Fatal(err)
		}
		if got, err := br.ReadString('\n'); err != nil || got != msg {
			t.Fatalf("echo after RemovePod = %q, %v", got, err)
		}
	}
	stream.CloseWrite()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("stream end: %q, %v", rest, err)
	}
	stream.Close()
	d.Close()

	cancel()
	stopped = true
	if err := <-runErr; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if err := m.AddPod("late", dup); err == nil {
		t.Fatal("AddPod after shutdown succeeded")
	}
	goleak.VerifyNone(t, leakOpts)
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}

// TestPrivilegedAddPodNewNetns: an AddPod for a captured uid in another
// netns (the pod's sandbox was recreated) moves the pod's listeners there;
// in the same netns, whatever handle it comes through, it keeps them.
func TestPrivilegedAddPodNewNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this privileged test needs root to create network namespaces; run it as root")
	}
	topo := testtopo.Setup(t, testtopo.Options{Nodes: 1, PodsPerNode: 2, IPv6: true})
	oldPod, newPod := topo.Nodes[0].Pods[0], topo.Nodes[0].Pods[1]
	leakOpts := goleak.IgnoreCurrent()
	log := slog.New(slog.DiscardHandler)
	store := state.NewStore()
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := identity.NewManager(identity.ManagerConfig{Signer: ca})
	if err != nil {
		t.Fatal(err)
	}
	in, err := inbound.New(inbound.Config{Store: store, Certs: certs, Roots: ca.Roots, Mark: DefaultMark, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	out, err := outbound.NewHandler(outbound.HandlerConfig{Store: store, Mark: DefaultMark, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{
		Store: store, Inbound: in, Outbound: out, Logger: log, DrainPeriod: 5 * time.Second,
		NewDialer: func(ns *socket.Netns) (*hbone.Dialer, error) {
			return hbone.NewDialer(hbone.DialerConfig{Certificate: certs.TLSCertificate, Roots: ca.Roots, DialTCP: outbound.NetnsDialTCP(ns, DefaultMark)})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run = %v", err)
		}
		goleak.VerifyNone(t, leakOpts)
	}()
	<-m.Started()

	// listening reports whether the pod's three ports have a listener
	// inside the netns at path, over IPv4 and IPv6 loopback: the connect
	// succeeds, or is reset by ztunnel's handler (15006 refuses a client
	// it does not know), rather than refused by the kernel.
	listening := func(path string) map[string]bool {
		got := map[string]bool{}
		for _, host := range []string{"127.0.0.1", "::1"} {
			for _, port := range []uint16{DefaultOutboundPort, DefaultInboundPlaintextPort, DefaultHBONEPort} {
				addr := net.JoinHostPort(host, fmt.Sprint(port))
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				c, err := topo.Dial(dctx, path, "tcp", addr)
				dcancel()
				switch {
				case err == nil:
					c.Close()
					got[addr] = true
				case errors.Is(err, syscall.ECONNRESET):
					got[addr] = true
				case errors.Is(err, syscall.ECONNREFUSED):
					got[addr] = false
				default:
					t.Fatalf("dial %s in %s: %v", addr, path, err)
				}
			}
		}
		return got
	}
	all := func(m map[string]bool, want bool) bool {
		for _, v := range m {
			if v != want {
				return false
			}
		}
		return len(m) == 6
	}
	open := func(path string) *socket.Netns {
		ns, err := socket.OpenNetns(path)
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}

	if err := m.AddPod("p", open(oldPod.NetnsPath)); err != nil {
		t.Fatal(err)
	}
	if got := listening(oldPod.NetnsPath); !all(got, true) {
		t.Fatalf("first netns after AddPod: %v", got)
	}
	if err := m.AddPod("p", open(newPod.NetnsPath)); err != nil {
		t.Fatal(err)
	}
	if got := listening(newPod.NetnsPath); !all(got, true) {
		t.Fatalf("new netns after the second AddPod: %v", got)
	}
	if got := listening(oldPod.NetnsPath); !all(got, false) {
		t.Fatalf("old netns still listening after the pod moved: %v", got)
	}
	// The same netns through another handle (/proc/<pid>/ns/net of a
	// thread inside it would do as well): kept, and the handle closed.
	same := open(newPod.NetnsPath)
	if err := m.AddPod("p", same); err != nil || same.Fd() != -1 {
		t.Fatalf("AddPod in the same netns = %v, handle fd %d (want closed)", err, same.Fd())
	}
	if got := listening(newPod.NetnsPath); !all(got, true) || len(m.Pods()) != 1 {
		t.Fatalf("after AddPod in the same netns: %v, pods %v", got, m.Pods())
	}
}
