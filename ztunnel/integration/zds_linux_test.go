package integration

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/identity"
	"ambit.dev/pkg/zds"
	"ambit.dev/ztunnel/internal/config"
	"ambit.dev/ztunnel/internal/testtopo"
)

// TestPrivilegedZDSAddDelReconnect runs the ztunnel binary in xDS mode with
// --zds-socket inside a node netns (a fake control plane in the node netns
// answers with an empty state) and plays the node agent with pkg/zds:
//
//   - before the agent's snapshot ztunnel is not ready and says why;
//   - AddWorkload with a real pod netns fd: once acked, 15001, 15006 and
//     15008 have listeners in the pod (IPv4 and IPv6); SnapshotSent makes
//     ztunnel ready;
//   - DelWorkload: the listeners are gone once acked;
//   - the agent closes the connection: ztunnel reconnects and keeps serving
//     the pod; a replay that does not name it drops it at SnapshotSent.
func TestPrivilegedZDSAddDelReconnect(t *testing.T) {
	requireRoot(t)
	bin := ztunnelBinary(t)
	topo := testtopo.Setup(t, testtopo.Options{Nodes: 1, PodsPerNode: 1, IPv6: true})
	node, pod := topo.Nodes[0], topo.Nodes[0].Pods[0]
	m := &mesh{t: t, topo: topo}
	dir := t.TempDir()
	xdsAddr := startEmptyControlPlane(t, topo, node, dir)
	sock := filepath.Join(dir, "ztunnel.sock")

	z := &ztunnel{node: node, admin: 15000, metrics: 15020, rdy: 15021}
	var err error
	z.proc, err = topo.Start(context.Background(), node.NetnsPath, bin,
		"--node-name="+node.Name,
		"--xds-address="+xdsAddr, "--ca-address="+xdsAddr,
		"--root-cert-file="+filepath.Join(dir, "root.pem"), "--token-file="+filepath.Join(dir, "token"),
		"--zds-socket="+sock,
		"--admin-addr=127.0.0.1:15000", "--metrics-addr=:15020", "--ready-addr=:15021",
		"--drain-period=2s", "--log-format=text", "--log-level=debug")
	if err != nil {
		t.Fatal(err)
	}
	readyURL := fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", z.rdy)
	waiting := "waiting for the node agent's snapshot on " + sock
	notReadyForAgent := func() bool {
		code, body, err := m.get(node, readyURL)
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(string(body), waiting)
	}
	// The reason shows once the control plane's state arrived (readiness
	// checks it first), while the agent does not listen yet.
	waitFor(t, 30*time.Second, notReadyForAgent, "ztunnel's readiness does not say %q:\n%s", waiting, tail(z.proc.Output(), 3000))

	l, err := zds.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	agent := acceptZtunnel(t, l, z)

	netnsFile := func() *os.File {
		f, err := os.Open(pod.NetnsPath)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	request := func(c *zds.Conn, req *zdsv1alpha1.WorkloadRequest, f *os.File) {
		t.Helper()
		if f != nil {
			defer f.Close()
		}
		if err := c.SendRequest(req, f); err != nil {
			t.Fatal(err)
		}
		if nack, err := c.RecvAck(); err != nil || nack != "" {
			t.Fatalf("answer to %v: nack %q, %v\n%s", req, nack, err, tail(z.proc.Output(), 3000))
		}
	}
	add := &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Add{Add: &zdsv1alpha1.AddWorkload{
		Uid: "uid-" + pod.Name, WorkloadInfo: &zdsv1alpha1.WorkloadInfo{Name: pod.Name, Namespace: "demo", ServiceAccount: "default"}}}}
	del := &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Del{Del: &zdsv1alpha1.DelWorkload{Uid: "uid-" + pod.Name}}}
	snapshot := &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsv1alpha1.SnapshotSent{}}}
	expectListeners := func(when string, want bool) {
		t.Helper()
		if got := podListeners(t, topo, pod); !allEqual(got, want) {
			t.Fatalf("%s: listeners in the pod %v, want all %v", when, got, want)
		}
	}

	expectListeners("before AddWorkload", false)
	request(agent, add, netnsFile())
	expectListeners("after AddWorkload was acked", true)
	if !notReadyForAgent() {
		t.Fatal("ready before the agent's snapshot")
	}
	request(agent, snapshot, nil)
	m.waitReady(z)

	request(agent, del, nil)
	expectListeners("after DelWorkload was acked", false)

	request(agent, add, netnsFile())
	expectListeners("after the second AddWorkload", true)
	agent.Close()
	// ztunnel reconnecting proves it saw the connection end.
	agent = acceptZtunnel(t, l, z)
	expectListeners("while the agent was away", true)
	if code, body, err := m.get(node, readyURL); err != nil || code != http.StatusOK {
		t.Fatalf("readiness after the agent went away: %d %s %v", code, body, err)
	}
	request(agent, snapshot, nil) // a replay that does not name the pod
	expectListeners("after a replay without the pod", false)
	agent.Close()

	if err := z.proc.Stop(30 * time.Second); err != nil {
		t.Fatalf("ztunnel exit: %v\n%s", err, tail(z.proc.Output(), 3000))
	}
}

