// Package config is the one place ambit-controlplane reads its settings:
// command-line flags, parsed once into a typed Config.
package config

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"ambit.dev/pkg/identity"
)

// Leader election defaults (the values Kubernetes' own controllers use).
const (
	DefaultLeaseName     = "ambit-controlplane"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// DefaultWaypointImage is the waypoint image `make images` builds.
const DefaultWaypointImage = "localhost/ambit-waypoint:dev"

// EnvPodName is the environment variable holding the pod name (set from
// the downward API's metadata.name); it is the leader election identity.
const EnvPodName = "AMBIT_POD_NAME"

// Config is the configuration of ambit-controlplane.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file; empty means the
	// in-cluster configuration (the pod's ServiceAccount).
	Kubeconfig string
	// TrustDomain of workload identities and of the CA.
	TrustDomain string
	// ClusterDomain is the cluster's DNS domain (Service hostnames and the
	// serving certificate's names).
	ClusterDomain string
	// Namespace is the control plane's own namespace (CA Secrets, root
	// ConfigMap, serving certificate names).
	Namespace string
	// RootNamespace is the mesh's root namespace: an AuthorizationPolicy or
	// PeerAuthentication there without a selector applies to every workload
	// of the mesh, and one with a selector to the pods it selects in every
	// namespace. Empty means Namespace.
	RootNamespace string
	// ServiceName is the control plane's Service (serving certificate names).
	ServiceName string
	// XDSAddr is where workload discovery is served over TLS.
	XDSAddr string
	// DevPlaintextXDSAddr, if set, also serves workload discovery without
	// TLS there. For development only.
	DevPlaintextXDSAddr string
	// CAAddr is where the CA's CertificateService is served over TLS.
	CAAddr string
	// MonitoringAddr serves /metrics, /healthz and /readyz over HTTP.
	MonitoringAddr string
	// NodeProxies are the ServiceAccounts ("namespace/name") allowed to
	// request certificates on behalf of pods on their node.
	NodeProxies []string
	// ServingNames are extra DNS names or IPs for the serving certificate.
	ServingNames []string
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// LogFormat is "text" or "json".
	LogFormat string

	// WaypointImage is the ambit-waypoint image the waypoint controller
	// deploys for each waypoint Gateway, and WaypointImagePullPolicy its
	// pull policy (Always, IfNotPresent or Never).
	WaypointImage           string
	WaypointImagePullPolicy string
	// AutoWaypoints turns on waypoint auto-provisioning
	// (internal/autowaypoint): an L7 object attached to a Service without
	// a waypoint gets one.
	AutoWaypoints bool
	// WaypointXDSAddress is the control plane's xDS address (host:port) as
	// waypoint pods reach it; by default <service-name>.<namespace>.svc:15012.
	// Without cluster DNS, pass the Service's ClusterIP (the chart passes
	// $(AMBIT_CONTROLPLANE_SERVICE_HOST):15012).
	WaypointXDSAddress string

	// LeaderElect runs the writers (the trust-bundle ConfigMap) only on the
	// replica holding the Lease LeaderElectLeaseName in Namespace. Every
	// replica serves xDS and the CA either way. Without it, run exactly one
	// replica.
	LeaderElect bool
	// LeaderElectLeaseName is the name of that Lease.
	LeaderElectLeaseName string
	// LeaderElectIdentity is this replica's name in the Lease: the pod name
	// (EnvPodName), else the hostname plus a random suffix (so that two
	// processes on one machine never share an identity).
	LeaderElectIdentity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election
	// (defaults 15s, 10s, 2s; no flags).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Env is what Parse reads besides the flags: the environment and the
// hostname. Tests pass their own.
type Env struct {
	Getenv   func(string) string
	Hostname func() (string, error)
}

// OSEnv is the process's environment.
func OSEnv() Env { return Env{Getenv: os.Getenv, Hostname: os.Hostname} }

// identity is the leader election identity: the pod name, else
// hostname_<random>.
func (e Env) identity() (string, error) {
	if pod := strings.TrimSpace(e.Getenv(EnvPodName)); pod != "" {
		return pod, nil
	}
	host, err := e.Hostname()
	if err != nil || host == "" {
		return "", fmt.Errorf("config: no leader election identity: %s is not set and the hostname is unknown (%v); set %s from the downward API (metadata.name)", EnvPodName, err, EnvPodName)
	}
	return host + "_" + strings.ToLower(rand.Text()[:8]), nil
}

// Parse parses args (without the program name) and the process
// environment. Output (usage and errors) goes to out. flag.ErrHelp is
// returned for -h.
func Parse(args []string, out io.Writer) (Config, error) {
	return ParseEnv(args, out, OSEnv())
}

// ParseEnv is Parse reading env instead of the process environment.
func ParseEnv(args []string, out io.Writer, env Env) (Config, error) {
	c := Config{LeaseDuration: DefaultLeaseDuration, RenewDeadline: DefaultRenewDeadline, RetryPeriod: DefaultRetryPeriod}
	var nodeProxies, servingNames, logLevel string
	fs := flag.NewFlagSet("ambit-controlplane", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "path of a kubeconfig file; empty means in-cluster configuration")
	fs.StringVar(&c.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "trust domain of workload identities")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "DNS domain of the cluster (Service hostnames)")
	fs.StringVar(&c.Namespace, "namespace", "ambit-system", "namespace the control plane runs in (CA Secrets and root ConfigMap live here)")
	fs.StringVar(&c.RootNamespace, "root-namespace", "", "the mesh's root namespace: policies there apply mesh-wide (default: --namespace)")
	fs.StringVar(&c.ServiceName, "service-name", "ambit-controlplane", "the control plane's Service (names in its serving certificate)")
	fs.StringVar(&c.XDSAddr, "xds-addr", ":15012", "address of the workload-discovery (delta xDS) server, TLS")
	fs.StringVar(&c.DevPlaintextXDSAddr, "dev-plaintext-xds-addr", "", "if set (e.g. :15010), also serve workload discovery WITHOUT TLS here; development only")
	fs.StringVar(&c.CAAddr, "ca-addr", ":15017", "address of the CA (CertificateService) server, TLS")
	fs.StringVar(&c.MonitoringAddr, "monitoring-addr", ":15014", "address of the HTTP server for /metrics, /healthz and /readyz")
	fs.StringVar(&nodeProxies, "node-proxies", "ambit-system/ztunnel", "comma-separated ServiceAccounts (namespace/name) that may request certificates for pods on their node")
	fs.StringVar(&servingNames, "serving-names", "", "comma-separated extra DNS names or IPs for the serving certificate")
	fs.StringVar(&logLevel, "log-level", "info", "minimum log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.WaypointImage, "waypoint-image", DefaultWaypointImage, "image of the waypoint proxies deployed for Gateways of class ambit-waypoint")
	fs.StringVar(&c.WaypointImagePullPolicy, "waypoint-image-pull-policy", "IfNotPresent", "pull policy of --waypoint-image: Always, IfNotPresent or Never")
	fs.BoolVar(&c.AutoWaypoints, "auto-waypoints", true, "provision a waypoint for a namespace when an HTTPRoute, GRPCRoute or AuthorizationPolicy with HTTP rules attaches to a Service that has none (a namespace opts out with the label ambit.dev/auto-waypoint=disabled)")
	fs.StringVar(&c.WaypointXDSAddress, "waypoint-xds-address", "", "the control plane's xDS address (host:port) as waypoint pods reach it (default <service-name>.<namespace>.svc:15012)")
	fs.BoolVar(&c.LeaderElect, "leader-elect", true, "run the writers (trust-bundle ConfigMap) only on the replica holding a Lease; every replica serves xDS and the CA. Set false only with exactly one replica")
	fs.StringVar(&c.LeaderElectLeaseName, "leader-elect-lease-name", DefaultLeaseName, "name of the leader election Lease (coordination.k8s.io) in --namespace")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected arguments %q (all settings are flags)", fs.Args())
	}
	if c.RootNamespace == "" {
		c.RootNamespace = c.Namespace
	}
	if c.WaypointXDSAddress == "" {
		c.WaypointXDSAddress = net.JoinHostPort(c.ServiceName+"."+c.Namespace+".svc", "15012")
	}
	c.NodeProxies = splitList(nodeProxies)
	c.ServingNames = splitList(servingNames)
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return Config{}, fmt.Errorf("config: --log-level: %w", err)
	}
	if c.LeaderElect {
		id, err := env.identity()
		if err != nil {
			return Config{}, err
		}
		c.LeaderElectIdentity = id
	}
	return c, c.Validate()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Validate reports the first setting that is not usable.
