package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/config"
	"ambit.dev/waypoint/internal/xdstest"
)

const (
	td        = "cluster.local"
	token     = "projected-token"
	gatewayNS = "demo"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustID(t testing.TB, s string) identity.ID {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// mesh is the test trust domain: a root, a LocalCA and issued certificates.
type mesh struct {
	rootPEM, keyPEM []byte
	ca              *identity.LocalCA

	mu    sync.Mutex
	certs map[identity.ID]*identity.Certificate
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	rootPEM, keyPEM, err := identity.GenerateRoot(td, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{TrustDomain: td, SigningCertPEM: rootPEM, SigningKeyPEM: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{rootPEM: rootPEM, keyPEM: keyPEM, ca: ca, certs: map[identity.ID]*identity.Certificate{}}
}

func (m *mesh) cert(id identity.ID) (*tls.Certificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.certs[id]; ok {
		return c.TLS, nil
	}
	c, err := m.ca.Issue(id, time.Hour)
	if err != nil {
		return nil, err
	}
	m.certs[id] = c
	return c.TLS, nil
}

// servingCert is the control plane's TLS certificate for dnsName.
func (m *mesh) servingCert(t *testing.T, dnsName string) *tls.Certificate {
	t.Helper()
	roots, err := identity.ParseCertsPEM(m.rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := identity.ParsePrivateKeyPEM(m.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, roots[0], key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeCA is the control plane's CertificateService as far as a waypoint
// sees it: a valid token may obtain its own identity only.
type fakeCA struct {
	cav1alpha1.UnimplementedCertificateServiceServer
	m     *mesh
	allow identity.ID
}

func (f *fakeCA) checkToken(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(cav1alpha1.AuthorizationMetadataKey); len(v) != 1 || v[0] != cav1alpha1.BearerPrefix+token {
		return status.Error(codes.Unauthenticated, "bad token")
	}
	return nil
}

func (f *fakeCA) CreateCertificate(ctx context.Context, req *cav1alpha1.CreateCertificateRequest) (*cav1alpha1.CreateCertificateResponse, error) {
	if err := f.checkToken(ctx); err != nil {
		return nil, err
	}
	_, id, err := identity.ParseCSR([]byte(req.GetCsr()))
	if err != nil || id != f.allow || req.GetRequestedIdentity() != id.String() {
		return nil, status.Errorf(codes.PermissionDenied, "may only obtain %s, not %s (%v)", f.allow, id, err)
	}
	chain, err := f.m.ca.CreateCertificate(ctx, []byte(req.GetCsr()), time.Duration(req.GetValidityDurationSeconds())*time.Second)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	var out []string
	for _, c := range append(chain, f.m.ca.Roots()...) {
		out = append(out, string(identity.EncodeCertsPEM([]*x509.Certificate{c})))
	}
	return &cav1alpha1.CreateCertificateResponse{CertChain: out}, nil
}

func (f *fakeCA) GetTrustBundle(ctx context.Context, _ *cav1alpha1.GetTrustBundleRequest) (*cav1alpha1.GetTrustBundleResponse, error) {
	if err := f.checkToken(ctx); err != nil {
		return nil, err
	}
	return &cav1alpha1.GetTrustBundleResponse{TrustDomain: td, Roots: []string{string(f.m.rootPEM)}}, nil
}

// gatewayHash keys snapshots by the GATEWAY node metadata, as the control
// plane keys waypoint configuration (XDS.md §1).
type gatewayHash struct{}

func (gatewayHash) ID(n *corev3.Node) string {
	return n.GetMetadata().GetFields()["GATEWAY"].GetStringValue()
}

// controlPlane is a TLS gRPC server with the CA and a go-control-plane
// delta ADS server backed by a snapshot cache.
type controlPlane struct {
	addr  string
	cache cache.SnapshotCache

	mu       sync.Mutex
	requests []*discoverygrpc.DeltaDiscoveryRequest
	version  int
}

func startControlPlane(t *testing.T, m *mesh, waypointID identity.ID) *controlPlane {
	t.Helper()
	cp := &controlPlane{cache: cache.NewSnapshotCache(true, gatewayHash{}, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	xds := server.NewServer(ctx, cp.cache, server.CallbackFuncs{
		StreamDeltaRequestFunc: func(_ int64, r *discoverygrpc.DeltaDiscoveryRequest) error {
			cp.mu.Lock()
			cp.requests = append(cp.requests, r)
			cp.mu.Unlock()
			return nil
		},
	})
	gs := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(m.servingCert(t, config.DefaultControlPlaneName))))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xds)
	cav1alpha1.RegisterCertificateServiceServer(gs, &fakeCA{m: m, allow: waypointID})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(ln)
	}()
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		<-done
	})
	return cp
}

// set serves svcs to the waypoint demo/waypoint; the clusters may be
// replaced (to serve a bad one).
func (cp *controlPlane) set(t *testing.T, svcs []xdstest.Service, mutate func(map[resource.Type][]types.Resource)) {
	t.Helper()
	res := map[resource.Type][]types.Resource{}
	for _, l := range xdstest.Listeners(td, svcs) {
		res[resource.ListenerType] = append(res[resource.ListenerType], l)
	}
	for _, c := range xdstest.Clusters(td, svcs) {
		res[resource.ClusterType] = append(res[resource.ClusterType], c)
	}
	for _, s := range svcs {
		res[resource.EndpointType] = append(res[resource.EndpointType], xdstest.Assignment(s))
		if s.IsHTTP() {
			res[resource.RouteType] = append(res[resource.RouteType], xdstest.Route(s))
		}
	}
	if mutate != nil {
		mutate(res)
	}
	cp.mu.Lock()
	cp.version++
	v := cp.version
	cp.mu.Unlock()
	snap, err := cache.NewSnapshot(fmt.Sprint(v), res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), gatewayNS+"/waypoint", snap); err != nil {
		t.Fatal(err)
	}
}

// seen returns the requests the waypoint sent so far.
func (cp *controlPlane) seen() []*discoverygrpc.DeltaDiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]*discoverygrpc.DeltaDiscoveryRequest(nil), cp.requests...)
}

