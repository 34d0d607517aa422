package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/pkg/identity"
)

const (
	testNS = "ambit-system"
	testTD = "cluster.local"
)

// fakePods is a hand-written PodLookup.
type fakePods struct {
	mu   sync.Mutex
	pods []PodRef
}

func (f *fakePods) PodsOnNode(node string) []PodRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []PodRef
	for _, p := range f.pods {
		if p.NodeName == node {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakePods) PodByName(ns, name string) (PodRef, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.pods {
		if p.Namespace == ns && p.Name == name {
			return p, true
		}
	}
	return PodRef{}, false
}

// testPods: ztunnels on node-a and node-b, workloads ns1/sa1 on node-a and
// ns2/sa2 on node-b, a plain pod ns1/app (sa "app") on node-a.
func testPods() *fakePods {
	return &fakePods{pods: []PodRef{
		{Namespace: testNS, Name: "ztunnel-a", ServiceAccount: "ztunnel", NodeName: "node-a", UID: "uid-zt-a"},
		{Namespace: testNS, Name: "ztunnel-b", ServiceAccount: "ztunnel", NodeName: "node-b", UID: "uid-zt-b"},
		{Namespace: "ns1", Name: "web-1", ServiceAccount: "sa1", NodeName: "node-a", UID: "uid-web-1"},
		{Namespace: "ns2", Name: "db-1", ServiceAccount: "sa2", NodeName: "node-b", UID: "uid-db-1"},
		{Namespace: "ns1", Name: "app-1", ServiceAccount: "app", NodeName: "node-a", UID: "uid-app-1"},
	}}
}

// podToken is the TokenReview status of a pod-bound token with audience
// ambit-ca.
func podToken(ns, sa, pod, uid string) authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{cav1alpha1.TokenAudience},
		User: authnv1.UserInfo{
			Username: "system:serviceaccount:" + ns + ":" + sa,
			Extra: map[string]authnv1.ExtraValue{
				podNameExtra: {pod},
				podUIDExtra:  {uid},
			},
		},
	}
}

// testTokens maps bearer tokens to what the fake apiserver answers.
func testTokens() map[string]authnv1.TokenReviewStatus {
	wrongAud := podToken(testNS, "ztunnel", "ztunnel-a", "uid-zt-a")
	wrongAud.Audiences = []string{"https://kubernetes.default.svc"}
	agnostic := podToken(testNS, "ztunnel", "ztunnel-a", "uid-zt-a")
	agnostic.Audiences = nil
	unbound := podToken(testNS, "ztunnel", "", "")
	unbound.User.Extra = nil
	return map[string]authnv1.TokenReviewStatus{
		"zt-a":         podToken(testNS, "ztunnel", "ztunnel-a", "uid-zt-a"),
		"zt-b":         podToken(testNS, "ztunnel", "ztunnel-b", "uid-zt-b"),
		"zt-stale":     podToken(testNS, "ztunnel", "ztunnel-a", "uid-old"),
		"zt-gone":      podToken(testNS, "ztunnel", "ztunnel-x", "uid-x"),
		"zt-unbound":   unbound,
		"app":          podToken("ns1", "app", "app-1", "uid-app-1"),
		"wrong-aud":    wrongAud,
		"agnostic-aud": agnostic,
		"user": {Authenticated: true, Audiences: []string{cav1alpha1.TokenAudience},
			User: authnv1.UserInfo{Username: "alice"}},
	}
}

// newKube returns a fake clientset whose TokenReview create answers from
// tokens; an unknown token is rejected the way the apiserver does.
func newKube(tokens map[string]authnv1.TokenReviewStatus, objs ...runtime.Object) *fake.Clientset {
	kube := fake.NewClientset(objs...)
	kube.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		st, ok := tokens[tr.Spec.Token]
		if !ok {
			st = authnv1.TokenReviewStatus{Error: "invalid bearer token, token lookup failed"}
		}
		tr.Status = st
		return true, tr, nil
	})
	return kube
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startServer builds a CA server, runs it until the test ends and waits
// until it is ready.
func startServer(t *testing.T, cfg Config, kube *fake.Clientset, pods PodLookup) *Server {
	t.Helper()
	s, err := runServer(t, cfg, kube, pods)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runServer is startServer for use outside the test goroutine: it reports
// failures instead of calling t.Fatal.
func runServer(t *testing.T, cfg Config, kube *fake.Clientset, pods PodLookup) (*Server, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = testNS
	}
	s, err := New(cfg, kube, pods, discard())
	if err != nil {
		return nil, fmt.Errorf("New: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("Run returned before ready: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return s, nil
}

// withToken returns an incoming-call context carrying a bearer token.
func withToken(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(),
		metadata.Pairs(cav1alpha1.AuthorizationMetadataKey, cav1alpha1.BearerPrefix+tok))
}

func mustID(t *testing.T, td, ns, sa string) identity.ID {
	t.Helper()
	id, err := identity.New(td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func csrFor(t *testing.T, td, ns, sa string) string {
	t.Helper()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pemCSR, err := identity.NewCSR(mustID(t, td, ns, sa), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pemCSR)
}

// rawCSR builds a CSR with arbitrary SANs (for the refusal cases).
func rawCSR(t *testing.T, uris []string, dns []string) string {
	t.Helper()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{DNSNames: dns}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// testCA is a CA certificate and key for building plug-in Secrets.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (c testCA) certPEM() []byte { return identity.EncodeCertsPEM([]*x509.Certificate{c.cert}) }

func (c testCA) keyPEM(t *testing.T) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// newTestCA creates a CA certificate valid from an hour ago until notAfter,
// self-signed when parent is nil.
func newTestCA(t *testing.T, name string, parent *testCA, notAfter time.Time) testCA {
	t.Helper()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key}
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
