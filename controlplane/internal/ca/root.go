package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"ambit.dev/pkg/identity"
)

// Names of the root-of-trust objects in the control plane namespace, and
// the keys of the Secrets (Istio's plug-in CA layout, so a cluster moving
// from Istio can share one root).
const (
	// PluginSecretName is the plug-in CA Secret. When it exists it is used
	// and nothing is generated.
	PluginSecretName = "cacerts"
	// RootSecretName holds the self-signed root the CA generates on first
	// start when there is no plug-in Secret.
	RootSecretName = "ambit-ca-root"
	// RootConfigMapName is where the trust bundle is published (key
	// KeyRootCert), for clients that mount it to verify the control plane.
	RootConfigMapName = "ambit-root-cert"

	KeyCACert    = "ca-cert.pem"    // signing certificate
	KeyCAKey     = "ca-key.pem"     // its private key
	KeyRootCert  = "root-cert.pem"  // trust anchors (one or more roots)
	KeyCertChain = "cert-chain.pem" // signing certificate and intermediates (optional)

	// RootValidity is the lifetime of a generated root.
	RootValidity = identity.DefaultRootValidity

	fieldManager   = "ambit-controlplane"
	managedByLabel = "app.kubernetes.io/managed-by"
)

// errNoRoot is returned by loadAuthority(create=false) when neither Secret
// exists.
var errNoRoot = errors.New("no CA Secret")

// authority is the loaded signing material. It is immutable; a reload
// replaces it.
type authority struct {
	source string   // namespace/name of the Secret it came from
	digest [32]byte // of the Secret's CA keys, to detect changes
	ca     *identity.LocalCA
	// signCert and signKey sign leaves; intermediates are the certificates
	// between a leaf and the root, nearest first (signCert first unless it
	// is itself a root); chainRoot is the root they chain to.
	signCert      *x509.Certificate
	signKey       crypto.Signer
	intermediates []*x509.Certificate
	chainRoot     *x509.Certificate
	roots         []*x509.Certificate
	rootsPEM      []byte
}