// ztunnel is a fake destination ztunnel for one pod: an HBONE server on
// a loopback address presenting the pod's identity. It answers HTTP on
// port 8080 and TCP on port 5432, both saying which endpoint answered and
// which client principal it saw.
type ztunnel struct {
	name string
	addr netip.AddrPort
	id   identity.ID

	mu      sync.Mutex
	reqs    []hbone.Request
	handler func(http.ResponseWriter, *http.Request) bool
}

// handle makes h answer the HTTP requests it wants to (true); the others
// get the default answer.
func (z *ztunnel) handle(h func(http.ResponseWriter, *http.Request) bool) {
	z.mu.Lock()
	z.handler = h
	z.mu.Unlock()
}

type appConn struct {
	net.Conn
	req hbone.Request
}

type reqKey struct{}

func startZtunnel(t *testing.T, m *mesh, ip, name string, id identity.ID) *ztunnel {
	t.Helper()
	z := &ztunnel{name: name, id: id}
	tlsCfg, err := hbone.ServerTLS(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return m.cert(id) }, m.ca.Roots, td)
	if err != nil {
		t.Fatal(err)
	}
	apps := make(chan net.Conn)
	appSrv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			z.mu.Lock()
			h := z.handler
			z.mu.Unlock()
			if h != nil && h(w, r) {
				return
			}
			req := r.Context().Value(reqKey{}).(hbone.Request)
			fmt.Fprintf(w, "endpoint=%s principal=%s host=%s xfcc=%q proto=%s", z.name, req.SourceID, r.Host, r.Header.Get("X-Forwarded-Client-Cert"), r.Proto)
		}),
		Protocols: h1AndH2C(),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, reqKey{}, c.(*appConn).req)
		},
		ErrorLog: slog.NewLogLogger(quiet().Handler(), slog.LevelDebug),
	}
	srv, err := hbone.NewServer(hbone.ServerConfig{
		TLS: tlsCfg,
		Authorize: func(_ context.Context, r hbone.Request) error {
			z.mu.Lock()
			z.reqs = append(z.reqs, r)
			z.mu.Unlock()
			return nil
		},
		Dial: func(ctx context.Context, r hbone.Request) (net.Conn, error) {
			ours, app := net.Pipe()
			switch r.Dst.Port() {
			case 8080:
				select {
				case apps <- &appConn{Conn: app, req: r}:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			case 5432:
				go func() {
					defer app.Close()
					fmt.Fprintf(app, "endpoint=%s principal=%s\n", z.name, r.SourceID)
					io.Copy(app, app)
				}()
			default:
				return nil, fmt.Errorf("nothing listens on %s", r.Dst)
			}
			return ours, nil
		},
		Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	z.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ctx, ln) })
	wg.Go(func() { _ = appSrv.Serve(&chanListener{ch: apps, done: ctx.Done(), addr: ln.Addr()}) })
	t.Cleanup(func() {
		cancel()
		appSrv.Close()
		wg.Wait()
	})
	return z
}

// endpoint is the EDS endpoint of this fake pod for a target port.
func (z *ztunnel) endpoint(port uint16) xdstest.Endpoint {
	return xdstest.Endpoint{Tunnel: z.addr, Destination: netip.AddrPortFrom(z.addr.Addr(), port),
		Identity: z.id.String(), Workload: z.name, Namespace: z.id.Namespace, Node: "node-" + z.name}
}

func (z *ztunnel) requests() []hbone.Request {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]hbone.Request(nil), z.reqs...)
}

type chanListener struct {
	ch   chan net.Conn
	done <-chan struct{}
	addr net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// waypointConfig is the waypoint's configuration against cp.
func waypointConfig(t *testing.T, m *mesh, cp *controlPlane) config.Config {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string][]byte{"root-cert.pem": m.rootPEM, "token": []byte(token + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Config{
		XDSAddress: cp.addr, CAAddress: cp.addr, RootCertFile: filepath.Join(dir, "root-cert.pem"),
		ControlPlaneName: config.DefaultControlPlaneName, TokenFile: filepath.Join(dir, "token"),
		TrustDomain: td, ClusterDomain: "cluster.local",
		PodName: "waypoint-7d9f-abcde", PodNamespace: gatewayNS, ServiceAccount: "waypoint", Gateway: gatewayNS + "/waypoint",
		PodIPs:    []netip.Addr{netip.MustParseAddr("10.244.1.9"), netip.MustParseAddr("fd00:10:244:1::9")},
		HBONEAddr: "[::1]:0", ReadyAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		CertTTL: time.Hour, DrainPeriod: time.Second, LogFormat: "text",
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	return cfg
}

// eventually polls cond until it returns nil or 20s passed.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// h1AndH2C serves HTTP/1.1 and h2c with prior knowledge.
func h1AndH2C() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}
