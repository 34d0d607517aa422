package ca

import (
	"context"
	"crypto/x509"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/pkg/identity"
)

// pluginSecret builds a cacerts Secret signing with ca; with root set, ca
// is an intermediate under root (Istio's layout: cert-chain.pem is the
// intermediate then the root).
func pluginSecret(t *testing.T, ca testCA, root *testCA) *corev1.Secret {
	t.Helper()
	data := map[string][]byte{KeyCACert: ca.certPEM(), KeyCAKey: ca.keyPEM(t), KeyRootCert: ca.certPEM()}
	if root != nil {
		data[KeyRootCert] = root.certPEM()
		data[KeyCertChain] = concat(ca.certPEM(), root.certPEM())
	}
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: PluginSecretName, Namespace: testNS}, Data: data}
}

// waitTimeout only guards against a hung test; no test asserts on time.
const waitTimeout = 30 * time.Second

// waitRootConfigMap waits (bounded) until the ConfigMap ambit-root-cert
// holds want.
func waitRootConfigMap(t *testing.T, kube *fake.Clientset, want []*x509.Certificate) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		cm, err := kube.CoreV1().ConfigMaps(testNS).Get(context.Background(), RootConfigMapName, metav1.GetOptions{})
		if err == nil {
			if roots, err := identity.ParseCertsPEM([]byte(cm.Data[KeyRootCert])); err == nil && sameRoots(roots, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ConfigMap %s does not hold the expected roots: %v", RootConfigMapName, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startPublisher runs s.PublishTrustBundle until the test ends, as the
// leader would.
func startPublisher(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.PublishTrustBundle(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("PublishTrustBundle returned %v", err)
		}
	})
}

// configMapWrites counts the actions on ConfigMaps that are not reads.
func configMapWrites(kube *fake.Clientset) int {
	n := 0
	for _, a := range kube.Actions() {
		if a.GetResource().Resource == "configmaps" && a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			n++
		}
	}
	return n
}

func sameRoots(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestGeneratedRootSurvivesRestart(t *testing.T) {
	kube := newKube(testTokens())
	first := startServer(t, Config{}, kube, testPods())
	sec, err := kube.CoreV1().Secrets(testNS).Get(context.Background(), RootSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Secret %s was not created: %v", RootSecretName, err)
	}
	for _, k := range []string{KeyCACert, KeyCAKey, KeyRootCert} {
		if len(sec.Data[k]) == 0 {
			t.Errorf("Secret %s lacks key %s", RootSecretName, k)
		}
	}
	roots := first.Roots()
	if len(roots) != 1 || !roots[0].IsCA || roots[0].CheckSignatureFrom(roots[0]) != nil {
		t.Fatalf("Roots() = %v, want one self-signed CA", roots)
	}
	startPublisher(t, first)
	waitRootConfigMap(t, kube, roots)

	// A restarted (or second) replica reads the same Secret.
	second := startServer(t, Config{}, kube, testPods())
	if !sameRoots(second.Roots(), roots) {
		t.Error("a second server generated a different root instead of reading the Secret")
	}
}

// TestRootCreateRace makes two servers both find no root Secret and both
// create one: the loser of the Create must adopt the winner's root.
func TestRootCreateRace(t *testing.T) {
	kube := newKube(testTokens())
	var gets, creates, alreadyExists atomic.Int32
	kube.PrependReactor("get", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.GetAction).GetName() == RootSecretName && gets.Add(1) <= 2 {
			return true, nil, apierrors.NewNotFound(corev1.Resource("secrets"), RootSecretName)
		}
		return false, nil, nil
	})
	kube.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		creates.Add(1)
		return false, nil, nil
	})
	kube.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		// Runs first; only observes whether the tracker will refuse.
		if _, err := kube.Tracker().Get(corev1.SchemeGroupVersion.WithResource("secrets"), testNS, RootSecretName); err == nil {
			alreadyExists.Add(1)
		}
		return false, nil, nil
	})

	var wg sync.WaitGroup
	servers := make([]*Server, 2)
	errs := make([]error, 2)
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = runServer(t, Config{}, kube, testPods())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
	}
	if creates.Load() != 2 || alreadyExists.Load() != 1 {
		t.Fatalf("creates = %d (AlreadyExists %d); the test wants both servers to try to create the root and one to lose", creates.Load(), alreadyExists.Load())
	}
	if !sameRoots(servers[0].Roots(), servers[1].Roots()) {
		t.Fatal("the two servers use different roots")
	}
	sec, err := kube.CoreV1().Secrets(testNS).Get(context.Background(), RootSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := identity.ParseCertsPEM(sec.Data[KeyCACert])
	if err != nil || !stored[0].Equal(servers[0].Roots()[0]) {
		t.Fatalf("the servers' root is not the one stored in the Secret (%v)", err)
	}
}

