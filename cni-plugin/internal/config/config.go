// Package config parses ambit-node-agent's command line (and AMBIT_*
// environment variables) into one typed Config. It is the only package of
// the node agent that reads the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/pkg/flagenv"
	"ambit.dev/pkg/redirect"
)

// Defaults of the node agent's settings.
const (
	// DefaultZDSSocket is where ztunnel connects (ZDS, see
	// api/proto/ambit/zds/v1alpha1/zds.proto).
	DefaultZDSSocket = "/var/run/ambit/ztunnel.sock"
	// DefaultCNIAddTimeout bounds a CNI ADD of an enrolled pod: rules and
	// ztunnel's ack.
	DefaultCNIAddTimeout = 20 * time.Second
	// DefaultZDSRequestTimeout bounds the wait for ztunnel's answer to one
	// ZDS request; a ztunnel that does not answer in time is disconnected.
	DefaultZDSRequestTimeout = 10 * time.Second
	// DefaultReadyAddr serves /healthz/ready. The kubelet probes a
	// hostNetwork pod on the node's IP, so it listens on all interfaces.
	DefaultReadyAddr = ":15030"
	// DefaultMetricsAddr serves Prometheus /metrics, on loopback only: a
	// hostNetwork listener on all interfaces is reachable by anything that
	// reaches the node; set --metrics-addr=:15031 to let Prometheus scrape.
	DefaultMetricsAddr = "127.0.0.1:15031"
)

// Config is the node agent's configuration.
type Config struct {
	// NodeName is the node this agent serves (required; from the downward
	// API, spec.nodeName).
	NodeName string
	// Kubeconfig is a kubeconfig file; empty means in-cluster.
	Kubeconfig string
	// ZDSSocket is the SOCK_SEQPACKET socket ztunnel connects to.
	ZDSSocket string
	// CNISocket is the Unix socket the ambit-cni plugin calls.
	CNISocket string
	// CNIAddTimeout bounds a CNI ADD of an enrolled pod.
	CNIAddTimeout time.Duration
	// ZDSRequestTimeout bounds each ZDS request's answer.
	ZDSRequestTimeout time.Duration
	// IptablesBackend writes the in-pod rules (auto, nft or legacy).
	IptablesBackend redirect.Backend
	// MetricsAddr serves /metrics; ReadyAddr serves /healthz/ready.
	MetricsAddr, ReadyAddr string
	LogLevel               slog.Level
	LogFormat              string // json | text

	// CNI plugin installation (see internal/install).
	CNI CNIInstall
}

// CNIInstall says where and how the agent installs the ambit-cni plugin.
type CNIInstall struct {
	// Enabled installs the plugin (default true; off for nodes whose CNI
	// configuration is managed elsewhere).
	Enabled bool
	// BinDir and ConfDir are the node's CNI binary and configuration
	// directories as mounted in the agent's container; HostConfDir is
	// ConfDir as the container runtime on the node sees it.
	BinDir, ConfDir, HostConfDir string
	// PluginBinary is the ambit-cni binary in the agent's image.
	PluginBinary string
	// LookupBinary is the ambit-cni-lookup binary in the agent's image,
	// installed next to the plugin (it runs it when the agent is down).
	LookupBinary string
	// APIServerURL is how the plugin (on the node) reaches the API server
	// when the agent is down; default: the in-cluster service address.
	APIServerURL string
	// Namespace and DaemonSet name the agent's own DaemonSet: the plugin is
	// removed from the node on shutdown only when it is gone (uninstall),
	// never on a restart.
	Namespace, DaemonSet string
}

// FromOS parses os.Args[1:] and the process environment.
func FromOS() (Config, error) {
	return Parse(os.Args[1:], os.LookupEnv, os.Stderr)
}

