//go:build e2e

package tests

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"ambit.dev/e2e/framework"
)

// intermediateScript makes Ambit's cacerts under Istio's root
// (docs/migration.md, "Sharing Istio's root of trust").
const intermediateScript = "../../deploy/ca/istio-intermediate.sh"

// plugIstioRoot does what docs/migration.md tells a user who shares Istio's
// root: it makes a root CA with openssl (standing in for the cluster's
// Istio root), runs deploy/ca/istio-intermediate.sh to make an
// intermediate under it in Istio's cacerts layout, and creates the Secret
// ambit-system/cacerts from its files before Ambit is installed. It
// returns the root. Call it before installMesh; it needs openssl and bash
// (hack/deps.sh) and fails without them.
func plugIstioRoot(t *testing.T, f *framework.Framework) *x509.Certificate {
	t.Helper()
	for _, tool := range []string{"bash", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not on PATH: the shared-root check runs %s (hack/deps.sh installs openssl)", tool, intermediateScript)
		}
	}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
		"-subj", "/O=Istio/CN=Root CA", "-keyout", "root-key.pem", "-out", "root-cert.pem",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
	script, err := filepath.Abs(intermediateScript)
	if err != nil {
		t.Fatal(err)
	}
	run("bash", script, "--root-cert", "root-cert.pem", "--root-key", "root-key.pem", "--out", "cacerts")

	data := map[string][]byte{}
	for _, k := range []string{"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, "cacerts", k))
		if err != nil {
			t.Fatalf("%s did not write %s: %v", intermediateScript, k, err)
		}
		data[k] = b
	}
	// install(t, f) deletes the namespace when the test ends; this cleanup
	// covers a failure before it runs.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.Client.CoreV1().Namespaces().Delete(ctx, systemNS, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: delete namespace %s: %v", systemNS, err)
		}
	})
	if _, err := f.Client.CoreV1().Namespaces().Create(f.Ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s for the cacerts Secret: %v", systemNS, err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts", Namespace: systemNS}, Data: data}
	if _, err := f.Client.CoreV1().Secrets(systemNS).Create(f.Ctx(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret %s/cacerts: %v", systemNS, err)
	}
	return parseOneCert(t, data["root-cert.pem"])
}

func parseOneCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM certificate in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkSharedRoot checks that Ambit's trust bundle is the Istio root and
// that the certificate ztunnel holds for identity (read with ambitctl
// ztunnel certs, as docs/migration.md says) chains to that root alone.
func checkSharedRoot(t *testing.T, f *framework.Framework, root *x509.Certificate, identity string) {
	t.Helper()
	cm, err := f.Client.CoreV1().ConfigMaps(systemNS).Get(f.Ctx(), "ambit-root-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if published := parseOneCert(t, []byte(cm.Data["root-cert.pem"])); !published.Equal(root) {
		t.Errorf("ambit-root-cert publishes %q, not the Istio root %q", published.Subject, root.Subject)
	}
	res := ambitctl(t, f, "ztunnel", "certs", "-o", "json")
	res.expect(t, 0)
	type certInfo struct{ Type, PEM string }
	var byNode map[string][]struct {
		Identity, State string
		Chain           []certInfo
	}
	if err := json.Unmarshal([]byte(res.out), &byNode); err != nil {
		t.Fatalf("ambitctl ztunnel certs -o json: %v\n%s", err, excerptLines(res.out, 5))
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	found := 0
	for node, certs := range byNode {
		for _, c := range certs {
			if c.Identity != identity {
				continue
			}
			found++
			if c.State != "Valid" || len(c.Chain) == 0 || c.Chain[0].Type != "Leaf" {
				t.Errorf("node %s: certificate of %s is %s with chain %v", node, identity, c.State, c.Chain)
				continue
			}
			leaf := parseOneCert(t, []byte(c.Chain[0].PEM))
			inter := x509.NewCertPool()
			holdsRoot := false
			for _, ci := range c.Chain[1:] {
				cert := parseOneCert(t, []byte(ci.PEM))
				switch ci.Type {
				case "Intermediate":
					inter.AddCert(cert)
				case "Root":
					holdsRoot = holdsRoot || cert.Equal(root)
				}
			}
			if !holdsRoot {
				t.Errorf("node %s: ztunnel does not trust the Istio root", node)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("node %s: the certificate of %s does not chain to the Istio root: %v", node, identity, err)
			}
		}
	}
	if found == 0 {
		t.Errorf("no ztunnel holds a certificate for %s:\n%s", identity, excerptLines(res.out, 10))
	}
	t.Logf("shared root: %d ztunnel certificate(s) of %s chain to %q", found, identity, fmt.Sprint(root.Subject))
}
