// Package config parses ztunnel's command line (and AMBIT_* environment
// variables) into one typed Config. It is the only package that reads the
// environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/flagenv"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/admin"
)

// Config is ztunnel's configuration.
type Config struct {
	// NodeName is the node this ztunnel serves (required).
	NodeName string
	// WorkloadsFile is the YAML workloads file (file mode).
	WorkloadsFile string
	// CACert and CAKey are PEM files of the in-process CA (stand-alone and
	// test mode); every ztunnel of a mesh must share the pair.
	CACert, CAKey string
	// XDSAddress is the control plane's delta xDS endpoint, host:port (xDS
	// mode; exclusive with WorkloadsFile).
	XDSAddress string
	// CAAddress is the control plane CA's gRPC endpoint, host:port (xDS
	// mode; exclusive with CACert/CAKey).
	CAAddress string
	// RootCertFile holds the mesh root(s), PEM, that the control plane's
	// TLS certificate must chain to (xDS mode).
	RootCertFile string
	// TokenFile is the projected ServiceAccount token (audience ambit-ca)
	// sent to the CA, re-read on every request (xDS mode).
	TokenFile string
	// ControlPlaneName is the TLS server name the control plane's
	// certificate must carry.
	ControlPlaneName string
	// ZDSSocket is the node agent's ZDS socket (xDS mode only). Empty: no
	// node agent, no pod is captured. Set: ztunnel captures the pods the
	// agent hands it, and is ready only once it served the agent's first
	// snapshot.
	ZDSSocket   string
	TrustDomain string
	// AdminAddr must be loopback.
	AdminAddr   string
	MetricsAddr string
	ReadyAddr   string
	// DrainPeriod bounds how long open connections may finish after
	// SIGTERM.
	DrainPeriod time.Duration
	// CertTTL is the lifetime of workload certificates.
	CertTTL   time.Duration
	LogLevel  slog.Level
	LogFormat string // json | text
}

// DefaultControlPlaneName is the control plane Service's DNS name, which its
// serving certificate carries.
const DefaultControlPlaneName = "ambit-controlplane.ambit-system.svc"

// XDSMode reports whether the state and certificates come from the control
// plane (else from the workloads file and the local CA).
func (c Config) XDSMode() bool { return c.XDSAddress != "" }

// FromOS parses os.Args[1:] and the process environment.
func FromOS() (Config, error) {
	return Parse(os.Args[1:], os.LookupEnv, os.Stderr)
}

// Parse parses args. A flag not given on the command line takes its value
// from the environment variable flagenv.EnvName(flag) (AMBIT_<FLAG>) if lookupEnv finds it, else
// its default: the command line wins over the environment. Usage and
// errors of the flag set go to out.
func Parse(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	var c Config
	var logLevel string
	fs := flag.NewFlagSet("ztunnel", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.NodeName, "node-name", "", "name of the node this ztunnel serves (required)")
	fs.StringVar(&c.WorkloadsFile, "workloads-file", "", "YAML file of workloads and services (file mode)")
	fs.StringVar(&c.CACert, "ca-cert", "", "PEM certificate of the local CA that signs workload certificates (file mode)")
	fs.StringVar(&c.CAKey, "ca-key", "", "PEM private key of the local CA (file mode)")
	fs.StringVar(&c.XDSAddress, "xds-address", "", "control plane delta xDS endpoint host:port, e.g. 10.96.0.20:15012 (xDS mode)")
	fs.StringVar(&c.CAAddress, "ca-address", "", "control plane CA endpoint host:port, e.g. 10.96.0.20:15017 (xDS mode)")
	fs.StringVar(&c.RootCertFile, "root-cert-file", "", "PEM mesh root(s) the control plane's certificate must chain to (xDS mode)")
	fs.StringVar(&c.TokenFile, "token-file", "", "projected ServiceAccount token with audience ambit-ca, sent to the CA (xDS mode)")
	fs.StringVar(&c.ZDSSocket, "zds-socket", "", "node agent's ZDS socket, e.g. "+zdsv1alpha1.DefaultSocketPath+"; pods are captured as the agent hands them over (xDS mode; empty: none)")
	fs.StringVar(&c.ControlPlaneName, "control-plane-name", DefaultControlPlaneName, "TLS server name of the control plane (xDS mode)")
	fs.StringVar(&c.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain of the mesh")
	fs.StringVar(&c.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin endpoint (/config_dump, /certs, pprof); loopback only")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", ":15020", "Prometheus /metrics endpoint")
	fs.StringVar(&c.ReadyAddr, "ready-addr", ":15021", "readiness endpoint /healthz/ready")
	fs.DurationVar(&c.DrainPeriod, "drain-period", 30*time.Second, "on SIGTERM, how long open connections may continue before they are closed")
	fs.DurationVar(&c.CertTTL, "cert-ttl", identity.DefaultCertTTL, "lifetime of workload certificates (rotated at half-life)")
	fs.StringVar(&logLevel, "log-level", "info", "debug | info | warn | error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json | text")
	if err := flagenv.Parse(fs, args, lookupEnv); err != nil {
		return Config{}, err
	}
	var errs []error
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel))
	}
	errs = append(errs, c.validate()...)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	return c, nil
}

func (c Config) validate() []error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required (the Kubernetes node this ztunnel runs on)"))
	}
	fileMode := c.WorkloadsFile != "" || c.CACert != "" || c.CAKey != ""
	xdsMode := c.XDSAddress != "" || c.CAAddress != "" || c.RootCertFile != "" || c.TokenFile != ""
	if c.ZDSSocket != "" && !xdsMode {
		errs = append(errs, errors.New("--zds-socket needs xDS mode (--xds-address, --ca-address, --root-cert-file, --token-file): with --workloads-file pods are captured by the netns paths in the file, not by the node agent"))
	}
	switch {
	case fileMode && xdsMode:
		errs = append(errs, errors.New("file mode (--workloads-file, --ca-cert, --ca-key) and xDS mode (--xds-address, --ca-address, --root-cert-file, --token-file) are exclusive: pick one"))
	case xdsMode:
		if c.XDSAddress == "" || c.CAAddress == "" || c.RootCertFile == "" || c.TokenFile == "" {
			errs = append(errs, errors.New("xDS mode needs all of --xds-address, --ca-address, --root-cert-file and --token-file"))
		}
		if c.ControlPlaneName == "" {
			errs = append(errs, errors.New("--control-plane-name must not be empty in xDS mode (the name on the control plane's certificate)"))
		}
	default:
		if c.WorkloadsFile == "" {
			errs = append(errs, errors.New("--workloads-file is required in file mode (or use xDS mode: --xds-address, --ca-address, --root-cert-file, --token-file)"))
		}
		if c.CACert == "" || c.CAKey == "" {
			errs = append(errs, errors.New("--ca-cert and --ca-key are required in file mode (the in-process CA)"))
		}
	}
	if err := (identity.ID{TrustDomain: c.TrustDomain, Namespace: "x", ServiceAccount: "x"}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain: %w", err))
	}
	if err := admin.CheckLoopback(c.AdminAddr); err != nil {
		errs = append(errs, fmt.Errorf("--admin-addr: %w", err))
	}
	if c.DrainPeriod <= 0 {
		errs = append(errs, fmt.Errorf("--drain-period %s must be positive", c.DrainPeriod))
	}
	if c.CertTTL < 2*time.Minute {
		errs = append(errs, fmt.Errorf("--cert-ttl %s is too short (at least 2m)", c.CertTTL))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format %q: want json or text", c.LogFormat))
	}
	return errs
}

// Logger returns the slog logger the configuration asks for, writing to w.
func (c Config) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