// Parse parses args. A flag not given on the command line takes its value
// from the environment variable flagenv.EnvName(flag) (AMBIT_<FLAG>) if lookupEnv finds it, else
// its default: the command line wins over the environment. Usage and
// errors of the flag set go to out; flag.ErrHelp is returned for -h.
func Parse(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	var c Config
	var logLevel, backend string
	fs := flag.NewFlagSet("ambit-node-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.NodeName, "node-name", "", "name of the node this agent serves (required; set it from the downward API spec.nodeName)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "path of a kubeconfig file; empty means the in-cluster configuration")
	fs.StringVar(&c.ZDSSocket, "zds-socket", DefaultZDSSocket, "SOCK_SEQPACKET socket ztunnel connects to (ZDS)")
	fs.StringVar(&c.CNISocket, "cni-socket", cniapi.DefaultSocketPath, "Unix socket the ambit-cni plugin calls")
	fs.DurationVar(&c.CNIAddTimeout, "cni-add-timeout", DefaultCNIAddTimeout, "how long a CNI ADD of an enrolled pod may wait for its rules and ztunnel's ack before failing (the runtime retries)")
	fs.DurationVar(&c.ZDSRequestTimeout, "zds-request-timeout", DefaultZDSRequestTimeout, "how long ztunnel may take to answer one ZDS request before the agent drops its connection")
	fs.StringVar(&backend, "iptables-backend", "auto", "iptables implementation for the in-pod rules: auto (the iptables on PATH), nft or legacy")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", DefaultMetricsAddr, "Prometheus /metrics endpoint (loopback by default; :15031 exposes it on the node)")
	fs.StringVar(&c.ReadyAddr, "ready-addr", DefaultReadyAddr, "readiness endpoint /healthz/ready (the kubelet probes it on the node IP)")
	fs.StringVar(&logLevel, "log-level", "info", "debug | info | warn | error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json | text")
	fs.BoolVar(&c.CNI.Enabled, "install-cni", true, "install the ambit-cni plugin into the node's CNI configuration")
	fs.StringVar(&c.CNI.BinDir, "cni-bin-dir", "/opt/cni/bin", "the node's CNI binary directory, as mounted in this container")
	fs.StringVar(&c.CNI.ConfDir, "cni-conf-dir", "/etc/cni/net.d", "the node's CNI configuration directory, as mounted in this container")
	fs.StringVar(&c.CNI.HostConfDir, "host-cni-conf-dir", "/etc/cni/net.d", "the node's CNI configuration directory as the node sees it")
	fs.StringVar(&c.CNI.PluginBinary, "cni-plugin-binary", "/usr/local/bin/ambit-cni", "the ambit-cni binary to install")
	fs.StringVar(&c.CNI.LookupBinary, "cni-lookup-binary", "/usr/local/bin/ambit-cni-lookup", "the ambit-cni-lookup binary to install next to ambit-cni (its Kubernetes lookup when the agent is down)")
	fs.StringVar(&c.CNI.APIServerURL, "api-server-url", "", "API server URL the plugin uses when the agent is down (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)")
	fs.StringVar(&c.CNI.Namespace, "pod-namespace", "", "namespace of the agent's DaemonSet (from the downward API)")
	fs.StringVar(&c.CNI.DaemonSet, "daemonset-name", "ambit-node-agent", "name of the agent's DaemonSet; its deletion means uninstall")
	if err := flagenv.Parse(fs, args, lookupEnv); err != nil {
		return Config{}, err
	}
	var errs []error
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel))
	}
	switch backend {
	case "auto", "":
		c.IptablesBackend = redirect.BackendAuto
	case string(redirect.BackendNFT), string(redirect.BackendLegacy):
		c.IptablesBackend = redirect.Backend(backend)
	default:
		errs = append(errs, fmt.Errorf("--iptables-backend %q: want auto, nft or legacy", backend))
	}
	if c.CNI.Enabled && c.CNI.APIServerURL == "" && lookupEnv != nil {
		host, _ := lookupEnv("KUBERNETES_SERVICE_HOST")
		port, _ := lookupEnv("KUBERNETES_SERVICE_PORT")
		if host != "" && port != "" {
			c.CNI.APIServerURL = "https://" + net.JoinHostPort(host, port)
		}
	}
	errs = append(errs, c.validate()...)
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	return c, nil
}

// Validate reports every setting that is not usable.
func (c Config) Validate() error {
	if err := errors.Join(c.validate()...); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	return nil
}

func (c Config) validate() []error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required (the Kubernetes node this agent runs on; set AMBIT_NODE_NAME from the downward API spec.nodeName)"))
	}
	for _, s := range []struct{ flag, path string }{{"--zds-socket", c.ZDSSocket}, {"--cni-socket", c.CNISocket}} {
		if !filepath.IsAbs(s.path) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", s.flag, s.path))
		}
	}
	if c.ZDSSocket == c.CNISocket {
		errs = append(errs, fmt.Errorf("--zds-socket and --cni-socket are both %q", c.ZDSSocket))
	}
	if c.CNIAddTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--cni-add-timeout %s must be positive", c.CNIAddTimeout))
	}
	if c.ZDSRequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--zds-request-timeout %s must be positive", c.ZDSRequestTimeout))
	}
	if _, _, err := c.IptablesBackend.Binaries(redirect.IPv4); err != nil {
		errs = append(errs, fmt.Errorf("--iptables-backend: %w", err))
	}
	for _, a := range []struct{ flag, v string }{{"--metrics-addr", c.MetricsAddr}, {"--ready-addr", c.ReadyAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q is not host:port: %w", a.flag, a.v, err))
		}
	}
	if c.MetricsAddr == c.ReadyAddr && !strings.HasSuffix(c.MetricsAddr, ":0") {
		errs = append(errs, fmt.Errorf("--metrics-addr and --ready-addr are both %q", c.MetricsAddr))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("--log-format %q: want json or text", c.LogFormat))
	}
	if c.CNI.Enabled {
		for _, d := range []struct{ flag, path string }{
			{"--cni-bin-dir", c.CNI.BinDir}, {"--cni-conf-dir", c.CNI.ConfDir},
			{"--host-cni-conf-dir", c.CNI.HostConfDir}, {"--cni-plugin-binary", c.CNI.PluginBinary},
			{"--cni-lookup-binary", c.CNI.LookupBinary},
		} {
			if !filepath.IsAbs(d.path) {
				errs = append(errs, fmt.Errorf("%s %q must be an absolute path", d.flag, d.path))
			}
		}
		if c.CNI.APIServerURL == "" {
			errs = append(errs, errors.New("--api-server-url is required with --install-cni outside a cluster (KUBERNETES_SERVICE_HOST/PORT are not set)"))
		}
		if c.CNI.Namespace == "" || c.CNI.DaemonSet == "" {
			errs = append(errs, errors.New("--pod-namespace and --daemonset-name are required with --install-cni (set AMBIT_POD_NAMESPACE from the downward API metadata.namespace), so that uninstall can be told from a restart"))
		}
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
