// Package install puts ambit-cni on a node and takes it off: the plugin
// binary and its Kubernetes lookup program (ambit-cni-lookup) in the CNI
// bin dir, the kubeconfig the plugin uses when the node
// agent is unreachable, and the plugin's entry at the end of the node's
// primary CNI configuration list. The node agent calls it.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/cni-plugin/internal/plugin"
)

// Defaults of Config.
const (
	DefaultCNIBinDir      = "/opt/cni/bin"
	DefaultCNIConfDir     = "/etc/cni/net.d"
	DefaultKubeconfigName = "ZZZ-ambit-cni-kubeconfig"
	DefaultTokenFile      = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile         = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	DefaultInterval       = 5 * time.Second
)

// ErrNoPrimaryConfig is returned (wrapped) while the CNI conf dir has no
// network configuration to chain ambit-cni into: the primary CNI is not
// installed yet. Run keeps trying.
var ErrNoPrimaryConfig = errors.New("no primary CNI network configuration (*.conflist, *.conf, *.json) yet")

// Config says where the plugin goes and how it is configured. Paths are as
// the installer (the node agent's container) sees them, except
// HostCNIConfDir and AgentSocket, which the plugin sees on the host.
type Config struct {
	// CNIBinDir receives the plugin binary (default /opt/cni/bin).
	CNIBinDir string
	// CNIConfDir holds the node's network configurations (default
	// /etc/cni/net.d).
	CNIConfDir string
	// HostCNIConfDir is CNIConfDir as the container runtime on the host sees
	// it, used for the kubeconfig path in the plugin entry; empty means
	// CNIConfDir.
	HostCNIConfDir string
	// PluginBinary is the ambit-cni binary to copy (required).
	PluginBinary string
	// LookupBinary is the ambit-cni-lookup binary to copy next to it
	// (required): the plugin runs it when the agent is unreachable.
	LookupBinary string
	// KubeconfigName is the kubeconfig's file name in CNIConfDir (default
	// ZZZ-ambit-cni-kubeconfig; it must not end in .conf, .conflist or
	// .json, or the runtime would read it as a network).
	KubeconfigName string
	// TokenFile and CAFile are the service account token and the API
	// server's CA bundle written into the kubeconfig (defaults: the pod's
	// service account files). The token is re-read by Run.
	TokenFile, CAFile string
	// APIServerURL is the API server as the host reaches it (required),
	// e.g. https://10.96.0.1:443.
	APIServerURL string
	// AgentSocket is the agent's socket on the host (default
	// cniapi.DefaultSocketPath).
	AgentSocket string
	// AgentTimeout bounds the plugin's ADD call (default
	// plugin.DefaultAgentTimeout).
	AgentTimeout time.Duration
	// ExcludeNamespaces are passed through by the plugin; nil means
	// plugin.DefaultExcludeNamespaces, an empty slice none.
	ExcludeNamespaces []string
	// LogLevel of the plugin: debug, info, warn, error (default info).
	LogLevel string
	// Interval between Run's checks (default 5s).
	Interval time.Duration
}

// Installer installs ambit-cni on the node.
type Installer struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex
}

