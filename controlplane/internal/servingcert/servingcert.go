// Package servingcert issues and rotates the control plane's own TLS
// serving certificate (xDS 15012, CA 15017), signed by the mesh CA so that
// ztunnels verify the control plane with the mesh root they already trust.
//
// Names and Issue are the pure parts (which SANs, which certificate);
// Rotator keeps a current certificate for tls.Config.GetCertificate and
// replaces it at half of its lifetime.
package servingcert

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"ambit.dev/pkg/identity"
)

// backdate is subtracted from NotBefore to tolerate clients whose clock is
// a little behind.
const backdate = time.Minute

// Names returns the SANs of the serving certificate: the Service's
// in-cluster DNS names <service>.<namespace>.svc and
// <service>.<namespace>.svc.<clusterDomain>, then the extra names. An extra
// name that parses as an IP address (IPv4 or IPv6) becomes an IP SAN; any
// other must be a DNS name (RFC 1123 subdomain). Duplicates are dropped and
// the order is kept.
func Names(service, namespace, clusterDomain string, extra ...string) (dnsNames []string, ips []net.IP, err error) {
	if service == "" || namespace == "" || clusterDomain == "" {
		return nil, nil, fmt.Errorf("servingcert: service %q, namespace %q and cluster domain %q must all be set", service, namespace, clusterDomain)
	}
	svc := service + "." + namespace + ".svc"
	all := append([]string{svc, svc + "." + clusterDomain}, extra...)
	for _, n := range all {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			return nil, nil, fmt.Errorf("servingcert: %q is neither an IP address nor a DNS name: %s", n, errs[0])
		}
		if !slices.Contains(dnsNames, n) {
			dnsNames = append(dnsNames, n)
		}
	}
	return dnsNames, ips, nil
}

// Request describes a serving certificate to issue.
type Request struct {
	DNSNames  []string
	IPs       []net.IP
	NotBefore time.Time
	NotAfter  time.Time
}

// Issue generates an ECDSA P-256 key and a server certificate for req,
// signed by signCert/signKey. intermediates are the certificates between
// the signer's leaves and the root, nearest first (signCert itself unless
// it is the root); they follow the leaf in the returned chain. NotAfter is
// cut to the signing certificate's expiry.
func Issue(signCert *x509.Certificate, signKey crypto.Signer, intermediates []*x509.Certificate, req Request) (*tls.Certificate, error) {
	if len(req.DNSNames) == 0 && len(req.IPs) == 0 {
		return nil, errors.New("servingcert: a serving certificate needs at least one DNS name or IP address")
	}
	notAfter := req.NotAfter
	if notAfter.After(signCert.NotAfter) {
		notAfter = signCert.NotAfter
	}
	if !notAfter.After(req.NotBefore) {
		return nil, fmt.Errorf("servingcert: empty validity period %s..%s (has the CA certificate expired?)", req.NotBefore, notAfter)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("servingcert: generating serial number: %w", err)
	}
	cn := ""
	if len(req.DNSNames) > 0 {
		cn = req.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPs,
		NotBefore:             req.NotBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signCert, key.Public(), signKey)
	if err != nil {
		return nil, fmt.Errorf("servingcert: signing the serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("servingcert: parsing the issued certificate: %w", err)
	}
	tc := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	for _, c := range intermediates {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// RenewAt is when a certificate should be replaced: half-way through its
// lifetime.
func RenewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
}

// Validity returns the period of a certificate issued at now for ttl.
func Validity(now time.Time, ttl time.Duration) (notBefore, notAfter time.Time) {
	return now.Add(-backdate), now.Add(ttl)
}
