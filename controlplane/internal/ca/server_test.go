package ca

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/pkg/identity"
)

// chainFromPEM parses a certificate list of the CA API (cert_chain,
// roots): one PEM certificate per element.
func chainFromPEM(t *testing.T, chainPEM []string) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for i, p := range chainPEM {
		certs, err := identity.ParseCertsPEM([]byte(p))
		if err != nil || len(certs) != 1 {
			t.Fatalf("cert_chain[%d]: want one PEM certificate, got %d (%v)", i, len(certs), err)
		}
		chain = append(chain, certs[0])
	}
	return chain
}

// verifyLeaf checks that chain (PEM, leaf first, root last) is a valid
// X.509-SVID for want that chains to roots, and returns the leaf.
func verifyLeaf(t *testing.T, chainPEM []string, want identity.ID, roots []*x509.Certificate) *x509.Certificate {
	t.Helper()
	chain := chainFromPEM(t, chainPEM)
	if len(chain) < 2 {
		t.Fatalf("cert_chain has %d elements, want leaf ... root", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want.String() {
		t.Errorf("leaf URI SANs = %v, want exactly [%s]", leaf.URIs, want)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA certificate")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Errorf("leaf key usage %v lacks digitalSignature", leaf.KeyUsage)
	}
	root := chain[len(chain)-1]
	isRoot := false
	rootPool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
		isRoot = isRoot || r.Equal(root)
	}
	if !isRoot {
		t.Errorf("last element of cert_chain (%s) is not one of the roots", root.Subject)
	}
	for _, c := range chain[1 : len(chain)-1] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("leaf does not verify against the roots: %v", err)
	}
	return leaf
}

