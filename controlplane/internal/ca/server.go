// Package ca is the mesh certificate authority of the control plane: the
// gRPC CertificateService (api/ca/v1alpha1) that signs X.509-SVIDs for
// ztunnels and waypoints, and the root of trust behind it.
//
// A call is authenticated with the caller's ServiceAccount token
// (TokenReview, audience ambit-ca, authn.go) and authorized by Authorize
// (authz.go): a caller gets its own identity; a node proxy (ztunnel) gets
// the identity of a pod only if that pod runs on the proxy's node. The
// signing material comes from the plug-in Secret cacerts or the generated
// Secret ambit-ca-root (root.go).
package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	"ambit.dev/controlplane/internal/servingcert"
	"ambit.dev/pkg/identity"
)

// ErrNotReady is returned before Run has loaded the root of trust.
var ErrNotReady = errors.New("ca: the CA is not ready (root of trust not loaded yet)")

// Server is the mesh CA. Build it with New, serve it with Register, and
// start it with Run.
type Server struct {
	cav1alpha1.UnimplementedCertificateServiceServer

	cfg     Config
	policy  Policy
	kube    kubernetes.Interface
	pods    PodLookup
	log     *slog.Logger
	metrics *metrics

	started   atomic.Bool
	authority atomic.Pointer[authority]
	ready     chan struct{}
	// changed wakes PublishTrustBundle when the authority changes.
	changed chan struct{}
	// reloadMu serializes reloads (Run's timer, PublishTrustBundle's
	// takeover), so a later read of the Secret is never replaced by an
	// earlier one.
	reloadMu sync.Mutex
}

var _ servingcert.Issuer = (*Server)(nil)

// New validates cfg and returns a CA server. It does no I/O; Run loads the
// root of trust.
func New(cfg Config, kube kubernetes.Interface, pods PodLookup, log *slog.Logger) (*Server, error) {
	cfg, proxies, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if kube == nil || pods == nil || log == nil {
		return nil, errors.New("ca: New needs a Kubernetes client, a PodLookup and a logger")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:     cfg,
		policy:  Policy{TrustDomain: cfg.TrustDomain, NodeProxies: proxies},
		kube:    kube,
		pods:    pods,
		log:     log,
		metrics: m,
		ready:   make(chan struct{}),
		changed: make(chan struct{}, 1),
	}, nil
}

// Register registers the CertificateService on r (a *grpc.Server).
func (s *Server) Register(r grpc.ServiceRegistrar) {
	cav1alpha1.RegisterCertificateServiceServer(r, s)
}

// Run loads the root of trust (the plug-in Secret cacerts, else the
// generated Secret ambit-ca-root, created if absent) and becomes ready. It
// then re-reads the Secret every ReloadInterval to pick up a rotated root,
// until ctx ends (then it returns nil). A missing permission or a malformed
// Secret at start is returned as an error.
//
// Run runs on every replica. Its only write is the one atomic Create of
// ambit-ca-root when neither Secret exists (see loadAuthority); the trust
// bundle ConfigMap is written by PublishTrustBundle, on the leader only.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("ca: Run called twice")
	}
	a, err := s.loadAuthority(ctx, true)
	if err != nil {
		return err
	}
	s.setAuthority(a)
	close(s.ready)
	s.log.Info("CA ready", "source", a.source, "trustDomain", s.cfg.TrustDomain,
		"roots", len(a.roots), "signingCertNotAfter", a.signCert.NotAfter)

	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.reload(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("reloading the CA root failed; still signing with the previous one", "err", err)
			}
		}
	}
}

// reload re-reads the CA Secret and switches to it if it changed. A
// malformed or missing Secret leaves the current authority in place. It
// only reads.
func (s *Server) reload(ctx context.Context) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	a, err := s.loadAuthority(ctx, false)
	if err != nil {
		return err
	}
	old := s.authority.Load()
	if old != nil && old.digest == a.digest {
		return nil
	}
	s.setAuthority(a)
	s.log.Info("CA root of trust changed", "source", a.source, "roots", len(a.roots), "signingCertNotAfter", a.signCert.NotAfter)
	return nil
}