// parseAuthority validates CA material in the cacerts layout: ca-cert.pem,
// ca-key.pem and root-cert.pem are required, cert-chain.pem is optional.
// Errors name the Secret, the key and the problem.
func parseAuthority(source string, data map[string][]byte, td string, maxTTL time.Duration, now time.Time) (*authority, error) {
	fail := func(key string, err error) error {
		return fmt.Errorf("ca: Secret %s: key %q: %w", source, key, err)
	}
	for _, k := range []string{KeyCACert, KeyCAKey, KeyRootCert} {
		if len(bytes.TrimSpace(data[k])) == 0 {
			return nil, fail(k, errors.New("missing or empty; the CA Secret needs ca-cert.pem, ca-key.pem and root-cert.pem (cert-chain.pem is optional)"))
		}
	}
	signCerts, err := identity.ParseCertsPEM(data[KeyCACert])
	if err != nil {
		return nil, fail(KeyCACert, err)
	}
	signCert := signCerts[0]
	if !now.Before(signCert.NotAfter) {
		return nil, fail(KeyCACert, fmt.Errorf("the CA certificate expired at %s; plug in a new one (see the root rotation steps in controlplane/README.md)", signCert.NotAfter.UTC().Format(time.RFC3339)))
	}
	signKey, err := identity.ParsePrivateKeyPEM(data[KeyCAKey])
	if err != nil {
		return nil, fail(KeyCAKey, err)
	}
	roots, err := identity.ParseCertsPEM(data[KeyRootCert])
	if err != nil {
		return nil, fail(KeyRootCert, err)
	}
	for _, r := range roots {
		if !r.IsCA || r.CheckSignatureFrom(r) != nil {
			return nil, fail(KeyRootCert, fmt.Errorf("certificate %q is not a self-signed CA certificate", r.Subject))
		}
	}
	chain := []*x509.Certificate{signCert}
	if len(bytes.TrimSpace(data[KeyCertChain])) > 0 {
		if chain, err = identity.ParseCertsPEM(data[KeyCertChain]); err != nil {
			return nil, fail(KeyCertChain, err)
		}
		if !chain[0].Equal(signCert) {
			return nil, fail(KeyCertChain, errors.New("the chain must start with the certificate of ca-cert.pem"))
		}
	}
	ca, err := identity.NewLocalCA(identity.LocalCAConfig{
		TrustDomain:    td,
		SigningCertPEM: data[KeyCACert],
		SigningKeyPEM:  data[KeyCAKey],
		CertChainPEM:   data[KeyCertChain],
		RootCertPEM:    data[KeyRootCert],
		MaxTTL:         maxTTL,
		Clock:          func() time.Time { return now },
	})
	if err != nil {
		return nil, fmt.Errorf("ca: Secret %s: %w", source, err)
	}
	a := &authority{
		source:   source,
		ca:       ca,
		signCert: signCert,
		signKey:  signKey,
		roots:    roots,
		rootsPEM: identity.EncodeCertsPEM(roots),
	}
	for _, c := range chain {
		if c.CheckSignatureFrom(c) != nil { // not self-signed
			a.intermediates = append(a.intermediates, c)
		}
	}
	last := signCert
	if len(a.intermediates) > 0 {
		last = a.intermediates[len(a.intermediates)-1]
	}
	for _, r := range roots {
		if last.Equal(r) || last.CheckSignatureFrom(r) == nil {
			a.chainRoot = r
			break
		}
	}
	if a.chainRoot == nil {
		return nil, fail(KeyRootCert, fmt.Errorf("no root signs %q, the top of the signing chain; check cert-chain.pem", last.Subject))
	}
	h := sha256.New()
	for _, k := range []string{KeyCACert, KeyCAKey, KeyRootCert, KeyCertChain} {
		fmt.Fprintf(h, "%s=%d:", k, len(data[k]))
		h.Write(data[k])
	}
	fmt.Fprint(h, source)
	copy(a.digest[:], h.Sum(nil))
	return a, nil
}

// loadAuthority reads the plug-in Secret, or else the generated root
// Secret. With create, a missing root Secret is generated and created; if
// another replica created it first (AlreadyExists), that one is read and
// used, so replicas starting together converge on one root.
//
// This Create is the one write every replica may make, without the leader
// Lease: it is a single atomic create-if-absent that the API server
// serializes, not a loop that keeps an object in shape, and a replica
// cannot serve the CA before it has a root (docs/adr/0002).
func (s *Server) loadAuthority(ctx context.Context, create bool) (*authority, error) {
	ns := s.cfg.Namespace
	secrets := s.kube.CoreV1().Secrets(ns)
	parse := func(sec *corev1.Secret) (*authority, error) {
		return parseAuthority(ns+"/"+sec.Name, sec.Data, s.cfg.TrustDomain, s.cfg.MaxTTL, s.cfg.Clock())
	}
	readErr := func(name string, err error) error {
		return fmt.Errorf("ca: reading Secret %s/%s (may the control plane get secrets in namespace %s?): %w", ns, name, ns, err)
	}

	sec, err := secrets.Get(ctx, PluginSecretName, metav1.GetOptions{})
	if err == nil {
		return parse(sec)
	}
	if !apierrors.IsNotFound(err) {
		return nil, readErr(PluginSecretName, err)
	}
	sec, err = secrets.Get(ctx, RootSecretName, metav1.GetOptions{})
	if err == nil {
		return parse(sec)
	}
	if !apierrors.IsNotFound(err) {
		return nil, readErr(RootSecretName, err)
	}
	if !create {
		return nil, fmt.Errorf("%w: neither Secret %s/%s nor %s/%s exists", errNoRoot, ns, PluginSecretName, ns, RootSecretName)
	}

	certPEM, keyPEM, err := identity.GenerateRoot(s.cfg.TrustDomain, s.cfg.Clock(), RootValidity)
	if err != nil {
		return nil, fmt.Errorf("ca: generating the mesh root: %w", err)
	}
	created, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      RootSecretName,
			Namespace: ns,
			Labels:    map[string]string{managedByLabel: fieldManager},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeyCACert: certPEM, KeyCAKey: keyPEM, KeyRootCert: certPEM},
	}, metav1.CreateOptions{FieldManager: fieldManager})
	switch {
	case err == nil:
		s.log.Info("generated a new self-signed mesh root", "secret", ns+"/"+RootSecretName, "trustDomain", s.cfg.TrustDomain)
		return parse(created)
	case apierrors.IsAlreadyExists(err):
		// Another replica won the race: use its root.
		sec, err = secrets.Get(ctx, RootSecretName, metav1.GetOptions{})
		if err != nil {
			return nil, readErr(RootSecretName, err)
		}
		s.log.Info("another replica created the mesh root first; using it", "secret", ns+"/"+RootSecretName)
		return parse(sec)
	default:
		return nil, fmt.Errorf("ca: creating Secret %s/%s (may the control plane create secrets in namespace %s?): %w", ns, RootSecretName, ns, err)
	}
}

