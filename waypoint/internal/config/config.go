// Package config parses ambit-waypoint's command line (and AMBIT_*
// environment variables, ambit.dev/pkg/flagenv) into one typed Config. It
// is the only package that reads the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"ambit.dev/pkg/flagenv"
	"ambit.dev/pkg/identity"
)

// DefaultControlPlaneName is the control plane Service's DNS name, which
// its serving certificate carries.
const DefaultControlPlaneName = "ambit-controlplane.ambit-system.svc"

// Config is the waypoint's configuration.
type Config struct {
	// XDSAddress is the control plane's delta xDS endpoint, host:port.
	XDSAddress string
	// XDSPlaintext dials XDSAddress without TLS (development only: the
	// control plane's --dev-plaintext-xds-addr).
	XDSPlaintext bool
	// CAAddress is the control plane CA's gRPC endpoint, host:port.
	CAAddress string
	// RootCertFile holds the mesh root(s), PEM: the control plane's TLS
	// certificate must chain to them, and they verify HBONE peers until
	// the CA's trust bundle is known.
	RootCertFile string
	// ControlPlaneName is the TLS server name of the control plane.
	ControlPlaneName string
	// TokenFile is the projected ServiceAccount token (audience ambit-ca),
	// re-read for every CA request.
	TokenFile   string
	TrustDomain string
	// ClusterDomain is the cluster's DNS suffix (node id).
	ClusterDomain string

	// PodName, PodNamespace, PodIPs and ServiceAccount describe the
	// waypoint pod (downward API). The first pod IP is in the node id.
	PodName        string
	PodNamespace   string
	PodIPs         []netip.Addr
	ServiceAccount string
	// Gateway is "<namespace>/<name>" of the Gateway served.
	Gateway string

	// HBONEAddr is the HBONE listener (port 15008).
	HBONEAddr string
	// ReadyAddr serves /healthz/ready; MetricsAddr serves /metrics;
	// AdminAddr (loopback only) serves /config_dump, /certs and pprof.
	ReadyAddr   string
	MetricsAddr string
	AdminAddr   string
	// CertTTL is the lifetime of the waypoint's certificate.
	CertTTL time.Duration
	// DrainPeriod bounds how long open streams may finish on SIGTERM.
	DrainPeriod time.Duration
	LogLevel    slog.Level
	LogFormat   string // json | text
	// SoftMemoryLimitMiB is the Go soft memory limit in MiB (0: none);
	// see SoftMemoryLimit.
	SoftMemoryLimitMiB int
}

// Identity returns the waypoint's SPIFFE ID.
func (c Config) Identity() (identity.ID, error) {
	return identity.New(c.TrustDomain, c.PodNamespace, c.ServiceAccount)
}

// FromOS parses os.Args[1:] and the process environment.
func FromOS() (Config, error) {
	return Parse(os.Args[1:], os.LookupEnv, os.Stderr)
}

// Parse parses args; a flag not on the command line takes its value from
// AMBIT_<FLAG> if lookupEnv finds it, else its default. Usage and flag
// errors go to out.
func Parse(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	var c Config
	var logLevel, podIPs string
	fs := flag.NewFlagSet("ambit-waypoint", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.XDSAddress, "xds-address", "", "control plane delta xDS endpoint host:port, e.g. ambit-controlplane.ambit-system.svc:15012 (required)")
	fs.BoolVar(&c.XDSPlaintext, "xds-plaintext", false, "development only: no TLS to --xds-address (the control plane's plaintext xDS port)")
	fs.StringVar(&c.CAAddress, "ca-address", "", "control plane CA endpoint host:port, e.g. ambit-controlplane.ambit-system.svc:15017 (required)")
	fs.StringVar(&c.RootCertFile, "root-cert-file", "", "PEM mesh root(s): the control plane's certificate and HBONE peers chain to them (required)")
	fs.StringVar(&c.ControlPlaneName, "control-plane-name", DefaultControlPlaneName, "TLS server name of the control plane")
	fs.StringVar(&c.TokenFile, "token-file", "", "projected ServiceAccount token with audience ambit-ca, sent to the CA (required)")
	fs.StringVar(&c.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of the mesh")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "DNS domain of the cluster")
	fs.StringVar(&c.PodName, "pod-name", "", "name of this pod (required; downward API metadata.name)")
	fs.StringVar(&c.PodNamespace, "pod-namespace", "", "namespace of this pod (required; downward API metadata.namespace)")
	fs.StringVar(&podIPs, "pod-ips", "", "IPs of this pod, comma-separated (required; downward API status.podIPs)")
	fs.StringVar(&c.ServiceAccount, "service-account", "", "service account of this pod (required; downward API spec.serviceAccountName)")
	fs.StringVar(&c.Gateway, "gateway", "", "<namespace>/<name> of the Gateway (class ambit-waypoint) this waypoint serves (required)")
	fs.StringVar(&c.HBONEAddr, "hbone-addr", ":15008", "HBONE listener")
	fs.StringVar(&c.ReadyAddr, "ready-addr", ":15021", "readiness endpoint /healthz/ready")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", ":15020", "Prometheus /metrics endpoint")
	fs.StringVar(&c.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin endpoint (/config_dump, /certs, pprof); loopback only")
	fs.DurationVar(&c.CertTTL, "cert-ttl", identity.DefaultCertTTL, "lifetime of the waypoint's certificate (rotated at half-life)")
	fs.DurationVar(&c.DrainPeriod, "drain-period", 5*time.Second, "on SIGTERM, how long open streams may continue before they are closed")
	fs.StringVar(&logLevel, "log-level", "info", "debug | info | warn | error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json | text")
	fs.IntVar(&c.SoftMemoryLimitMiB, "soft-memory-limit-mib", DefaultSoftMemoryLimitMiB, "Go soft memory limit in MiB (0: none, the default); GOMEMLIMIT wins, a smaller container memory limit lowers it to 90 % of that")
	if err := flagenv.Parse(fs, args, lookupEnv); err != nil {
		return Config{}, err
	}
	var errs []error
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel))
	}
	ips, err := ParseIPs(podIPs)
	if err != nil {
		errs = append(errs, fmt.Errorf("--pod-ips: %w", err))
	}
	c.PodIPs = ips
	errs = append(errs, c.Validate()...)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	return c, nil
}

