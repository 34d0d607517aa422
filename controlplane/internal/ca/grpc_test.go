package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/controlplane/internal/servingcert"
	"ambit.dev/pkg/identity"
)

// TestGRPCEndToEnd serves the CA over real gRPC with TLS (the serving
// certificate from servingcert, signed by the mesh root) on an in-memory
// listener, and calls it the way ztunnel does.
func TestGRPCEndToEnd(t *testing.T) {
	// Registered first, so it runs after every other cleanup and defer.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startServer(t, Config{}, newKube(testTokens()), testPods())

	rot := servingcert.NewRotator(s, servingcert.RotatorConfig{Names: []string{"127.0.0.1", "::1"}}, discard())
	rotDone := make(chan error, 1)
	go func() { rotDone <- rot.Run(ctx) }()
	defer func() { cancel(); <-rotDone }()
	select {
	case <-rot.Ready():
	case err := <-rotDone:
		t.Fatalf("rotator stopped: %v", err)
	}

	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(rot.TLSConfig())))
	s.Register(gs)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	defer func() { gs.Stop(); <-served }()

	// The client trusts only the mesh root, as a ztunnel with the mounted
	// ambit-root-cert ConfigMap does, and checks the Service DNS name.
	pool := x509.NewCertPool()
	for _, r := range s.Roots() {
		pool.AddCert(r)
	}
	conn, err := grpc.NewClient("passthrough:///ambit-controlplane.ambit-system.svc:15017",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: pool, ServerName: "ambit-controlplane.ambit-system.svc", MinVersion: tls.VersionTLS12,
		})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := cav1alpha1.NewCertificateServiceClient(conn)
	call := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, cav1alpha1.AuthorizationMetadataKey, cav1alpha1.BearerPrefix+tok)
	}

	tb, err := client.GetTrustBundle(call("zt-a"), &cav1alpha1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatalf("GetTrustBundle: %v", err)
	}
	var bundle []*x509.Certificate
	for _, p := range tb.Roots {
		c, err := identity.ParseCertsPEM([]byte(p))
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, c...)
	}
	if tb.TrustDomain != testTD || !sameRoots(bundle, s.Roots()) {
		t.Fatalf("GetTrustBundle = %s %d roots, want %s and the CA's roots", tb.TrustDomain, len(bundle), testTD)
	}

	resp, err := client.CreateCertificate(call("zt-a"), &cav1alpha1.CreateCertificateRequest{
		Csr: csrFor(t, testTD, "ns1", "sa1"), RequestedIdentity: "spiffe://cluster.local/ns/ns1/sa/sa1"})
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	verifyLeaf(t, resp.CertChain, mustID(t, testTD, "ns1", "sa1"), bundle)

	_, err = client.CreateCertificate(call("zt-b"), &cav1alpha1.CreateCertificateRequest{Csr: csrFor(t, testTD, "ns1", "sa1")})
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "runs on node node-b") {
		t.Errorf("wrong node over gRPC = %v, want PermissionDenied naming node-b", err)
	}
	_, err = client.CreateCertificate(ctx, &cav1alpha1.CreateCertificateRequest{Csr: csrFor(t, testTD, "ns1", "sa1")})
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token over gRPC = %v, want Unauthenticated", err)
	}
}