// Retry delays of PublishTrustBundle after a failed write: doubling from
// publishRetryBase, at most ReloadInterval.
const publishRetryBase = time.Second

// PublishTrustBundle keeps the ConfigMap ambit-root-cert equal to the trust
// bundle (root-cert.pem) of the loaded root, until ctx ends; then it
// returns nil. It waits for Run to load the root, re-reads the CA Secret,
// writes at once, again whenever the root changes, and every
// ReloadInterval to repair an edited or deleted ConfigMap. A failed write
// is logged and retried with backoff.
//
// It is a leader-only writer (internal/leader): it runs on one replica at a
// time and writes nothing once ctx has ended.
func (s *Server) PublishTrustBundle(ctx context.Context) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	// This replica may be taking over from a leader that saw a newer CA
	// Secret than its own last reload: re-read it before the first write,
	// so that a handover never puts an older bundle back.
	if err := s.reload(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("re-reading the CA Secret before publishing failed; publishing the bundle loaded last", "err", err)
	}
	var published [32]byte // digest of the authority last written
	var retry time.Duration
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.changed:
		case <-t.C:
		}
		if ctx.Err() != nil {
			// Leadership (or the process) ended while waking up: another
			// replica may be the writer now.
			return nil
		}
		a := s.authority.Load()
		next := s.cfg.ReloadInterval
		if err := s.publishRoots(ctx, a); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			retry = min(max(2*retry, publishRetryBase), s.cfg.ReloadInterval)
			next = retry
			s.log.Error("publishing the trust bundle failed; retrying", "err", err, "retryIn", retry)
		} else {
			retry = 0
			if a.digest != published {
				published = a.digest
				s.log.Info("published the trust bundle", "configMap", s.cfg.Namespace+"/"+RootConfigMapName, "source", a.source, "roots", len(a.roots))
			}
		}
		t.Reset(next)
	}
}

// publishRoots writes the trust bundle to the ConfigMap ambit-root-cert
// with server-side apply. Only the leader calls it (PublishTrustBundle).
func (s *Server) publishRoots(ctx context.Context, a *authority) error {
	ns := s.cfg.Namespace
	cm := corev1ac.ConfigMap(RootConfigMapName, ns).
		WithLabels(map[string]string{managedByLabel: fieldManager}).
		WithData(map[string]string{KeyRootCert: string(a.rootsPEM)})
	if _, err := s.kube.CoreV1().ConfigMaps(ns).Apply(ctx, cm, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
		return fmt.Errorf("ca: publishing the trust bundle to ConfigMap %s/%s (may the control plane patch configmaps in namespace %s?): %w", ns, RootConfigMapName, ns, err)
	}
	return nil
}
