package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/pkg/identity"
)

// These tests run the real deploy/ca/istio-intermediate.sh (docs/migration.md,
// "Sharing Istio's root of trust") against certificates made with openssl
// the way Istio's tools/certs Makefile makes them. They need bash and
// openssl, and fail without them.

// intermediateScript is deploy/ca/istio-intermediate.sh, from this
// package's directory.
const intermediateScript = "../../../deploy/ca/istio-intermediate.sh"

func requireOpenSSL(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"bash", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not on PATH: this test runs deploy/ca/istio-intermediate.sh, which needs bash and openssl; install the Debian package %s (hack/deps.sh installs openssl)", tool, tool)
		}
	}
}

// runIn runs name with args in dir and fails the test unless it succeeds.
func runIn(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// runScript runs the script; err is an *exec.ExitError when it exits
// non-zero.
func runScript(args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := exec.Command("bash", append([]string{intermediateScript}, args...)...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// istioPKI makes certificates in dir with openssl as Istio's
// tools/certs/Makefile.selfsigned.mk and common.mk do (same configuration
// files and commands), with 2048-bit RSA keys instead of 4096 to keep the
// test fast (2048 is also the size of Istio's self-signed root).
type istioPKI struct{ dir string }

// The configuration files of Istio's common.mk: root-ca.conf,
// %/intermediate.conf and %/workload.conf. They share the [ req ] section;
// in the last two %[1]s is the cluster (the Makefile's directory L) and
// %[2]s the workload's SPIFFE ID.
const (
	istioReqSection = `[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
default_bits = 2048
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
`
	istioRootConf = istioReqSection + `[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
[ req_dn ]
O = Istio
CN = Root CA
`
	istioIntermediateConf = istioReqSection + `[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
subjectAltName=@san
[ san ]
DNS.1 = istiod.istio-system.svc
[ req_dn ]
O = Istio
CN = Intermediate CA
L = %[1]s
`
	istioWorkloadConf = istioReqSection + `[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:false
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName=@san
[ san ]
URI.1 = %[2]s
[ req_dn ]
O = Istio
CN = Workload
L = %[1]s
`
)

func (p istioPKI) path(name string) string { return filepath.Join(p.dir, name) }

func (p istioPKI) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p.path(name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.path(name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// root is `make root-ca`: root-key.pem and root-cert.pem.
func (p istioPKI) root(t *testing.T) *x509.Certificate {
	t.Helper()
	p.write(t, "root-ca.conf", istioRootConf)
	runIn(t, p.dir, "openssl", "genrsa", "-out", "root-key.pem", "2048")
	runIn(t, p.dir, "openssl", "req", "-new", "-key", "root-key.pem", "-config", "root-ca.conf", "-out", "root-cert.csr")
	runIn(t, p.dir, "openssl", "x509", "-req", "-days", "3650", "-signkey", "root-key.pem",
		"-extensions", "req_ext", "-extfile", "root-ca.conf", "-in", "root-cert.csr", "-out", "root-cert.pem")
	return p.cert(t, "root-cert.pem")[0]
}

// cacerts is `make <cluster>-cacerts`: the cluster intermediate istiod
// holds in its own cacerts Secret.
func (p istioPKI) cacerts(t *testing.T, cluster string) {
	t.Helper()
	p.write(t, cluster+"/intermediate.conf", fmt.Sprintf(istioIntermediateConf, cluster))
	runIn(t, p.dir, "openssl", "genrsa", "-out", cluster+"/ca-key.pem", "2048")
	runIn(t, p.dir, "openssl", "req", "-new", "-config", cluster+"/intermediate.conf", "-key", cluster+"/ca-key.pem", "-out", cluster+"/cluster-ca.csr")
	runIn(t, p.dir, "openssl", "x509", "-req", "-days", "730", "-CA", "root-cert.pem", "-CAkey", "root-key.pem", "-CAcreateserial",
		"-extensions", "req_ext", "-extfile", cluster+"/intermediate.conf", "-in", cluster+"/cluster-ca.csr", "-out", cluster+"/ca-cert.pem")
}

// workload is `make <cluster>-certs` for a workload identity: a leaf
// signed by the cluster intermediate, returned with it (leaf first), as
// the peer would present them.
func (p istioPKI) workload(t *testing.T, cluster string, id identity.ID) []*x509.Certificate {
	t.Helper()
	p.write(t, cluster+"/workload.conf", fmt.Sprintf(istioWorkloadConf, cluster, id))
	runIn(t, p.dir, "openssl", "genrsa", "-out", cluster+"/key.pem", "2048")
	runIn(t, p.dir, "openssl", "req", "-new", "-config", cluster+"/workload.conf", "-key", cluster+"/key.pem", "-out", cluster+"/workload.csr")
	runIn(t, p.dir, "openssl", "x509", "-req", "-days", "1", "-CA", cluster+"/ca-cert.pem", "-CAkey", cluster+"/ca-key.pem", "-CAcreateserial",
		"-extensions", "req_ext", "-extfile", cluster+"/workload.conf", "-in", cluster+"/workload.csr", "-out", cluster+"/workload-cert.pem")
	return append(p.cert(t, cluster+"/workload-cert.pem"), p.cert(t, cluster+"/ca-cert.pem")...)
}

func (p istioPKI) cert(t *testing.T, name string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(p.path(name))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := identity.ParseCertsPEM(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return certs
}

// secretFromCommand builds the Secret that the kubectl command the script
// printed would create: a key per --from-file, named after the file.
func secretFromCommand(t *testing.T, stdout string) *corev1.Secret {
	t.Helper()
	const prefix = "kubectl create secret generic cacerts -n ambit-system "
	var line string
	for l := range strings.Lines(stdout) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("the script did not print %q...; output:\n%s", prefix, stdout)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: PluginSecretName, Namespace: testNS}, Data: map[string][]byte{}}
	for _, arg := range strings.Fields(strings.TrimPrefix(line, prefix)) {
		file, ok := strings.CutPrefix(arg, "--from-file=")
		if !ok {
			t.Fatalf("unexpected argument %q in %q", arg, line)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("the printed command names %s: %v", file, err)
		}
		sec.Data[filepath.Base(file)] = b
	}
	for _, k := range []string{KeyCACert, KeyCAKey, KeyRootCert, KeyCertChain} {
		if _, ok := sec.Data[k]; !ok {
			t.Errorf("the printed command has no --from-file for %s: %q", k, line)
		}
	}
	return sec
}

// TestIstioSharedRoot: Ambit's CA, plugged into Istio's root with the
// script's output, issues leaves that verify against Istio's root alone,
// and publishes a bundle against which a leaf of istiod's own intermediate
// verifies; a leaf of another mesh's root verifies against neither.
func TestIstioSharedRoot(t *testing.T) {
	t.Parallel() // its openssl runs overlap TestIstioIntermediateScriptErrors'
	requireOpenSSL(t)
	istio := istioPKI{dir: t.TempDir()}
	istioRoot := istio.root(t)
	istio.cacerts(t, "cluster1") // istiod's intermediate, made from the same root

	out := filepath.Join(t.TempDir(), "ambit-cacerts")
	stdout, stderr, err := runScript("--root-cert", istio.path("root-cert.pem"), "--root-key", istio.path("root-key.pem"), "--out", out)
	if err != nil {
		t.Fatalf("istio-intermediate.sh: %v\n%s%s", err, stdout, stderr)
	}
	for name, want := range map[string]os.FileMode{KeyCAKey: 0o600, KeyCACert: 0o644, KeyRootCert: 0o644, KeyCertChain: 0o644} {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	sec := secretFromCommand(t, stdout)
	if inter, err := identity.ParseCertsPEM(sec.Data[KeyCACert]); err != nil || inter[0].Subject.CommonName != "Ambit Intermediate CA" ||
		inter[0].MaxPathLen != 0 || !inter[0].MaxPathLenZero || inter[0].KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("ca-cert.pem is not a pathlen:0 CA named Ambit Intermediate CA (%v)", err)
	}

	kube := newKube(testTokens(), sec)
	s := startServer(t, Config{TrustDomain: testTD}, kube, testPods())
	startPublisher(t, s)
	waitRootConfigMap(t, kube, []*x509.Certificate{istioRoot})
	cm, err := kube.CoreV1().ConfigMaps(testNS).Get(context.Background(), RootConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	published, err := identity.ParseCertsPEM([]byte(cm.Data[KeyRootCert]))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := s.GetTrustBundle(withToken("app"), &cav1alpha1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	served := chainFromPEM(t, tb.Roots)

	ambitID := mustID(t, testTD, "ns1", "sa1")
	resp, err := s.CreateCertificate(withToken("zt-a"), &cav1alpha1.CreateCertificateRequest{Csr: csrFor(t, testTD, "ns1", "sa1")})
	if err != nil {
		t.Fatal(err)
	}
	// (a) with x509 alone; the table below repeats it with go-spiffe.
	verifyLeaf(t, resp.CertChain, ambitID, []*x509.Certificate{istioRoot})
	ambitChain := chainFromPEM(t, resp.CertChain)
	ambitChain = ambitChain[:len(ambitChain)-1] // a peer sends leaf and intermediate

	istioID := mustID(t, testTD, "demo", "sleep")
	istioChain := istio.workload(t, "cluster1", istioID)

	// Another mesh with the same trust domain and its own root.
	other, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: testTD})
	if err != nil {
		t.Fatal(err)
	}
	otherLeaf, err := other.Issue(istioID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherChain := otherLeaf.Chain

	tests := []struct {
		name    string
		chain   []*x509.Certificate
		roots   []*x509.Certificate
		wantID  identity.ID
		refused bool
	}{
		{name: "Ambit leaf against Istio's root alone", chain: ambitChain, roots: []*x509.Certificate{istioRoot}, wantID: ambitID},
		{name: "Istio leaf against ConfigMap ambit-root-cert", chain: istioChain, roots: published, wantID: istioID},
		{name: "Istio leaf against GetTrustBundle", chain: istioChain, roots: served, wantID: istioID},
		{name: "Ambit leaf against ConfigMap ambit-root-cert", chain: ambitChain, roots: published, wantID: ambitID},
		{name: "other mesh's leaf against ConfigMap ambit-root-cert", chain: otherChain, roots: published, refused: true},
		{name: "other mesh's leaf against Istio's root", chain: otherChain, roots: []*x509.Certificate{istioRoot}, refused: true},
	}
	td := spiffeid.RequireTrustDomainFromString(testTD)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, _, err := x509svid.Verify(tc.chain, x509bundle.FromX509Authorities(td, tc.roots))
			pool, inter := x509.NewCertPool(), x509.NewCertPool()
			for _, r := range tc.roots {
				pool.AddCert(r)
			}
			for _, c := range tc.chain[1:] {
				inter.AddCert(c)
			}
			_, x509Err := tc.chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
			if tc.refused {
				var unknown x509.UnknownAuthorityError
				if err == nil || !errors.As(x509Err, &unknown) {
					t.Fatalf("accepted a leaf of an unrelated root: x509svid.Verify = %v, x509 Verify = %v", err, x509Err)
				}
				return
			}
			if err != nil || x509Err != nil {
				t.Fatalf("x509svid.Verify = %v, x509 Verify = %v", err, x509Err)
			}
			if id.String() != tc.wantID.String() {
				t.Errorf("verified identity %s, want %s", id, tc.wantID)
			}
		})
	}
}

// TestIstioIntermediateScriptErrors: bad inputs make the script exit
// non-zero, say what is wrong, and write no key.
func TestIstioIntermediateScriptErrors(t *testing.T) {
	t.Parallel()
	requireOpenSSL(t)
	istio := istioPKI{dir: t.TempDir()}
	istio.root(t)
	istio.cacerts(t, "cluster1")
	runIn(t, istio.dir, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other-key.pem")
	runIn(t, istio.dir, "openssl", "req", "-x509", "-new", "-key", "other-key.pem", "-subj", "/O=Istio/CN=not a CA",
		"-addext", "basicConstraints=critical,CA:false", "-days", "1", "-out", "leaf-cert.pem")
	existing := t.TempDir()
	if err := os.WriteFile(filepath.Join(existing, KeyCAKey), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		cert     string // files in istio.dir
		key      string
		out      string // default: a new directory
		extra    []string
		wantCode int
		want     string
	}{
		{name: "key does not match the certificate", cert: "root-cert.pem", key: "other-key.pem", wantCode: 1,
			want: "does not match --root-cert"},
		{name: "root is not a CA", cert: "leaf-cert.pem", key: "other-key.pem", wantCode: 1,
			want: "not a CA certificate"},
		{name: "Istio's intermediate instead of the root", cert: "cluster1/ca-cert.pem", key: "cluster1/ca-key.pem", wantCode: 1,
			want: "not self-signed"},
		{name: "missing root key", cert: "root-cert.pem", key: "no-such-key.pem", wantCode: 1,
			want: "no-such-key.pem: no such file"},
		{name: "output exists", cert: "root-cert.pem", key: "root-key.pem", out: existing, wantCode: 1,
			want: "ca-key.pem exists"},
		{name: "bad --days", cert: "root-cert.pem", key: "root-key.pem", extra: []string{"--days", "two"}, wantCode: 1,
			want: "--days two"},
		{name: "no --root-key", cert: "root-cert.pem", wantCode: 2, want: "--root-key is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := tc.out
			if out == "" {
				out = filepath.Join(t.TempDir(), "out")
			}
			args := []string{"--root-cert", istio.path(tc.cert), "--out", out}
			if tc.key != "" {
				args = append(args, "--root-key", istio.path(tc.key))
			}
			stdout, stderr, err := runScript(append(args, tc.extra...)...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != tc.wantCode {
				t.Fatalf("exit = %v, want code %d\nstdout:\n%sstderr:\n%s", err, tc.wantCode, stdout, stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", stderr, tc.want)
			}
			key, err := os.ReadFile(filepath.Join(out, KeyCAKey))
			switch {
			case tc.out == "" && !errors.Is(err, os.ErrNotExist):
				t.Errorf("a failed run wrote %s/%s (%v)", out, KeyCAKey, err)
			case tc.out != "" && string(key) != "keep me":
				t.Errorf("a failed run changed the existing %s/%s", out, KeyCAKey)
			}
		})
	}
}
