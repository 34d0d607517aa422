package ca

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ambit.dev/pkg/identity"
)

// Defaults of Config.
const (
	DefaultDefaultTTL     = 24 * time.Hour
	DefaultMaxTTL         = 7 * 24 * time.Hour
	DefaultServingTTL     = 24 * time.Hour
	DefaultReloadInterval = time.Minute
	DefaultServiceName    = "ambit-controlplane"
	DefaultClusterDomain  = "cluster.local"
	// DefaultNodeProxy is the ServiceAccount (namespace/name) of ztunnel,
	// the only caller allowed by default to request certificates on behalf
	// of other identities.
	DefaultNodeProxy = "ambit-system/ztunnel"
)

// Config configures the CA. Namespace is required; every other field has a
// default.
type Config struct {
	// TrustDomain is the only trust domain the CA signs for
	// (default cluster.local).
	TrustDomain string
	// Namespace is the control plane's namespace: where the root Secrets
	// (cacerts, ambit-ca-root) are read and the root ConfigMap
	// (ambit-root-cert) is written.
	Namespace string
	// NodeProxies lists the ServiceAccounts, as "namespace/name", whose pods
	// may request certificates on behalf of pods running on their node
	// (default [ambit-system/ztunnel]). Any other caller may only obtain its
	// own identity.
	NodeProxies []string
	// DefaultTTL is the leaf lifetime when a request asks for 0 (default 24h).
	DefaultTTL time.Duration
	// MaxTTL caps the requested lifetime (default 7 days). A leaf never
	// outlives the CA signing certificate either.
	MaxTTL time.Duration
	// ServiceName is the control plane's Service, used for the DNS names of
	// its serving certificate (default ambit-controlplane).
	ServiceName string
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string
	// ServingTTL is the lifetime of the control plane's own serving
	// certificate (default 24h).
	ServingTTL time.Duration
	// ReloadInterval is how often Run re-reads the root Secret to pick up a
	// rotated root (default 1m).
	ReloadInterval time.Duration
	// Registerer, if set, receives the CA's metrics (see metrics.go).
	Registerer prometheus.Registerer
	// Clock is the CA's notion of now (default time.Now).
	Clock func() time.Time
}

// ServiceAccountRef names a ServiceAccount.
type ServiceAccountRef struct {
	Namespace string
	Name      string
}

func (r ServiceAccountRef) String() string { return r.Namespace + "/" + r.Name }

// ParseServiceAccountRef parses "namespace/name".
func ParseServiceAccountRef(s string) (ServiceAccountRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return ServiceAccountRef{}, fmt.Errorf("ca: service account %q is not of the form namespace/name", s)
	}
	return ServiceAccountRef{Namespace: ns, Name: name}, nil
}

// withDefaults validates cfg and fills in defaults.
func (cfg Config) withDefaults() (Config, []ServiceAccountRef, error) {
	if cfg.Namespace == "" {
		return cfg, nil, errors.New("ca: Config.Namespace (the control plane namespace) is required")
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = identity.DefaultTrustDomain
	}
	// Validate the trust domain the way identities are validated.
	if _, err := identity.New(cfg.TrustDomain, "ns", "sa"); err != nil {
		return cfg, nil, fmt.Errorf("ca: bad trust domain: %w", err)
	}
	if len(cfg.NodeProxies) == 0 {
		cfg.NodeProxies = []string{DefaultNodeProxy}
	}
	proxies := make([]ServiceAccountRef, 0, len(cfg.NodeProxies))
	for _, p := range cfg.NodeProxies {
		ref, err := ParseServiceAccountRef(p)
		if err != nil {
			return cfg, nil, err
		}
		proxies = append(proxies, ref)
	}
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = DefaultDefaultTTL
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.DefaultTTL > cfg.MaxTTL {
		return cfg, nil, fmt.Errorf("ca: default TTL %s is above the maximum TTL %s", cfg.DefaultTTL, cfg.MaxTTL)
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = DefaultServiceName
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	if cfg.ServingTTL <= 0 {
		cfg.ServingTTL = DefaultServingTTL
	}
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return cfg, proxies, nil
}