// New validates cfg, fills its defaults and returns an installer.
func New(cfg Config, log *slog.Logger) (*Installer, error) {
	if cfg.CNIBinDir == "" {
		cfg.CNIBinDir = DefaultCNIBinDir
	}
	if cfg.CNIConfDir == "" {
		cfg.CNIConfDir = DefaultCNIConfDir
	}
	if cfg.HostCNIConfDir == "" {
		cfg.HostCNIConfDir = cfg.CNIConfDir
	}
	if cfg.KubeconfigName == "" {
		cfg.KubeconfigName = DefaultKubeconfigName
	}
	if cfg.TokenFile == "" {
		cfg.TokenFile = DefaultTokenFile
	}
	if cfg.CAFile == "" {
		cfg.CAFile = DefaultCAFile
	}
	if cfg.AgentSocket == "" {
		cfg.AgentSocket = cniapi.DefaultSocketPath
	}
	if cfg.AgentTimeout == 0 {
		cfg.AgentTimeout = plugin.DefaultAgentTimeout
	}
	if cfg.ExcludeNamespaces == nil {
		cfg.ExcludeNamespaces = plugin.DefaultExcludeNamespaces
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	switch {
	case cfg.PluginBinary == "":
		return nil, errors.New("install: no ambit-cni binary to install (Config.PluginBinary)")
	case cfg.LookupBinary == "":
		return nil, errors.New("install: no ambit-cni-lookup binary to install (Config.LookupBinary)")
	case cfg.APIServerURL == "":
		return nil, errors.New("install: no API server URL for the plugin's kubeconfig (Config.APIServerURL)")
	case strings.ContainsRune(cfg.KubeconfigName, '/'), strings.HasPrefix(cfg.KubeconfigName, "."):
		return nil, fmt.Errorf("install: kubeconfig name %q must be a plain, non-hidden file name", cfg.KubeconfigName)
	case slices.Contains(ConfigExtensions, filepath.Ext(cfg.KubeconfigName)):
		return nil, fmt.Errorf("install: kubeconfig name %q must not end in %v: the runtime would read it as a network configuration", cfg.KubeconfigName, ConfigExtensions)
	case cfg.AgentTimeout < plugin.MinAgentTimeout || cfg.AgentTimeout > plugin.MaxAgentTimeout:
		return nil, fmt.Errorf("install: agent timeout %s is outside %s..%s", cfg.AgentTimeout, plugin.MinAgentTimeout, plugin.MaxAgentTimeout)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Installer{cfg: cfg, log: log.With("component", "cni-install")}, nil
}

// Config returns the configuration with its defaults filled in.
func (i *Installer) Config() Config { return i.cfg }

// KubeconfigPath is where the kubeconfig is written.
func (i *Installer) KubeconfigPath() string {
	return filepath.Join(i.cfg.CNIConfDir, i.cfg.KubeconfigName)
}

// BinaryPath is where the plugin binary is written.
func (i *Installer) BinaryPath() string {
	return filepath.Join(i.cfg.CNIBinDir, plugin.PluginType)
}

// LookupBinaryPath is where the lookup binary is written: next to the
// plugin, where the plugin looks for it.
func (i *Installer) LookupBinaryPath() string {
	return filepath.Join(i.cfg.CNIBinDir, plugin.LookupBinary)
}

// Entry is the plugin entry the installer chains into the primary
// configuration.
func (i *Installer) Entry() Entry {
	return Entry{
		Type:              plugin.PluginType,
		AgentSocket:       i.cfg.AgentSocket,
		AgentTimeout:      i.cfg.AgentTimeout.String(),
		Kubeconfig:        filepath.Join(i.cfg.HostCNIConfDir, i.cfg.KubeconfigName),
		ExcludeNamespaces: i.cfg.ExcludeNamespaces,
		LogLevel:          i.cfg.LogLevel,
	}
}

// Install copies the binaries (always, so an upgrade replaces them), writes
// the kubeconfig and chains the plugin into the primary configuration.
// While there is no primary configuration it returns an error wrapping
// ErrNoPrimaryConfig, with the binaries and kubeconfig in place; Run inserts
// the entry once the primary CNI has written its configuration.
func (i *Installer) Install(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return i.reconcile(true)
}

// Run keeps the plugin installed until ctx ends: every Interval it
// re-inserts the entry if the primary CNI rewrote its configuration,
// rewrites the kubeconfig if the token (or CA) changed, and restores a
// missing binary. Errors are logged, not returned; Run returns nil when ctx
// ends and has then stopped everything it started.
func (i *Installer) Run(ctx context.Context) error {
	t := time.NewTicker(i.cfg.Interval)
	defer t.Stop()
	var lastErr string
	for {
		err := i.reconcile(false)
		switch {
		case err != nil && err.Error() != lastErr:
			i.log.Warn("cannot keep ambit-cni installed", "error", err)
			lastErr = err.Error()
		case err == nil && lastErr != "":
			i.log.Info("ambit-cni is installed again")
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Uninstall removes the plugin entry from every network configuration in
// the conf dir, then the kubeconfig and the binaries. It does what it can and
// returns every error.
func (i *Installer) Uninstall() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	var errs []error
	names, err := readDirNames(i.cfg.CNIConfDir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if name == i.cfg.KubeconfigName || strings.HasPrefix(name, ".") || !slices.Contains(ConfigExtensions, filepath.Ext(name)) {
			continue
		}
		path := filepath.Join(i.cfg.CNIConfDir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("install: reading %s: %w", path, err))
			continue
		}
		out, changed, err := RemoveEntry(data)
		if err != nil {
			if HasEntry(data) {
				errs = append(errs, fmt.Errorf("install: removing ambit-cni from %s: %w", path, err))
			}
			continue
		}
		if !changed {
			continue
		}
		if err := writeFileAtomic(path, out, fileMode(path, 0o644)); err != nil {
			errs = append(errs, err)
			continue
		}
		i.log.Info("removed ambit-cni from the CNI configuration", "file", path)
	}
	for _, path := range []string{i.KubeconfigPath(), i.BinaryPath(), i.LookupBinaryPath()} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("install: %w", err))
		}
	}
	return errors.Join(errs...)
}