func TestPluginSecret(t *testing.T) {
	root := newTestCA(t, "corp root", nil, time.Now().Add(365*24*time.Hour))
	inter := newTestCA(t, "mesh intermediate", &root, time.Now().Add(30*24*time.Hour))
	kube := newKube(testTokens(), pluginSecret(t, inter, &root))
	s := startServer(t, Config{}, kube, testPods())

	if got := s.Roots(); len(got) != 1 || !got[0].Equal(root.cert) {
		t.Fatalf("Roots() = %v, want the plug-in root", got)
	}
	if _, err := kube.CoreV1().Secrets(testNS).Get(context.Background(), RootSecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("with a plug-in Secret, %s must not be created (Get = %v)", RootSecretName, err)
	}
	startPublisher(t, s)
	waitRootConfigMap(t, kube, []*x509.Certificate{root.cert})
	resp, err := s.CreateCertificate(withToken("zt-a"), &cav1alpha1.CreateCertificateRequest{Csr: csrFor(t, testTD, "ns1", "sa1")})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.CertChain) != 3 {
		t.Fatalf("cert_chain has %d elements, want leaf, intermediate, root", len(resp.CertChain))
	}
	leaf := verifyLeaf(t, resp.CertChain, mustID(t, testTD, "ns1", "sa1"), []*x509.Certificate{root.cert})
	if err := leaf.CheckSignatureFrom(inter.cert); err != nil {
		t.Errorf("leaf is not signed by the plug-in ca-cert.pem: %v", err)
	}
}

