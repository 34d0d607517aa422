package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/identity"
	"ambit.dev/pkg/zds"
	"ambit.dev/ztunnel/internal/config"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

func TestLocalIdentities(t *testing.T) {
	wl := func(uid, node, ns, sa, ip string, p model.Protocol) model.Workload {
		return model.Workload{UID: uid, Name: uid, Namespace: ns, ServiceAccount: sa, TrustDomain: "cluster.local", Node: node,
			Addresses: []netip.Addr{netip.MustParseAddr(ip)}, Protocol: p, MTLSMode: model.MTLSPermissive, Status: model.StatusHealthy}
	}
	cases := []struct {
		name      string
		workloads []model.Workload
		want      []string
	}{
		{name: "none", want: nil},
		{name: "IPv4 mesh pod on this node", workloads: []model.Workload{wl("a", "node1", "ns1", "sa1", "10.0.0.1", model.ProtocolHBONE)},
			want: []string{"spiffe://cluster.local/ns/ns1/sa/sa1"}},
		{name: "IPv6 mesh pod on this node", workloads: []model.Workload{wl("a", "node1", "ns1", "sa1", "fd00::1", model.ProtocolHBONE)},
			want: []string{"spiffe://cluster.local/ns/ns1/sa/sa1"}},
		{name: "pods of another node and out of the mesh ignored", workloads: []model.Workload{
			wl("a", "node2", "ns1", "sa1", "10.0.0.1", model.ProtocolHBONE),
			wl("b", "node1", "ns1", "sa2", "10.0.0.2", model.ProtocolNone),
		}},
		{name: "two pods, one identity", workloads: []model.Workload{
			wl("a", "node1", "ns1", "sa1", "10.0.0.1", model.ProtocolHBONE),
			wl("b", "node1", "ns1", "sa1", "fd00::2", model.ProtocolHBONE),
		}, want: []string{"spiffe://cluster.local/ns/ns1/sa/sa1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := state.NewSnapshot(tc.workloads, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := localIdentities(snap, "node1")
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for _, w := range tc.want {
				id, err := identity.Parse(w)
				if err != nil {
					t.Fatal(err)
				}
				if !got[id] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func xdsConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	rootPEM, _, err := identity.GenerateRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"root.pem": rootPEM, "token": []byte("tok")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return config.Config{
		NodeName: "node1", XDSAddress: "127.0.0.1:1", CAAddress: "127.0.0.1:1",
		RootCertFile: filepath.Join(dir, "root.pem"), TokenFile: filepath.Join(dir, "token"),
		ControlPlaneName: config.DefaultControlPlaneName,
		TrustDomain:      "cluster.local", AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0",
		DrainPeriod: time.Second, CertTTL: time.Hour, LogFormat: "text",
	}
}

// TestXDSModeWithoutControlPlane runs ztunnel in xDS mode with nothing
// listening at the control plane's address: it is not ready, says why, and
// stops cleanly.
func TestXDSModeWithoutControlPlane(t *testing.T) {
	defer goleak.VerifyNone(t)
	a, err := New(xdsConfig(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		err := a.Ready()
		if err != nil && strings.Contains(err.Error(), "last stream error") {
			if !strings.Contains(err.Error(), "no response from the control plane") {
				t.Fatalf("Ready = %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready = %v, want a stream error", err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestXDSModeNewErrors(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	t.Run("missing root file", func(t *testing.T) {
		cfg := xdsConfig(t)
		cfg.RootCertFile = filepath.Join(t.TempDir(), "nope.pem")
		if _, err := New(cfg, log); err == nil || !strings.Contains(err.Error(), "--root-cert-file") {
			t.Fatalf("New = %v", err)
		}
	})
	t.Run("root file without certificate", func(t *testing.T) {
		cfg := xdsConfig(t)
		if err := os.WriteFile(cfg.RootCertFile, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg, log); err == nil || !strings.Contains(err.Error(), "--root-cert-file") {
			t.Fatalf("New = %v", err)
		}
	})
}

// fakeControlPlane serves delta ADS and the CA on one TLS gRPC server: the
// test pushes Address responses; the CA signs every CSR.
type fakeControlPlane struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	cav1alpha1.UnimplementedCertificateServiceServer
	ca    *identity.LocalCA
	resps chan *discovery.DeltaDiscoveryResponse
}

func (f *fakeControlPlane) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	// Authorization: nothing, so readiness only waits for Addresses.
	if err := st.Send(&discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AuthorizationTypeURL, Nonce: "a0"}); err != nil {
		return err
	}
	for {
		select {
		case r := <-f.resps:
			if err := st.Send(r); err != nil {
				return err
			}
		case <-st.Context().Done():
			return nil
		}
	}
}

func (f *fakeControlPlane) CreateCertificate(ctx context.Context, req *cav1alpha1.CreateCertificateRequest) (*cav1alpha1.CreateCertificateResponse, error) {
	chain, err := f.ca.CreateCertificate(ctx, []byte(req.GetCsr()), time.Hour)
	if err != nil {
		return nil, err
	}
	return &cav1alpha1.CreateCertificateResponse{CertChain: []string{string(identity.EncodeCertsPEM(chain)), string(f.ca.RootsPEM())}}, nil
}

func (f *fakeControlPlane) GetTrustBundle(context.Context, *cav1alpha1.GetTrustBundleRequest) (*cav1alpha1.GetTrustBundleResponse, error) {
	return &cav1alpha1.GetTrustBundleResponse{TrustDomain: "cluster.local", Roots: []string{string(f.ca.RootsPEM())}}, nil
}

// startFakeControlPlane serves the fake control plane on loopback, with a
// root written to cfg's root file, and points cfg at it; it stops when the
// test ends.
func startFakeControlPlane(t *testing.T, cfg *config.Config) *fakeControlPlane {
	t.Helper()
	rootPEM, keyPEM, err := identity.GenerateRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.RootCertFile, rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{SigningCertPEM: rootPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeControlPlane{ca: ca, resps: make(chan *discovery.DeltaDiscoveryResponse, 4)}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(servingCert(t, rootPEM, keyPEM, config.DefaultControlPlaneName))))
	discovery.RegisterAggregatedDiscoveryServiceServer(srv, fake)
	cav1alpha1.RegisterCertificateServiceServer(srv, fake)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	cfg.XDSAddress, cfg.CAAddress = lis.Addr().String(), lis.Addr().String()
	return fake
}

// TestXDSModePrefetchesLocalCertificates runs a whole ztunnel in xDS mode
// against the fake control plane: it becomes ready on the first responses,
// lists the workloads, holds the certificate of its node's mesh pod (not of
// the other node's) and forgets it when the pod is removed.
func TestXDSModePrefetchesLocalCertificates(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the fake control plane stopped
	cfg := xdsConfig(t)
	fake := startFakeControlPlane(t, &cfg)

	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	pod := func(uid, node, sa, ip string) *discovery.Resource {
		body, err := anypb.New(&workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Workload{Workload: &workloadv1alpha1.Workload{
			Uid: uid, Name: uid, Namespace: "ns1", ServiceAccount: sa, TrustDomain: "cluster.local", Node: node,
			Addresses: [][]byte{netip.MustParseAddr(ip).AsSlice()}, TunnelProtocol: workloadv1alpha1.TunnelProtocol_HBONE,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return &discovery.Resource{Name: uid, Version: "1", Resource: body}
	}
	fake.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "n1", Resources: []*discovery.Resource{
		pod("local", "node1", "local-sa", "10.0.0.1"), pod("remote", "node2", "remote-sa", "fd00::2"),
	}}
	certs := func() []string {
		var ids []string
		for _, c := range a.ConfigDump().Certificates {
			if c.State == "Valid" {
				ids = append(ids, c.Identity)
			}
		}
		return ids
	}
	waitFor(t, "ready with both workloads and the local certificate", func() bool {
		return a.Ready() == nil && len(a.ConfigDump().Workloads) == 2 && len(certs()) == 1
	})
	if got := certs(); got[0] != "spiffe://cluster.local/ns/ns1/sa/local-sa" {
		t.Fatalf("certificates %v, want only the local pod's", got)
	}
	fake.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "n2", RemovedResources: []string{"local"}}
	waitFor(t, "the removed pod's certificate forgotten", func() bool {
		return len(a.ConfigDump().Workloads) == 1 && len(a.ConfigDump().Certificates) == 0
	})
}

// waitFor polls cond for up to 10s; it asserts an outcome, not a duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for: %s", what)
		}
	}
}

// servingCert signs a TLS server certificate for dnsName with the root.
func servingCert(t *testing.T, rootPEM, rootKeyPEM []byte, dnsName string) *tls.Certificate {
	t.Helper()
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
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, roots[0], key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestXDSModeWithZDS runs a whole ztunnel in xDS mode with --zds-socket:
// with the control plane synced it is still not ready, saying it waits for
// the node agent; it connects once the agent listens, and is ready once the
// agent's snapshot was acked. (Capturing a pod needs root: see
// integration/zds_linux_test.go.)
func TestXDSModeWithZDS(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	cfg := xdsConfig(t)
	fake := startFakeControlPlane(t, &cfg)
	cfg.ZDSSocket = filepath.Join(t.TempDir(), "ztunnel.sock")
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	fake.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "n1"}
	want := "waiting for the node agent's snapshot on " + cfg.ZDSSocket
	waitFor(t, "not ready, waiting for the node agent", func() bool {
		err := a.Ready()
		return err != nil && strings.Contains(err.Error(), want)
	})

	l, err := zds.Listen(cfg.ZDSSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// ztunnel retries within its 5s backoff cap; a hung test fails instead.
	giveUp := time.AfterFunc(30*time.Second, func() { l.Close() })
	conn, err := l.Accept()
	giveUp.Stop()
	if err != nil {
		t.Fatalf("ztunnel did not connect to the ZDS socket: %v", err)
	}
	defer conn.Close()
	conn.UnixConn().SetDeadline(time.Now().Add(30 * time.Second))
	if err := conn.RecvHello(); err != nil {
		t.Fatal(err)
	}
	del := &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Del{Del: &zdsv1alpha1.DelWorkload{Uid: "gone"}}}
	snapshot := &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsv1alpha1.SnapshotSent{}}}
	for _, req := range []*zdsv1alpha1.WorkloadRequest{del, snapshot} {
		if err := conn.SendRequest(req, nil); err != nil {
			t.Fatal(err)
		}
		if nack, err := conn.RecvAck(); err != nil || nack != "" {
			t.Fatalf("answer to %v: nack %q, %v", req, nack, err)
		}
	}
	if err := a.Ready(); err != nil {
		t.Fatalf("Ready after the snapshot = %v", err)
	}
}