func (c Config) Validate() error {
	if _, err := identity.New(c.TrustDomain, "ns", "sa"); err != nil {
		return fmt.Errorf("config: --trust-domain: %w", err)
	}
	if c.ClusterDomain == "" || strings.Contains(c.ClusterDomain, "/") {
		return fmt.Errorf("config: --cluster-domain %q is not a DNS domain", c.ClusterDomain)
	}
	if c.Namespace == "" {
		return errors.New("config: --namespace must not be empty")
	}
	if errs := validation.IsDNS1123Label(c.RootNamespace); c.RootNamespace != "" && len(errs) > 0 {
		return fmt.Errorf("config: --root-namespace %q is not a namespace name: %s", c.RootNamespace, strings.Join(errs, "; "))
	}
	if c.ServiceName == "" {
		return errors.New("config: --service-name must not be empty")
	}
	addrs := []struct{ flag, v string }{
		{"--xds-addr", c.XDSAddr}, {"--ca-addr", c.CAAddr}, {"--monitoring-addr", c.MonitoringAddr},
		{"--dev-plaintext-xds-addr", c.DevPlaintextXDSAddr},
	}
	seen := map[string]string{}
	for _, a := range addrs {
		if a.v == "" && a.flag == "--dev-plaintext-xds-addr" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("config: %s %q is not host:port: %w", a.flag, a.v, err)
		}
		if other, dup := seen[a.v]; dup && !strings.HasSuffix(a.v, ":0") {
			return fmt.Errorf("config: %s and %s are both %q", other, a.flag, a.v)
		}
		seen[a.v] = a.flag
	}
	if c.WaypointImage == "" {
		return errors.New("config: --waypoint-image must not be empty")
	}
	switch c.WaypointImagePullPolicy {
	case "Always", "IfNotPresent", "Never":
	default:
		return fmt.Errorf("config: --waypoint-image-pull-policy %q: want Always, IfNotPresent or Never", c.WaypointImagePullPolicy)
	}
	if _, _, err := net.SplitHostPort(c.WaypointXDSAddress); err != nil && c.WaypointXDSAddress != "" {
		return fmt.Errorf("config: --waypoint-xds-address %q is not host:port: %w", c.WaypointXDSAddress, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("config: --log-format %q: want text or json", c.LogFormat)
	}
	if c.LeaderElect {
		if errs := validation.IsDNS1123Subdomain(c.LeaderElectLeaseName); len(errs) > 0 {
			return fmt.Errorf("config: --leader-elect-lease-name %q is not a valid object name: %s", c.LeaderElectLeaseName, strings.Join(errs, "; "))
		}
		if c.LeaderElectIdentity == "" {
			return fmt.Errorf("config: no leader election identity; set %s from the downward API (metadata.name)", EnvPodName)
		}
	}
	return nil
}