// reconcile makes the node match: the lookup binary, then the plugin
// binary (which runs the lookup binary), then kubeconfig, then entry (the
// entry last: once it is there the runtime runs the plugin for every pod).
func (i *Installer) reconcile(forceBinary bool) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.ensureBinary(plugin.LookupBinary, i.cfg.LookupBinary, i.LookupBinaryPath(), forceBinary); err != nil {
		return err
	}
	if err := i.ensureBinary(plugin.PluginType, i.cfg.PluginBinary, i.BinaryPath(), forceBinary); err != nil {
		return err
	}
	kubeErr := i.ensureKubeconfig()
	return errors.Join(kubeErr, i.ensureConfList())
}

// ensureBinary copies the binary name from srcPath to dst, atomically, when
// force is set or dst is missing, of another size or not executable.
func (i *Installer) ensureBinary(name, srcPath, dst string, force bool) error {
	src, err := os.Open(srcPath)
	if err != nil {
		return fmt.Errorf("install: opening the %s binary to install: %w", name, err)
	}
	defer src.Close()
	srcInfo, err := src.Stat()
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if !force {
		if info, err := os.Stat(dst); err == nil && info.Size() == srcInfo.Size() && info.Mode().Perm()&0o111 != 0 {
			return nil
		}
	}
	if err := writeAtomic(dst, 0o755, func(w io.Writer) error { _, err := io.Copy(w, src); return err }); err != nil {
		return fmt.Errorf("%w (is the CNI bin dir %s mounted read-write?)", err, i.cfg.CNIBinDir)
	}
	i.log.Info("installed a binary", "binary", name, "path", dst)
	return nil
}

// Kubeconfig returns the plugin's kubeconfig for server, with the CA
// bundle and bearer token given.
func Kubeconfig(server string, ca, token []byte) ([]byte, error) {
	const name = plugin.PluginType
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: strings.TrimSpace(string(token))}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return clientcmd.Write(*cfg)
}

func (i *Installer) ensureKubeconfig() error {
	token, err := os.ReadFile(i.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("install: reading the service account token for the plugin's kubeconfig: %w", err)
	}
	if len(bytes.TrimSpace(token)) == 0 {
		return fmt.Errorf("install: the service account token file %s is empty", i.cfg.TokenFile)
	}
	ca, err := os.ReadFile(i.cfg.CAFile)
	if err != nil {
		return fmt.Errorf("install: reading the API server CA for the plugin's kubeconfig: %w", err)
	}
	want, err := Kubeconfig(i.cfg.APIServerURL, ca, token)
	if err != nil {
		return fmt.Errorf("install: building the plugin's kubeconfig: %w", err)
	}
	path := i.KubeconfigPath()
	if info, err := os.Stat(path); err == nil && info.Mode().Perm() == 0o600 {
		if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
			return nil
		}
	}
	if err := writeFileAtomic(path, want, 0o600); err != nil {
		return err
	}
	i.log.Info("wrote the plugin's kubeconfig", "path", path)
	return nil
}

func (i *Installer) ensureConfList() error {
	names, err := readDirNames(i.cfg.CNIConfDir)
	if err != nil {
		return err
	}
	name, ok := PrimaryConfig(names, i.cfg.KubeconfigName)
	if !ok {
		return fmt.Errorf("install: %w in %s", ErrNoPrimaryConfig, i.cfg.CNIConfDir)
	}
	path := filepath.Join(i.cfg.CNIConfDir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("install: reading the primary CNI configuration: %w", err)
	}
	out, converted, err := InsertEntry(data, i.Entry())
	if err != nil {
		return fmt.Errorf("install: cannot chain ambit-cni into %s: %w", path, err)
	}
	target := path
	if converted {
		target = strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
	} else if bytes.Equal(out, data) {
		return nil
	}
	if err := writeFileAtomic(target, out, fileMode(path, 0o644)); err != nil {
		return err
	}
	if converted {
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("install: removing %s after converting it to %s: %w", path, target, err)
		}
		i.log.Info("converted the primary CNI configuration to a list", "from", path, "to", target)
	}
	i.log.Info("chained ambit-cni into the primary CNI configuration", "file", target)
	return nil
}

func readDirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("install: reading the CNI conf dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func fileMode(path string, def fs.FileMode) fs.FileMode {
	if info, err := os.Stat(path); err == nil {
		return info.Mode().Perm()
	}
	return def
}

func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return writeAtomic(path, perm, func(w io.Writer) error { _, err := w.Write(data); return err })
}

// writeAtomic writes path through a hidden temporary file in the same
// directory (which the runtime ignores) renamed over it, so readers see
// the old file or the new one, never a part.
func writeAtomic(path string, perm fs.FileMode, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("install: writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("install: writing %s: %w", path, err)
	}
	if err := write(tmp); err != nil {
		return fmt.Errorf("install: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("install: writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("install: writing %s: %w", path, err)
	}
	return nil
}