// ParseIPs parses a comma-separated list of IP addresses (IPv4-mapped
// IPv6 addresses become IPv4).
func ParseIPs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		ip, err := netip.ParseAddr(f)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address", f)
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

// Validate returns every problem of c, each saying which flag to fix.
func (c Config) Validate() []error {
	var errs []error
	for _, r := range []struct{ flag, v string }{
		{"--xds-address", c.XDSAddress}, {"--ca-address", c.CAAddress}, {"--root-cert-file", c.RootCertFile},
		{"--token-file", c.TokenFile}, {"--pod-name", c.PodName}, {"--pod-namespace", c.PodNamespace},
		{"--service-account", c.ServiceAccount}, {"--gateway", c.Gateway}, {"--cluster-domain", c.ClusterDomain},
	} {
		if r.v == "" {
			errs = append(errs, fmt.Errorf("%s is required (or %s)", r.flag, flagenv.EnvName(strings.TrimPrefix(r.flag, "--"))))
		}
	}
	if len(c.PodIPs) == 0 {
		errs = append(errs, fmt.Errorf("--pod-ips is required (or %s): the pod's IPs, from the downward API", flagenv.EnvName("pod-ips")))
	}
	if c.ControlPlaneName == "" && !c.XDSPlaintext {
		errs = append(errs, errors.New("--control-plane-name must not be empty (the name on the control plane's certificate)"))
	}
	if c.Gateway != "" {
		ns, name, ok := strings.Cut(c.Gateway, "/")
		switch {
		case !ok || ns == "" || name == "" || strings.Contains(name, "/"):
			errs = append(errs, fmt.Errorf("--gateway %q must be <namespace>/<name>", c.Gateway))
		case c.PodNamespace != "" && ns != c.PodNamespace:
			errs = append(errs, fmt.Errorf("--gateway %q is not in the pod's namespace %q: a waypoint serves a Gateway of its own namespace", c.Gateway, c.PodNamespace))
		}
	}
	if c.PodNamespace != "" && c.ServiceAccount != "" {
		if _, err := c.Identity(); err != nil {
			errs = append(errs, fmt.Errorf("--trust-domain/--pod-namespace/--service-account: %w", err))
		}
	}
	if err := checkLoopback(c.AdminAddr); err != nil {
		errs = append(errs, fmt.Errorf("--admin-addr: %w", err))
	}
	if c.CertTTL < 2*time.Minute {
		errs = append(errs, fmt.Errorf("--cert-ttl %s is too short (at least 2m)", c.CertTTL))
	}
	if c.DrainPeriod <= 0 {
		errs = append(errs, fmt.Errorf("--drain-period %s must be positive", c.DrainPeriod))
	}
	if c.SoftMemoryLimitMiB < 0 {
		errs = append(errs, fmt.Errorf("--soft-memory-limit-mib %d must not be negative (0 disables it)", c.SoftMemoryLimitMiB))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format %q: want json or text", c.LogFormat))
	}
	return errs
}

// checkLoopback accepts host:port addresses whose host is a loopback IP
// or "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q must listen on a loopback address (127.0.0.1 or [::1]): the admin endpoint is not authenticated", addr)
	}
	return nil
}

// Logger returns the slog logger the configuration asks for, writing to w.
func (c Config) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