// setAuthority switches to a and wakes PublishTrustBundle.
func (s *Server) setAuthority(a *authority) {
	s.authority.Store(a)
	select {
	case s.changed <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Ready is closed once Run has loaded the root of trust.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Roots returns the mesh trust anchors, or nil before the CA is ready.
func (s *Server) Roots() []*x509.Certificate {
	a := s.authority.Load()
	if a == nil {
		return nil
	}
	return append([]*x509.Certificate(nil), a.roots...)
}

// ServingCertificate issues the control plane's own TLS serving
// certificate, valid for ServingTTL: DNS names
// <ServiceName>.<Namespace>.svc and ….svc.<ClusterDomain>, plus names (DNS
// names, or IP addresses which become IP SANs). It returns ErrNotReady
// before Run has loaded the root.
func (s *Server) ServingCertificate(names ...string) (*tls.Certificate, error) {
	a := s.authority.Load()
	if a == nil {
		return nil, ErrNotReady
	}
	dns, ips, err := servingcert.Names(s.cfg.ServiceName, s.cfg.Namespace, s.cfg.ClusterDomain, names...)
	if err != nil {
		return nil, err
	}
	nb, na := servingcert.Validity(s.cfg.Clock(), s.cfg.ServingTTL)
	return servingcert.Issue(a.signCert, a.signKey, a.intermediates, servingcert.Request{
		DNSNames: dns, IPs: ips, NotBefore: nb, NotAfter: na,
	})
}

// CreateCertificate implements CertificateService: authenticate, validate
// the CSR, authorize, sign.
func (s *Server) CreateCertificate(ctx context.Context, req *cav1alpha1.CreateCertificateRequest) (*cav1alpha1.CreateCertificateResponse, error) {
	resp, result, err := s.createCertificate(ctx, req)
	s.metrics.csr.WithLabelValues(result).Inc()
	return resp, err
}

func (s *Server) createCertificate(ctx context.Context, req *cav1alpha1.CreateCertificateRequest) (*cav1alpha1.CreateCertificateResponse, string, error) {
	a := s.authority.Load()
	if a == nil {
		return nil, ResultError, status.Error(codes.Unavailable, ErrNotReady.Error()+"; retry with backoff")
	}
	caller, err := s.authenticate(ctx)
	if err != nil {
		return nil, resultFor(err), statusFor(err)
	}
	log := s.log.With("caller", caller.String())

	invalid := func(format string, args ...any) (*cav1alpha1.CreateCertificateResponse, string, error) {
		err := fmt.Errorf("%w: "+format, append([]any{identity.ErrCSRRejected}, args...)...)
		log.Info("CSR refused", "err", err)
		return nil, ResultInvalid, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetValidityDurationSeconds() < 0 {
		return invalid("validity_duration_seconds is %d; it must be 0 (the default, %s) or positive", req.GetValidityDurationSeconds(), s.cfg.DefaultTTL)
	}
	_, id, err := identity.ParseCSR([]byte(req.GetCsr()))
	if err != nil {
		log.Info("CSR refused", "err", err)
		return nil, ResultInvalid, status.Error(codes.InvalidArgument, err.Error())
	}
	if ri := req.GetRequestedIdentity(); ri != "" && ri != id.String() {
		return invalid("requested_identity %q differs from the CSR's URI SAN %q", ri, id.String())
	}

	if id.TrustDomain == s.policy.TrustDomain && !(caller.Namespace == id.Namespace && caller.ServiceAccount == id.ServiceAccount) && s.policy.IsNodeProxy(caller) {
		if caller, err = s.resolveNode(caller); err != nil {
			log.Info("CSR refused", "identity", id.String(), "err", err)
			return nil, ResultDenied, statusFor(err)
		}
	}
	var podsOnNode []PodRef
	if caller.NodeName != "" {
		podsOnNode = s.pods.PodsOnNode(caller.NodeName)
	}
	if err := Authorize(s.policy, caller, id, podsOnNode); err != nil {
		log.Info("CSR refused", "identity", id.String(), "err", err)
		return nil, resultFor(err), statusFor(err)
	}

	ttl := s.cfg.DefaultTTL
	if v := req.GetValidityDurationSeconds(); v > 0 {
		ttl = time.Duration(min(v, int64(s.cfg.MaxTTL/time.Second))) * time.Second
	}
	chain, err := a.ca.CreateCertificate(ctx, []byte(req.GetCsr()), ttl)
	if err != nil {
		log.Error("signing failed", "identity", id.String(), "err", err)
		return nil, ResultError, status.Errorf(codes.Internal, "ca: signing %s failed: %v", id, err)
	}
	out := make([]string, 0, len(chain)+1)
	for _, c := range append(chain, a.chainRoot) {
		out = append(out, string(identity.EncodeCertsPEM([]*x509.Certificate{c})))
	}
	log.Info("signed certificate", "identity", id.String(), "serial", chain[0].SerialNumber.Text(16), "notAfter", chain[0].NotAfter)
	return &cav1alpha1.CreateCertificateResponse{CertChain: out}, ResultSigned, nil
}

// GetTrustBundle implements CertificateService. It needs a valid token but
// no particular identity.
func (s *Server) GetTrustBundle(ctx context.Context, _ *cav1alpha1.GetTrustBundleRequest) (*cav1alpha1.GetTrustBundleResponse, error) {
	a := s.authority.Load()
	if a == nil {
		return nil, status.Error(codes.Unavailable, ErrNotReady.Error()+"; retry with backoff")
	}
	if _, err := s.authenticate(ctx); err != nil {
		return nil, statusFor(err)
	}
	resp := &cav1alpha1.GetTrustBundleResponse{TrustDomain: s.cfg.TrustDomain}
	for _, r := range a.roots {
		resp.Roots = append(resp.Roots, string(identity.EncodeCertsPEM([]*x509.Certificate{r})))
	}
	return resp, nil
}

// authenticate reviews the bearer token of the incoming call.
func (s *Server) authenticate(ctx context.Context) (Caller, error) {
	tok, err := bearerToken(ctx)
	if err != nil {
		return Caller{}, err
	}
	c, err := reviewToken(ctx, s.kube, tok)
	if err != nil {
		s.log.Info("caller not authenticated", "err", err)
	}
	return c, err
}

// resolveNode finds the node of the pod the caller's token is bound to.
func (s *Server) resolveNode(c Caller) (Caller, error) {
	if c.PodName == "" {
		// Authorize explains: the node stays unknown.
		return c, nil
	}
	pod, ok := s.pods.PodByName(c.Namespace, c.PodName)
	switch {
	case !ok:
		return c, fmt.Errorf("%w: the pod %s/%s that the token of %s is bound to is unknown to the control plane (it may have been deleted, or the pod cache is not synced yet; retry)",
			ErrPermissionDenied, c.Namespace, c.PodName, c)
	case c.PodUID != "" && pod.UID != c.PodUID:
		return c, fmt.Errorf("%w: the token of %s is bound to pod UID %s, but pod %s/%s now has UID %s (a token of a deleted pod?)",
			ErrPermissionDenied, c, c.PodUID, c.Namespace, c.PodName, pod.UID)
	case pod.ServiceAccount != "" && pod.ServiceAccount != c.ServiceAccount:
		return c, fmt.Errorf("%w: pod %s/%s runs as service account %s, not %s as its token says",
			ErrPermissionDenied, c.Namespace, c.PodName, pod.ServiceAccount, c.ServiceAccount)
	case pod.NodeName == "":
		return c, fmt.Errorf("%w: the pod %s/%s of %s is not scheduled on a node", ErrPermissionDenied, c.Namespace, c.PodName, c)
	}
	c.NodeName = pod.NodeName
	return c, nil
}

// statusFor maps an error to its gRPC status.
func statusFor(err error) error {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, identity.ErrCSRRejected):
		return status.Error(codes.InvalidArgument, err.Error())
	default:
		return status.Error(codes.Unavailable, "ca: "+err.Error())
	}
}

// resultFor maps an error to the result label of ambit_ca_csr_total.
func resultFor(err error) string {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return ResultUnauthenticated
	case errors.Is(err, ErrPermissionDenied):
		return ResultDenied
	case errors.Is(err, identity.ErrCSRRejected):
		return ResultInvalid
	default:
		return ResultError
	}
}