// acceptZtunnel waits (bounded) for ztunnel to connect and reads its hello.
func acceptZtunnel(t *testing.T, l *zds.Listener, z *ztunnel) *zds.Conn {
	t.Helper()
	giveUp := time.AfterFunc(30*time.Second, func() { l.Close() })
	c, err := l.Accept()
	if !giveUp.Stop() || err != nil {
		t.Fatalf("ztunnel did not connect to the ZDS socket within 30s: %v\n%s", err, tail(z.proc.Output(), 3000))
	}
	t.Cleanup(func() { c.Close() })
	c.UnixConn().SetDeadline(time.Now().Add(60 * time.Second))
	if err := c.RecvHello(); err != nil {
		t.Fatal(err)
	}
	return c
}

// podListeners reports, for each pod address (IPv4, IPv6) and port 15001,
// 15006 and 15008, whether a listener answers inside the pod: the connect
// succeeds or is reset by ztunnel's handler (15006 refuses a client it does
// not know), rather than refused by the kernel.
func podListeners(t *testing.T, topo *testtopo.Topology, pod *testtopo.Pod) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for _, ip := range pod.Addrs() {
		for _, port := range []int{15001, 15006, 15008} {
			addr := net.JoinHostPort(ip.String(), fmt.Sprint(port))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := topo.Dial(ctx, pod.NetnsPath, "tcp", addr)
			cancel()
			switch {
			case err == nil:
				c.Close()
				got[addr] = true
			case errors.Is(err, syscall.ECONNRESET):
				got[addr] = true
			case errors.Is(err, syscall.ECONNREFUSED):
				got[addr] = false
			default:
				t.Fatalf("dial %s in pod %s: %v", addr, pod.Name, err)
			}
		}
	}
	if len(got) != 6 {
		t.Fatalf("pod %s has addresses %v; want one IPv4 and one IPv6", pod.Name, pod.Addrs())
	}
	return got
}

func allEqual(m map[string]bool, want bool) bool {
	for _, v := range m {
		if v != want {
			return false
		}
	}
	return true
}

// emptyControlPlane answers the delta ADS subscriptions with an empty
// state, so ztunnel's xDS readiness is met; ztunnel asks the CA nothing
// since no workload needs a certificate.
type emptyControlPlane struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
}

func (emptyControlPlane) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	for i, typeURL := range []string{workloadv1alpha1.AddressTypeURL, workloadv1alpha1.AuthorizationTypeURL} {
		if err := st.Send(&discovery.DeltaDiscoveryResponse{TypeUrl: typeURL, Nonce: fmt.Sprint(i)}); err != nil {
			return err
		}
	}
	for {
		if _, err := st.Recv(); err != nil {
			return nil
		}
	}
}

// startEmptyControlPlane serves emptyControlPlane over TLS inside node's
// netns (loopback), writes dir/root.pem and dir/token for ztunnel's flags,
// and returns the address; it stops when the test ends.
func startEmptyControlPlane(t *testing.T, topo *testtopo.Topology, node *testtopo.Node, dir string) string {
	t.Helper()
	rootPEM, rootKeyPEM, err := identity.GenerateRoot(trustDomain, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "root.pem"), rootPEM)
	writeFile(t, filepath.Join(dir, "token"), []byte("token"))
	roots, err := identity.ParseCertsPEM(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := identity.ParsePrivateKeyPEM(rootKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	name := config.DefaultControlPlaneName
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, roots[0], key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})))
	discovery.RegisterAggregatedDiscoveryServiceServer(srv, emptyControlPlane{})
	lis, err := topo.Listen(node.NetnsPath, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	return lis.Addr().String()
}