func TestCreateCertificate(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := startServer(t, Config{TrustDomain: testTD, Registerer: reg}, newKube(testTokens()), testPods())

	tests := []struct {
		name     string
		token    string // "" = no metadata
		csr      string
		req      *cav1alpha1.CreateCertificateRequest // overrides csr when set
		wantID   identity.ID
		wantCode codes.Code
		wantMsg  string
		result   string
	}{
		{name: "ztunnel, pod on its node", token: "zt-a", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantID: mustID(t, testTD, "ns1", "sa1"), result: ResultSigned},
		{name: "ztunnel, own identity", token: "zt-a", csr: csrFor(t, testTD, testNS, "ztunnel"),
			wantID: mustID(t, testTD, testNS, "ztunnel"), result: ResultSigned},
		{name: "ordinary pod, own identity", token: "app", csr: csrFor(t, testTD, "ns1", "app"),
			wantID: mustID(t, testTD, "ns1", "app"), result: ResultSigned},
		{name: "ztunnel, pod on another node", token: "zt-b", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.PermissionDenied, wantMsg: "no pod with service account sa1 in namespace ns1 runs on node node-b", result: ResultDenied},
		{name: "ztunnel, unknown service account", token: "zt-a", csr: csrFor(t, testTD, "ns1", "ghost"),
			wantCode: codes.PermissionDenied, wantMsg: "no pod with service account ghost in namespace ns1 runs on node node-a", result: ResultDenied},
		{name: "ordinary pod asks for another identity", token: "app", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.PermissionDenied, wantMsg: "may only obtain its own identity", result: ResultDenied},
		{name: "ztunnel token of a deleted pod (UID differs)", token: "zt-stale", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.PermissionDenied, wantMsg: "bound to pod UID uid-old", result: ResultDenied},
		{name: "ztunnel pod unknown to the control plane", token: "zt-gone", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.PermissionDenied, wantMsg: "unknown to the control plane", result: ResultDenied},
		{name: "ztunnel token not bound to a pod", token: "zt-unbound", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.PermissionDenied, wantMsg: "pod-bound", result: ResultDenied},
		{name: "no token", token: "", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.Unauthenticated, wantMsg: `no "authorization" metadata`, result: ResultUnauthenticated},
		{name: "bad token", token: "forged", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.Unauthenticated, wantMsg: "the apiserver rejected the token", result: ResultUnauthenticated},
		{name: "wrong audience", token: "wrong-aud", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.Unauthenticated, wantMsg: `not valid for audience "ambit-ca"`, result: ResultUnauthenticated},
		{name: "not a service account", token: "user", csr: csrFor(t, testTD, "ns1", "sa1"),
			wantCode: codes.Unauthenticated, wantMsg: "not to a ServiceAccount", result: ResultUnauthenticated},
		{name: "malformed CSR", token: "zt-a", csr: "-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
			wantCode: codes.InvalidArgument, wantMsg: "CSR rejected", result: ResultInvalid},
		{name: "not PEM", token: "zt-a", csr: "hello",
			wantCode: codes.InvalidArgument, wantMsg: "no PEM block of type CERTIFICATE REQUEST", result: ResultInvalid},
		{name: "CSR with two URI SANs", token: "zt-a",
			csr:      rawCSR(t, []string{"spiffe://cluster.local/ns/ns1/sa/sa1", "spiffe://cluster.local/ns/ambit-system/sa/ztunnel"}, nil),
			wantCode: codes.InvalidArgument, wantMsg: "2 URI SANs", result: ResultInvalid},
		{name: "CSR with a DNS SAN", token: "zt-a",
			csr:      rawCSR(t, []string{"spiffe://cluster.local/ns/ns1/sa/sa1"}, []string{"evil.example"}),
			wantCode: codes.InvalidArgument, wantMsg: "DNS SANs", result: ResultInvalid},
		{name: "CSR without SPIFFE path", token: "zt-a", csr: rawCSR(t, []string{"spiffe://cluster.local/admin"}, nil),
			wantCode: codes.InvalidArgument, wantMsg: "/ns/<namespace>/sa/<serviceaccount>", result: ResultInvalid},
		{name: "wrong trust domain", token: "zt-a", csr: csrFor(t, "other.example", "ns1", "sa1"),
			wantCode: codes.InvalidArgument, wantMsg: `this CA signs only for "cluster.local"`, result: ResultInvalid},
		{name: "requested_identity differs", token: "zt-a", req: &cav1alpha1.CreateCertificateRequest{
			Csr: csrFor(t, testTD, "ns1", "sa1"), RequestedIdentity: "spiffe://cluster.local/ns/ns2/sa/sa2"},
			wantCode: codes.InvalidArgument, wantMsg: "differs from the CSR's URI SAN", result: ResultInvalid},
		{name: "requested_identity matches", token: "zt-a", req: &cav1alpha1.CreateCertificateRequest{
			Csr: csrFor(t, testTD, "ns1", "sa1"), RequestedIdentity: "spiffe://cluster.local/ns/ns1/sa/sa1"},
			wantID: mustID(t, testTD, "ns1", "sa1"), result: ResultSigned},
		{name: "negative validity", token: "zt-a", req: &cav1alpha1.CreateCertificateRequest{
			Csr: csrFor(t, testTD, "ns1", "sa1"), ValidityDurationSeconds: -1},
			wantCode: codes.InvalidArgument, wantMsg: "validity_duration_seconds is -1", result: ResultInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(s.metrics.csr.WithLabelValues(tc.result))
			ctx := context.Background()
			if tc.token != "" {
				ctx = withToken(tc.token)
			}
			req := tc.req
			if req == nil {
				req = &cav1alpha1.CreateCertificateRequest{Csr: tc.csr}
			}
			resp, err := s.CreateCertificate(ctx, req)
			if got := testutil.ToFloat64(s.metrics.csr.WithLabelValues(tc.result)); got != before+1 {
				t.Errorf("%s{result=%q} went from %v to %v, want +1", MetricCSRTotal, tc.result, before, got)
			}
			if tc.wantCode != codes.OK {
				st, _ := status.FromError(err)
				if st.Code() != tc.wantCode || !strings.Contains(st.Message(), tc.wantMsg) {
					t.Fatalf("CreateCertificate = %v; want %v containing %q", err, tc.wantCode, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateCertificate: %v", err)
			}
			leaf := verifyLeaf(t, resp.CertChain, tc.wantID, s.Roots())
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != DefaultDefaultTTL+time.Minute {
				t.Errorf("leaf lifetime %s, want the default 24h (+1m backdate)", got)
			}
		})
	}

	if n, err := testutil.GatherAndCount(reg, MetricCSRTotal); err != nil || n != 5 {
		t.Errorf("registry has %d series of %s (%v), want 5 (one per result)", n, MetricCSRTotal, err)
	}
}

func TestCreateCertificateTTL(t *testing.T) {
	shortCA := newTestCA(t, "short-lived root", nil, time.Now().Add(10*time.Hour))
	tests := []struct {
		name      string
		cfg       Config
		plugin    *testCA
		requested time.Duration
		want      time.Duration // NotAfter - NotBefore, without the 1m backdate
	}{
		{name: "default", requested: 0, want: 24 * time.Hour},
		{name: "asked for 1h", requested: time.Hour, want: time.Hour},
		{name: "configured default", cfg: Config{DefaultTTL: 12 * time.Hour}, want: 12 * time.Hour},
		{name: "capped at the maximum", cfg: Config{MaxTTL: 48 * time.Hour}, requested: 30 * 24 * time.Hour, want: 48 * time.Hour},
		{name: "capped at the default maximum", requested: 365 * 24 * time.Hour, want: DefaultMaxTTL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.cfg, newKube(testTokens()), testPods())
			resp, err := s.CreateCertificate(withToken("zt-a"), &cav1alpha1.CreateCertificateRequest{
				Csr: csrFor(t, testTD, "ns1", "sa1"), ValidityDurationSeconds: int64(tc.requested / time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			leaf := verifyLeaf(t, resp.CertChain, mustID(t, testTD, "ns1", "sa1"), s.Roots())
			if got := leaf.NotAfter.Sub(leaf.NotBefore) - time.Minute; got != tc.want {
				t.Errorf("leaf lifetime %s, want %s", got, tc.want)
			}
		})
	}

	t.Run("never beyond the CA certificate", func(t *testing.T) {
		kube := newKube(testTokens(), pluginSecret(t, shortCA, nil))
		s := startServer(t, Config{}, kube, testPods())
		resp, err := s.CreateCertificate(withToken("zt-a"), &cav1alpha1.CreateCertificateRequest{Csr: csrFor(t, testTD, "ns1", "sa1")})
		if err != nil {
			t.Fatal(err)
		}
		leaf := verifyLeaf(t, resp.CertChain, mustID(t, testTD, "ns1", "sa1"), s.Roots())
		if !leaf.NotAfter.Equal(shortCA.cert.NotAfter) {
			t.Errorf("leaf NotAfter %s, want the CA's %s", leaf.NotAfter, shortCA.cert.NotAfter)
		}
	})
}

func TestNotReady(t *testing.T) {
	s, err := New(Config{Namespace: testNS}, newKube(testTokens()), testPods(), discard())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateCertificate(withToken("zt-a"), &cav1alpha1.CreateCertificateRequest{Csr: csrFor(t, testTD, "ns1", "sa1")})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("CreateCertificate before Run = %v, want Unavailable", err)
	}
	if _, err := s.GetTrustBundle(withToken("zt-a"), &cav1alpha1.GetTrustBundleRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetTrustBundle before Run = %v, want Unavailable", err)
	}
	if _, err := s.ServingCertificate(); err != ErrNotReady {
		t.Errorf("ServingCertificate before Run = %v, want ErrNotReady", err)
	}
	if s.Roots() != nil {
		t.Error("Roots before Run is not nil")
	}
	if got := testutil.ToFloat64(s.metrics.csr.WithLabelValues(ResultError)); got != 1 {
		t.Errorf("%s{result=error} = %v, want 1", MetricCSRTotal, got)
	}
}

func TestGetTrustBundle(t *testing.T) {
	s := startServer(t, Config{}, newKube(testTokens()), testPods())
	resp, err := s.GetTrustBundle(withToken("app"), &cav1alpha1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.TrustDomain != testTD || len(resp.Roots) != 1 {
		t.Fatalf("GetTrustBundle = %v, want trust domain %s and one root", resp, testTD)
	}
	roots, err := identity.ParseCertsPEM([]byte(resp.Roots[0]))
	if err != nil || !roots[0].Equal(s.Roots()[0]) {
		t.Errorf("GetTrustBundle root differs from Roots(): %v", err)
	}
	for _, tok := range []string{"forged", "wrong-aud"} {
		if _, err := s.GetTrustBundle(withToken(tok), &cav1alpha1.GetTrustBundleRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("GetTrustBundle with token %q = %v, want Unauthenticated", tok, err)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		msg  string
	}{
		{name: "no namespace", cfg: Config{}, msg: "Namespace"},
		{name: "bad trust domain", cfg: Config{Namespace: testNS, TrustDomain: "Bad Domain"}, msg: "trust domain"},
		{name: "bad node proxy", cfg: Config{Namespace: testNS, NodeProxies: []string{"ztunnel"}}, msg: "namespace/name"},
		{name: "default TTL above max", cfg: Config{Namespace: testNS, DefaultTTL: 48 * time.Hour, MaxTTL: time.Hour}, msg: "above the maximum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, newKube(nil), testPods(), discard())
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.msg)
			}
		})
	}
}