func TestMalformedSecret(t *testing.T) {
	root := newTestCA(t, "root", nil, time.Now().Add(365*24*time.Hour))
	inter := newTestCA(t, "intermediate", &root, time.Now().Add(30*24*time.Hour))
	other := newTestCA(t, "other", nil, time.Now().Add(365*24*time.Hour))
	expired := newTestCA(t, "expired", nil, time.Now().Add(-time.Minute))

	tests := []struct {
		name   string
		secret string // PluginSecretName or RootSecretName
		edit   func(map[string][]byte)
		want   []string
	}{
		{name: "missing key", secret: PluginSecretName, edit: func(d map[string][]byte) { delete(d, KeyCAKey) },
			want: []string{`key "ca-key.pem"`, "missing or empty"}},
		{name: "garbage certificate", secret: PluginSecretName, edit: func(d map[string][]byte) { d[KeyCACert] = []byte("not a certificate") },
			want: []string{`key "ca-cert.pem"`, "no CERTIFICATE PEM block"}},
		{name: "garbage key", secret: PluginSecretName, edit: func(d map[string][]byte) {
			d[KeyCAKey] = []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
		},
			want: []string{`key "ca-key.pem"`, "parsing PRIVATE KEY"}},
		{name: "key does not match", secret: PluginSecretName, edit: func(d map[string][]byte) { d[KeyCAKey] = other.keyPEM(t) },
			want: []string{"ca-key.pem", "does not match the signing certificate"}},
		{name: "root does not sign the chain", secret: PluginSecretName, edit: func(d map[string][]byte) { d[KeyRootCert] = other.certPEM() },
			want: []string{"does not chain to root-cert.pem"}},
		{name: "root is not self-signed", secret: PluginSecretName, edit: func(d map[string][]byte) { d[KeyRootCert] = inter.certPEM() },
			want: []string{`key "root-cert.pem"`, "not a self-signed CA certificate"}},
		{name: "chain does not start with ca-cert", secret: PluginSecretName, edit: func(d map[string][]byte) { d[KeyCertChain] = root.certPEM() },
			want: []string{`key "cert-chain.pem"`, "must start with the certificate of ca-cert.pem"}},
		{name: "expired signing certificate", secret: PluginSecretName, edit: func(d map[string][]byte) {
			d[KeyCACert], d[KeyCAKey], d[KeyRootCert] = expired.certPEM(), expired.keyPEM(t), expired.certPEM()
			delete(d, KeyCertChain)
		}, want: []string{`key "ca-cert.pem"`, "expired at"}},
		{name: "generated root Secret damaged", secret: RootSecretName, edit: func(d map[string][]byte) { d[KeyRootCert] = nil },
			want: []string{"Secret ambit-system/ambit-ca-root", `key "root-cert.pem"`, "missing or empty"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sec := pluginSecret(t, inter, &root)
			sec.Name = tc.secret
			tc.edit(sec.Data)
			s, err := New(Config{Namespace: testNS}, newKube(testTokens(), sec), testPods(), discard())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			err = s.Run(ctx)
			if err == nil {
				t.Fatal("Run accepted a malformed CA Secret")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestRootRotation follows the documented rotation: the plug-in Secret first
// gains the new root in root-cert.pem, then signs with the new CA.
func TestRootRotation(t *testing.T) {
	oldRoot := newTestCA(t, "old root", nil, time.Now().Add(365*24*time.Hour))
	newRoot := newTestCA(t, "new root", nil, time.Now().Add(2*365*24*time.Hour))
	kube := newKube(testTokens(), pluginSecret(t, oldRoot, nil))
	s := startServer(t, Config{}, kube, testPods())
	startPublisher(t, s)
	ctx := context.Background()
	update := func(data map[string][]byte) {
		t.Helper()
		sec := pluginSecret(t, oldRoot, nil)
		sec.Data = data
		if _, err := kube.CoreV1().Secrets(testNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sign := func() []string {
		t.Helper()
		resp, err := s.CreateCertificate(withToken("zt-a"), &cav1alpha1.CreateCertificateRequest{Csr: csrFor(t, testTD, "ns1", "sa1")})
		if err != nil {
			t.Fatal(err)
		}
		return resp.CertChain
	}
	both := []*x509.Certificate{oldRoot.cert, newRoot.cert}

	// Step 1: trust both roots, still sign with the old one.
	update(map[string][]byte{KeyCACert: oldRoot.certPEM(), KeyCAKey: oldRoot.keyPEM(t), KeyRootCert: concat(oldRoot.certPEM(), newRoot.certPEM())})
	if err := s.reload(ctx); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !sameRoots(s.Roots(), both) {
		t.Fatal("after step 1 Roots must hold both roots")
	}
	waitRootConfigMap(t, kube, both)
	leaf := verifyLeaf(t, sign(), mustID(t, testTD, "ns1", "sa1"), both)
	if leaf.CheckSignatureFrom(oldRoot.cert) != nil {
		t.Error("step 1 must still sign with the old root")
	}

	// Step 2: sign with the new root.
	update(map[string][]byte{KeyCACert: newRoot.certPEM(), KeyCAKey: newRoot.keyPEM(t), KeyRootCert: concat(oldRoot.certPEM(), newRoot.certPEM())})
	if err := s.reload(ctx); err != nil {
		t.Fatalf("reload: %v", err)
	}
	chain := sign()
	leaf = verifyLeaf(t, chain, mustID(t, testTD, "ns1", "sa1"), both)
	if leaf.CheckSignatureFrom(newRoot.cert) != nil {
		t.Error("step 2 must sign with the new root")
	}
	if last, _ := identity.ParseCertsPEM([]byte(chain[len(chain)-1])); !last[0].Equal(newRoot.cert) {
		t.Error("the chain must end with the root that signed it")
	}

	// A broken edit is refused and the CA keeps signing with what it had.
	update(map[string][]byte{KeyCACert: []byte("oops")})
	if err := s.reload(ctx); err == nil || !strings.Contains(err.Error(), `key "ca-key.pem"`) {
		t.Fatalf("reload of a broken Secret = %v, want an error naming ca-key.pem", err)
	}
	leaf = verifyLeaf(t, sign(), mustID(t, testTD, "ns1", "sa1"), both)
	if leaf.CheckSignatureFrom(newRoot.cert) != nil {
		t.Error("after a broken edit the CA must keep the last good root")
	}
}

func TestServingCertificate(t *testing.T) {
	root := newTestCA(t, "root", nil, time.Now().Add(365*24*time.Hour))
	inter := newTestCA(t, "intermediate", &root, time.Now().Add(30*24*time.Hour))
	s := startServer(t, Config{}, newKube(testTokens(), pluginSecret(t, inter, &root)), testPods())

	c, err := s.ServingCertificate("cp.example.com", "10.0.0.7", "fd00::7")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 {
		t.Fatalf("serving chain has %d certificates, want leaf and intermediate", len(c.Certificate))
	}
	pool, inters := x509.NewCertPool(), x509.NewCertPool()
	pool.AddCert(root.cert)
	inters.AddCert(inter.cert)
	for _, name := range []string{"ambit-controlplane.ambit-system.svc", "ambit-controlplane.ambit-system.svc.cluster.local", "cp.example.com", "10.0.0.7", "fd00::7"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, Intermediates: inters}); err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := s.ServingCertificate("not a name"); err == nil {
		t.Error("ServingCertificate accepted an invalid name")
	}
}

// TestRunDoesNotWriteTheConfigMap: the CA itself (every replica) never
// writes the trust bundle ConfigMap, at start or when the root changes;
// only PublishTrustBundle (the leader) does.
func TestRunDoesNotWriteTheConfigMap(t *testing.T) {
	oldRoot := newTestCA(t, "old root", nil, time.Now().Add(365*24*time.Hour))
	newRoot := newTestCA(t, "new root", nil, time.Now().Add(2*365*24*time.Hour))
	kube := newKube(testTokens(), pluginSecret(t, oldRoot, nil))
	s := startServer(t, Config{}, kube, testPods())
	sec := pluginSecret(t, newRoot, nil)
	if _, err := kube.CoreV1().Secrets(testNS).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !sameRoots(s.Roots(), []*x509.Certificate{newRoot.cert}) {
		t.Fatal("reload did not switch to the new root")
	}
	if n := configMapWrites(kube); n != 0 {
		t.Fatalf("Run and reload made %d ConfigMap writes, want 0 (only the leader's PublishTrustBundle writes)", n)
	}
}

func TestPublishTrustBundle(t *testing.T) {
	t.Run("cancelled context writes nothing", func(t *testing.T) {
		kube := newKube(testTokens())
		s := startServer(t, Config{}, kube, testPods())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.PublishTrustBundle(ctx); err != nil {
			t.Fatal(err)
		}
		if n := configMapWrites(kube); n != 0 {
			t.Fatalf("%d ConfigMap writes after leadership ended, want 0", n)
		}
	})
	t.Run("a new leader re-reads the Secret before writing", func(t *testing.T) {
		oldRoot := newTestCA(t, "old root", nil, time.Now().Add(365*24*time.Hour))
		newRoot := newTestCA(t, "new root", nil, time.Now().Add(2*365*24*time.Hour))
		kube := newKube(testTokens(), pluginSecret(t, oldRoot, nil))
		// Run's own reload timer never fires during the test.
		s := startServer(t, Config{ReloadInterval: time.Hour}, kube, testPods())
		if _, err := kube.CoreV1().Secrets(testNS).Update(context.Background(), pluginSecret(t, newRoot, nil), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		startPublisher(t, s)
		waitRootConfigMap(t, kube, []*x509.Certificate{newRoot.cert})
		if !sameRoots(s.Roots(), []*x509.Certificate{newRoot.cert}) {
			t.Error("the CA did not switch to the Secret re-read at takeover")
		}
	})
	t.Run("repairs a deleted ConfigMap and retries failed writes", func(t *testing.T) {
		kube := newKube(testTokens())
		var refused atomic.Int32
		kube.PrependReactor("patch", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if refused.Add(1) == 1 {
				return true, nil, apierrors.NewForbidden(corev1.Resource("configmaps"), RootConfigMapName, nil)
			}
			return false, nil, nil
		})
		s := startServer(t, Config{ReloadInterval: 20 * time.Millisecond}, kube, testPods())
		startPublisher(t, s)
		waitRootConfigMap(t, kube, s.Roots())
		if refused.Load() < 2 {
			t.Fatalf("the first write was refused; want a retry, got %d writes", refused.Load())
		}
		if err := kube.CoreV1().ConfigMaps(testNS).Delete(context.Background(), RootConfigMapName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRootConfigMap(t, kube, s.Roots())
	})
}
