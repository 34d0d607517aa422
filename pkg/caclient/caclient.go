// Package caclient is the client of the mesh CA (ambit.dev/api/ca/v1alpha1
// CertificateService, served by the control plane) used by ztunnel and the
// waypoint. It implements identity.Signer, so the certificate Manager
// fetches and rotates workload certificates through it.
//
// Every call carries "authorization: Bearer <token>", the token read afresh
// from a file on each call: the kubelet rotates the projected
// ServiceAccount token (audience ambit-ca) in place. The connection's
// transport security (TLS verified with the mesh root and the control
// plane's name) is chosen by whoever builds the gRPC connection.
package caclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/pkg/identity"
)

// Client signs CSRs with the control plane CA.
type Client struct {
	ca    cav1alpha1.CertificateServiceClient
	token grpc.CallOption
}

var _ identity.Signer = (*Client)(nil)

// New returns a Client over conn. Each call reads the bearer token from
// tokenFile (required).
func New(conn grpc.ClientConnInterface, tokenFile string) (*Client, error) {
	if conn == nil || tokenFile == "" {
		return nil, errors.New("caclient: a gRPC connection and a token file are required")
	}
	return &Client{ca: cav1alpha1.NewCertificateServiceClient(conn), token: grpc.PerRPCCredentials(fileToken{path: tokenFile})}, nil
}

// fileToken sends the token of a file, read on every call, as
// "authorization: Bearer <token>", over secure transports only.
type fileToken struct{ path string }

var _ credentials.PerRPCCredentials = fileToken{}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (f fileToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("caclient: reading the ServiceAccount token (check the projected token volume with audience %q): %w", cav1alpha1.TokenAudience, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("caclient: the token file %s is empty", f.path)
	}
	return map[string]string{cav1alpha1.AuthorizationMetadataKey: cav1alpha1.BearerPrefix + tok}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: the
// token is never sent in the clear.
func (fileToken) RequireTransportSecurity() bool { return true }

// CreateCertificate implements identity.Signer: it sends the CSR, with its
// identity as requested_identity, and returns the chain without the root.
func (c *Client) CreateCertificate(ctx context.Context, csrPEM []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	_, id, err := identity.ParseCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("caclient: %w", err)
	}
	resp, err := c.ca.CreateCertificate(ctx, &cav1alpha1.CreateCertificateRequest{
		Csr:                     string(csrPEM),
		ValidityDurationSeconds: int64(ttl / time.Second),
		RequestedIdentity:       id.String(),
	}, c.token)
	if err != nil {
		return nil, fmt.Errorf("caclient: CreateCertificate for %s: %w", id, err)
	}
	var chain []*x509.Certificate
	for i, p := range resp.GetCertChain() {
		certs, err := identity.ParseCertsPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("caclient: CreateCertificate for %s: cert_chain[%d]: %w", id, i, err)
		}
		chain = append(chain, certs...)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("caclient: CreateCertificate for %s: the CA returned no certificate", id)
	}
	if n := len(chain); n > 1 && selfSigned(chain[n-1]) {
		chain = chain[:n-1]
	}
	return chain, nil
}

// TrustBundle implements identity.Signer with GetTrustBundle.
func (c *Client) TrustBundle(ctx context.Context) ([]*x509.Certificate, error) {
	resp, err := c.ca.GetTrustBundle(ctx, &cav1alpha1.GetTrustBundleRequest{}, c.token)
	if err != nil {
		return nil, fmt.Errorf("caclient: GetTrustBundle: %w", err)
	}
	var roots []*x509.Certificate
	for i, p := range resp.GetRoots() {
		certs, err := identity.ParseCertsPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("caclient: GetTrustBundle: roots[%d]: %w", i, err)
		}
		roots = append(roots, certs...)
	}
	if len(roots) == 0 {
		return nil, errors.New("caclient: GetTrustBundle returned no root")
	}
	return roots, nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// TransportCredentials returns TLS credentials for connections to the
// control plane (xDS and CA): the server's chain must lead to one of the
// roots in rootsPEM (the mesh root, from the ambit-root-cert ConfigMap) and
// name serverName (its Service DNS name, also when dialled by IP).
func TransportCredentials(rootsPEM []byte, serverName string) (credentials.TransportCredentials, error) {
	roots, err := identity.ParseCertsPEM(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("caclient: mesh root certificates: %w", err)
	}
	if len(roots) == 0 {
		return nil, errors.New("caclient: no root certificate in the mesh root file")
	}
	if serverName == "" {
		return nil, errors.New("caclient: the control plane's TLS server name is required")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}), nil
}
