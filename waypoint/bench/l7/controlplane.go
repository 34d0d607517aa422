package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/pkg/identity"
	wpconfig "ambit.dev/waypoint/internal/config"
	"ambit.dev/waypoint/internal/xdstest"
)

// gatewayKey is the waypoint the bench configures (XDS.md §1: snapshots
// are keyed by the GATEWAY node metadata).
const gatewayKey = "bench/waypoint"

// benchToken is the "projected ServiceAccount token" the waypoint sends
// to the bench's CA.
const benchToken = "bench-token"

// controlPlane stands in for the Ambit control plane towards the
// waypoint: one TLS gRPC server with the mesh CA (CertificateService)
// and a go-control-plane delta ADS server whose snapshot holds the
// resources of XDS.md built by waypoint/internal/xdstest — the fixtures
// the waypoint's contract test proves equal to the control plane's
// golden output.
type controlPlane struct {
	gs   *grpc.Server
	done chan struct{}
	stop context.CancelFunc
}

// startControlPlane serves on ln (inside the waypoint pod's netns).
func startControlPlane(ln net.Listener, ca *identity.LocalCA, rootCertPEM, rootKeyPEM []byte, svcs []xdstest.Service) (*controlPlane, error) {
	serving, err := servingCert(rootCertPEM, rootKeyPEM, wpconfig.DefaultControlPlaneName)
	if err != nil {
		return nil, err
	}
	snapCache := cache.NewSnapshotCache(true, gatewayHash{}, nil)
	snap, err := cache.NewSnapshot("1", waypointResources(svcs))
	if err != nil {
		return nil, err
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xDS snapshot for the waypoint is not consistent: %w", err)
	}
	if err := snapCache.SetSnapshot(context.Background(), gatewayKey, snap); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(serving)))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(ctx, snapCache, nil))
	cav1alpha1.RegisterCertificateServiceServer(gs, &benchCA{ca: ca, rootPEM: rootCertPEM})
	cp := &controlPlane{gs: gs, done: make(chan struct{}), stop: cancel}
	go func() {
		defer close(cp.done)
		_ = gs.Serve(ln)
	}()
	return cp, nil
}

// Close stops serving.
func (cp *controlPlane) Close() {
	cp.stop()
	cp.gs.Stop()
	<-cp.done
}

// waypointResources are the listeners, clusters, assignments and routes
// the control plane builds for svcs (XDS.md §4–§7).
func waypointResources(svcs []xdstest.Service) map[resource.Type][]types.Resource {
	res := map[resource.Type][]types.Resource{}
	for _, l := range xdstest.Listeners(identity.DefaultTrustDomain, svcs) {
		res[resource.ListenerType] = append(res[resource.ListenerType], l)
	}
	for _, c := range xdstest.Clusters(identity.DefaultTrustDomain, svcs) {
		res[resource.ClusterType] = append(res[resource.ClusterType], c)
	}
	for _, s := range svcs {
		res[resource.EndpointType] = append(res[resource.EndpointType], xdstest.Assignment(s))
		if s.IsHTTP() {
			res[resource.RouteType] = append(res[resource.RouteType], xdstest.Route(s))
		}
	}
	return res
}

type gatewayHash struct{}

func (gatewayHash) ID(n *corev3.Node) string {
	return n.GetMetadata().GetFields()["GATEWAY"].GetStringValue()
}

// benchCA issues the waypoint its SVID from the run's mesh root, for a
// caller presenting benchToken.
type benchCA struct {
	cav1alpha1.UnimplementedCertificateServiceServer
	ca      *identity.LocalCA
	rootPEM []byte
}

func authorized(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get(cav1alpha1.AuthorizationMetadataKey); len(got) == 1 && got[0] == cav1alpha1.BearerPrefix+benchToken {
		return nil
	}
	return status.Error(codes.Unauthenticated, "the bench CA wants the bench token")
}

func (b *benchCA) CreateCertificate(ctx context.Context, req *cav1alpha1.CreateCertificateRequest) (*cav1alpha1.CreateCertificateResponse, error) {
	if err := authorized(ctx); err != nil {
		return nil, err
	}
	chain, err := b.ca.CreateCertificate(ctx, []byte(req.GetCsr()), time.Duration(req.GetValidityDurationSeconds())*time.Second)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &cav1alpha1.CreateCertificateResponse{}
	for _, c := range append(chain, b.ca.Roots()...) {
		resp.CertChain = append(resp.CertChain, string(identity.EncodeCertsPEM([]*x509.Certificate{c})))
	}
	return resp, nil
}

func (b *benchCA) GetTrustBundle(ctx context.Context, _ *cav1alpha1.GetTrustBundleRequest) (*cav1alpha1.GetTrustBundleResponse, error) {
	if err := authorized(ctx); err != nil {
		return nil, err
	}
	return &cav1alpha1.GetTrustBundleResponse{TrustDomain: b.ca.TrustDomain(), Roots: []string{string(b.rootPEM)}}, nil
}

// servingCert is the control plane's TLS server certificate for name,
// signed by the mesh root (the waypoint checks it against
// --root-cert-file).
func servingCert(rootCertPEM, rootKeyPEM []byte, name string) (*tls.Certificate, error) {
	roots, err := identity.ParseCertsPEM(rootCertPEM)
	if err != nil {
		return nil, err
	}
	signer, err := identity.ParsePrivateKeyPEM(rootKeyPEM)
	if err != nil {
		return nil, err
	}
	key, err := identity.GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, roots[0], key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("sign the control plane's serving certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// writeWaypointFiles writes the waypoint's --root-cert-file and
// --token-file into dir.
func writeWaypointFiles(dir string, rootCertPEM []byte) (rootFile, tokenFile string, err error) {
	rootFile, tokenFile = filepath.Join(dir, "waypoint-root-cert.pem"), filepath.Join(dir, "waypoint-token")
	if err := os.WriteFile(rootFile, rootCertPEM, 0o600); err != nil {
		return "", "", err
	}
	return rootFile, tokenFile, os.WriteFile(tokenFile, []byte(benchToken+"\n"), 0o600)
}
