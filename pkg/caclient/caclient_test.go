package caclient

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/pkg/identity"
)

const serverName = "ambit-controlplane.ambit-system.svc"

// fakeCA is an in-process CertificateService: it accepts only the current
// token, signs with a LocalCA and appends the root, as the control plane
// does.
type fakeCA struct {
	cav1alpha1.UnimplementedCertificateServiceServer
	ca *identity.LocalCA

	mu     sync.Mutex
	token  string
	tokens []string // tokens seen, in order
}

func (f *fakeCA) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(cav1alpha1.AuthorizationMetadataKey)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(got) != 1 || !strings.HasPrefix(got[0], cav1alpha1.BearerPrefix) {
		return status.Error(codes.Unauthenticated, "no bearer token")
	}
	tok := strings.TrimPrefix(got[0], cav1alpha1.BearerPrefix)
	f.tokens = append(f.tokens, tok)
	if tok != f.token {
		return status.Error(codes.Unauthenticated, "token rejected")
	}
	return nil
}

func (f *fakeCA) CreateCertificate(ctx context.Context, req *cav1alpha1.CreateCertificateRequest) (*cav1alpha1.CreateCertificateResponse, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	_, id, err := identity.ParseCSR([]byte(req.GetCsr()))
	if err != nil || req.GetRequestedIdentity() != id.String() {
		return nil, status.Errorf(codes.InvalidArgument, "bad CSR or requested_identity %q: %v", req.GetRequestedIdentity(), err)
	}
	chain, err := f.ca.CreateCertificate(ctx, []byte(req.GetCsr()), time.Duration(req.GetValidityDurationSeconds())*time.Second)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	var out []string
	for _, c := range append(chain, f.ca.Roots()...) {
		out = append(out, string(identity.EncodeCertsPEM([]*x509.Certificate{c})))
	}
	return &cav1alpha1.CreateCertificateResponse{CertChain: out}, nil
}

func (f *fakeCA) GetTrustBundle(ctx context.Context, _ *cav1alpha1.GetTrustBundleRequest) (*cav1alpha1.GetTrustBundleResponse, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	return &cav1alpha1.GetTrustBundleResponse{TrustDomain: "cluster.local", Roots: []string{string(f.ca.RootsPEM())}}, nil
}

// servingCert signs a TLS server certificate for dnsName with the CA's root.
func servingCert(t *testing.T, rootPEM, rootKeyPEM []byte, dnsName string) tls.Certificate {
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
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, roots[0], key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type env struct {
	fake      *fakeCA
	addr      string
	rootPEM   []byte
	tokenFile string
}

func setup(t *testing.T) env {
	t.Helper()
	rootPEM, keyPEM, err := identity.GenerateRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{SigningCertPEM: rootPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeCA{ca: ca, token: "token-1"}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(ptr(servingCert(t, rootPEM, keyPEM, serverName)))))
	cav1alpha1.RegisterCertificateServiceServer(srv, fake)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	t.Cleanup(func() { srv.Stop(); wg.Wait() })
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return env{fake: fake, addr: lis.Addr().String(), rootPEM: rootPEM, tokenFile: tokenFile}
}

func ptr[T any](v T) *T { return &v }

func (e env) client(t *testing.T, rootPEM []byte, name string) *Client {
	t.Helper()
	creds, err := TransportCredentials(rootPEM, name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := New(conn, e.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func csrFor(t *testing.T, id string) []byte {
	t.Helper()
	parsed, err := identity.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(parsed, key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestCreateCertificateAndTrustBundle(t *testing.T) {
	e := setup(t)
	c := e.client(t, e.rootPEM, serverName)
	ctx := context.Background()
	const id = "spiffe://cluster.local/ns/ns1/sa/default"
	chain, err := c.CreateCertificate(ctx, csrFor(t, id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("chain of %d certificates, want the leaf alone (root stripped)", len(chain))
	}
	if len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != id {
		t.Fatalf("leaf URIs %v, want %s", chain[0].URIs, id)
	}
	roots, err := c.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not chain to the trust bundle: %v", err)
	}

	// The token is read afresh on every call: a rotated token is used.
	e.fake.mu.Lock()
	e.fake.token = "token-2"
	e.fake.mu.Unlock()
	if _, err := c.CreateCertificate(ctx, csrFor(t, id), time.Hour); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("with the old token: %v, want Unauthenticated", err)
	}
	if err := os.WriteFile(e.tokenFile, []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateCertificate(ctx, csrFor(t, id), time.Hour); err != nil {
		t.Fatalf("after the token file was rotated: %v", err)
	}
	e.fake.mu.Lock()
	seen := append([]string(nil), e.fake.tokens...)
	e.fake.mu.Unlock()
	if want := []string{"token-1", "token-1", "token-1", "token-2"}; strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("tokens seen %v, want %v", seen, want)
	}
}

func TestRefusals(t *testing.T) {
	e := setup(t)
	otherRoot, _, err := identity.GenerateRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		roots   []byte
		server  string
		token   string // "" keeps the file
		wantErr string
	}{
		{name: "wrong server name", roots: e.rootPEM, server: "evil.example", wantErr: "certificate is valid for " + serverName},
		{name: "other root", roots: otherRoot, server: serverName, wantErr: "certificate signed by unknown authority"},
		{name: "missing token file", roots: e.rootPEM, server: serverName, token: "-", wantErr: "reading the ServiceAccount token"},
		{name: "empty token", roots: e.rootPEM, server: serverName, token: " \n", wantErr: "is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			switch tc.token {
			case "":
			case "-":
				if err := os.Remove(e.tokenFile); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = os.WriteFile(e.tokenFile, []byte("token-1"), 0o600) })
			default:
				if err := os.WriteFile(e.tokenFile, []byte(tc.token), 0o600); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = os.WriteFile(e.tokenFile, []byte("token-1"), 0o600) })
			}
			c := e.client(t, tc.roots, tc.server)
			_, err := c.CreateCertificate(context.Background(), csrFor(t, "spiffe://cluster.local/ns/a/sa/b"), time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestTransportCredentialsErrors(t *testing.T) {
	if _, err := TransportCredentials([]byte("not pem"), serverName); err == nil {
		t.Fatal("garbage roots accepted")
	}
	rootPEM, _, err := identity.GenerateRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TransportCredentials(rootPEM, ""); err == nil {
		t.Fatal("empty server name accepted")
	}
}
