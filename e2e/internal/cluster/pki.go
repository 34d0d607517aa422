package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// pki holds the cluster's certificates and bearer tokens. All files live in
// StateDir/pki; they are made once per cluster and reused by a later Up.
type pki struct {
	dir    string
	caPEM  []byte
	tokens map[string]string // user -> token
}

// user identities with static tokens: name -> (user, groups).
type tokenUser struct {
	user   string
	groups []string
}

func tokenUsers(nodes int) map[string]tokenUser {
	m := map[string]tokenUser{
		"admin":                   {"ambit-admin", []string{"system:masters"}},
		"kube-controller-manager": {"system:kube-controller-manager", nil},
		"kube-scheduler":          {"system:kube-scheduler", nil},
		"kube-proxy":              {"system:kube-proxy", nil},
	}
	for i := 1; i <= nodes; i++ {
		n := NodeName(i)
		m[n] = tokenUser{"system:node:" + n, []string{"system:nodes"}}
	}
	return m
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// ensurePKI creates (or loads) the CA, serving and client certificates, the
// service-account signing key and the token file.
func ensurePKI(c Config) (*pki, error) {
	p := &pki{dir: c.pkiDir(), tokens: map[string]string{}}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	caKey, caCert, err := p.ensureCA()
	if err != nil {
		return nil, err
	}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
		IPAddresses: []net.IP{HostIP.AsSlice(), APIServiceIP.AsSlice(), net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if err := p.ensureLeaf("apiserver", serving, caKey, caCert); err != nil {
		return nil, err
	}
	kubeletClient := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := p.ensureLeaf("apiserver-kubelet-client", kubeletClient, caKey, caCert); err != nil {
		return nil, err
	}
	if _, err := os.Stat(p.path("sa.key")); errors.Is(err, os.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		if err := writeKey(p.path("sa.key"), k); err != nil {
			return nil, err
		}
		pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(p.path("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
			return nil, err
		}
	}
	return p, p.ensureTokens(c.Nodes)
}

func (p *pki) ensureCA() (*ecdsa.PrivateKey, *x509.Certificate, error) {
	if k, crt, err := loadPair(p.path("ca")); err == nil {
		return k, crt, nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "ambit-localcluster-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, err
	}
	crt, _ := x509.ParseCertificate(der)
	return k, crt, writePair(p.path("ca"), k, der)
}

func (p *pki) ensureLeaf(name string, tmpl *x509.Certificate, caKey *ecdsa.PrivateKey, ca *x509.Certificate) error {
	if _, _, err := loadPair(p.path(name)); err == nil {
		return nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.SerialNumber = randSerial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign %s certificate: %w", name, err)
	}
	return writePair(p.path(name), k, der)
}

func (p *pki) ensureTokens(nodes int) error {
	users := tokenUsers(nodes)
	// Reuse tokens already on disk so running components keep working.
	if b, err := os.ReadFile(p.path("tokens.csv")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.SplitN(line, ",", 4)
			if len(f) >= 3 {
				for name, u := range users {
					if u.user == f[1] {
						p.tokens[name] = f[0]
					}
				}
			}
		}
	}
	var sb strings.Builder
	for name, u := range users {
		tok, ok := p.tokens[name]
		if !ok {
			b := make([]byte, 24)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			tok = hex.EncodeToString(b)
			p.tokens[name] = tok
		}
		fmt.Fprintf(&sb, "%s,%s,%s", tok, u.user, u.user)
		if len(u.groups) > 0 {
			fmt.Fprintf(&sb, ",\"%s\"", strings.Join(u.groups, ","))
		}
		sb.WriteString("\n")
	}
	return os.WriteFile(p.path("tokens.csv"), []byte(sb.String()), 0o600)
}

// writeKubeconfig writes a token kubeconfig for the named token user.
func (p *pki) writeKubeconfig(path, tokenName string) error {
	tok, ok := p.tokens[tokenName]
	if !ok {
		return fmt.Errorf("no token for %q", tokenName)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["ambit"] = &clientcmdapi.Cluster{Server: APIServerURL(), CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos[tokenName] = &clientcmdapi.AuthInfo{Token: tok}
	cfg.Contexts["ambit"] = &clientcmdapi.Context{Cluster: "ambit", AuthInfo: tokenName}
	cfg.CurrentContext = "ambit"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func writePair(base string, k *ecdsa.PrivateKey, der []byte) error {
	if err := writeKey(base+".key", k); err != nil {
		return err
	}
	return os.WriteFile(base+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func loadPair(base string) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	kb, err := os.ReadFile(base + ".key")
	if err != nil {
		return nil, nil, err
	}
	cb, err := os.ReadFile(base + ".crt")
	if err != nil {
		return nil, nil, err
	}
	kblk, _ := pem.Decode(kb)
	cblk, _ := pem.Decode(cb)
	if kblk == nil || cblk == nil {
		return nil, nil, fmt.Errorf("%s.{key,crt}: not PEM", base)
	}
	k, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	crt, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if time.Now().After(crt.NotAfter.Add(-24 * time.Hour)) {
		return nil, nil, fmt.Errorf("%s.crt expires soon", base)
	}
	return k, crt, nil
}
