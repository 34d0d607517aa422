package install

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/tools/clientcmd"

	"ambit.dev/cni-plugin/internal/plugin"
)

type node struct {
	bin, conf, src, lookupSrc, token, ca string
}

func newNode(t *testing.T) node {
	t.Helper()
	dir := t.TempDir()
	n := node{
		bin:  filepath.Join(dir, "opt-cni-bin"),
		conf: filepath.Join(dir, "etc-cni-net.d"),
		src:  filepath.Join(dir, "ambit-cni"),
		// A name of its own: the installer must name the copy itself.
		lookupSrc: filepath.Join(dir, "lookup-build-output"),
		token:     filepath.Join(dir, "token"),
		ca:        filepath.Join(dir, "ca.crt"),
	}
	for _, d := range []string{n.bin, n.conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, n.src, "#!/bin/sh\necho ambit-cni v1\n", 0o755)
	write(t, n.lookupSrc, "#!/bin/sh\necho ambit-cni-lookup v1\n", 0o755)
	write(t, n.token, "token-1\n", 0o600)
	write(t, n.ca, "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n", 0o644)
	return n
}

func write(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (n node) installer(t *testing.T, mod func(*Config)) *Installer {
	t.Helper()
	cfg := Config{
		CNIBinDir: n.bin, CNIConfDir: n.conf, HostCNIConfDir: "/etc/cni/net.d", PluginBinary: n.src, LookupBinary: n.lookupSrc,
		TokenFile: n.token, CAFile: n.ca, APIServerURL: "https://10.96.0.1:443",
	}
	if mod != nil {
		mod(&cfg)
	}
	i, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func (n node) names(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(n.conf)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// checkKubeconfig checks the kubeconfig's mode and content.
func checkKubeconfig(t *testing.T, path, token string) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode = %v, want 0600", info.Mode().Perm())
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatalf("kubeconfig does not load: %v", err)
	}
	rest, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		t.Fatalf("kubeconfig unusable: %v", err)
	}
	if rest.Host != "https://10.96.0.1:443" || rest.BearerToken != token || !strings.Contains(string(rest.CAData), "\nca\n") {
		t.Errorf("kubeconfig host %q token %q ca %q", rest.Host, rest.BearerToken, rest.CAData)
	}
}

func TestInstallAndUninstall(t *testing.T) {
	n := newNode(t)
	write(t, filepath.Join(n.conf, "10-bridge.conflist"), primary, 0o644)
	write(t, filepath.Join(n.conf, "99-other.conflist"), primary, 0o644)
	i := n.installer(t, nil)

	if err := i.Install(context.Background()); err != nil {
		t.Fatalf("Install: %v", err)
	}
	for name, src := range map[string]string{"ambit-cni": n.src, "ambit-cni-lookup": n.lookupSrc} {
		if got := read(t, filepath.Join(n.bin, name)); got != read(t, src) {
			t.Errorf("binary %s = %q", name, got)
		}
		if info, _ := os.Stat(filepath.Join(n.bin, name)); info.Mode().Perm() != 0o755 {
			t.Errorf("binary %s mode = %v", name, info.Mode().Perm())
		}
	}
	if want := []string{"ambit-cni", "ambit-cni-lookup"}; !slices.Equal(dirNames(t, n.bin), want) {
		t.Errorf("bin dir = %v, want %v (no temporary files)", dirNames(t, n.bin), want)
	}
	if i.LookupBinaryPath() != filepath.Join(n.bin, "ambit-cni-lookup") || i.BinaryPath() != filepath.Join(n.bin, "ambit-cni") {
		t.Errorf("BinaryPath = %s, LookupBinaryPath = %s", i.BinaryPath(), i.LookupBinaryPath())
	}
	checkKubeconfig(t, filepath.Join(n.conf, DefaultKubeconfigName), "token-1")
	if got := read(t, filepath.Join(n.conf, "10-bridge.conflist")); got != withOurs {
		t.Errorf("primary conflist =\n%s\nwant\n%s", got, withOurs)
	}
	if got := read(t, filepath.Join(n.conf, "99-other.conflist")); got != primary {
		t.Errorf("a conflist that is not the primary one changed:\n%s", got)
	}
	if want := []string{"10-bridge.conflist", "99-other.conflist", DefaultKubeconfigName}; !slices.Equal(n.names(t), want) {
		t.Errorf("conf dir = %v, want %v (no temporary files)", n.names(t), want)
	}

	// Installing again changes nothing.
	if err := i.Install(context.Background()); err != nil {
		t.Fatalf("second Install: %v", err)
	}
	if got := read(t, filepath.Join(n.conf, "10-bridge.conflist")); got != withOurs {
		t.Errorf("second Install changed the conflist:\n%s", got)
	}

	if err := i.Uninstall(); err != nil {
		t.Fatalf("Uninstall: %v", err)
	}
	if got := read(t, filepath.Join(n.conf, "10-bridge.conflist")); got != primary {
		t.Errorf("after Uninstall the conflist is not the original:\n%s", got)
	}
	if want := []string{"10-bridge.conflist", "99-other.conflist"}; !slices.Equal(n.names(t), want) {
		t.Errorf("conf dir after Uninstall = %v, want %v", n.names(t), want)
	}
	if names := dirNames(t, n.bin); len(names) != 0 {
		t.Errorf("bin dir after Uninstall = %v, want it empty", names)
	}
	if err := i.Uninstall(); err != nil {
		t.Errorf("second Uninstall: %v", err)
	}
}

func TestInstallConvertsConf(t *testing.T) {
	n := newNode(t)
	conf := `{"cniVersion":"0.3.1","name":"flannel","type":"flannel","delegate":{"hairpinMode":true}}`
	write(t, filepath.Join(n.conf, "10-flannel.conf"), conf, 0o600)
	i := n.installer(t, nil)
	if err := i.Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"10-flannel.conflist", DefaultKubeconfigName}; !slices.Equal(n.names(t), want) {
		t.Fatalf("conf dir = %v, want %v", n.names(t), want)
	}
	list := filepath.Join(n.conf, "10-flannel.conflist")
	want, _, err := InsertEntry([]byte(conf), i.Entry())
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, list); got != string(want) {
		t.Errorf("converted conflist =\n%s\nwant\n%s", got, want)
	}
	if info, _ := os.Stat(list); info.Mode().Perm() != 0o600 {
		t.Errorf("converted conflist mode = %v, want the original's 0600", info.Mode().Perm())
	}
}

func TestInstallWithoutPrimaryConfig(t *testing.T) {
	n := newNode(t)
	i := n.installer(t, nil)
	err := i.Install(context.Background())
	if !errors.Is(err, ErrNoPrimaryConfig) {
		t.Fatalf("Install = %v, want ErrNoPrimaryConfig", err)
	}
	if want := []string{"ambit-cni", "ambit-cni-lookup"}; !slices.Equal(dirNames(t, n.bin), want) {
		t.Errorf("bin dir = %v, want %v", dirNames(t, n.bin), want)
	}
	checkKubeconfig(t, filepath.Join(n.conf, DefaultKubeconfigName), "token-1")
}

func TestInstallRefusesBadPrimary(t *testing.T) {
	n := newNode(t)
	write(t, filepath.Join(n.conf, "10-old.conf"), `{"cniVersion":"0.2.0","name":"n","type":"bridge"}`, 0o644)
	err := n.installer(t, nil).Install(context.Background())
	if err == nil || !strings.Contains(err.Error(), "10-old.conf") || !strings.Contains(err.Error(), `cniVersion "0.2.0"`) {
		t.Fatalf("Install = %v, want an error naming the file and its version", err)
	}
	if got := read(t, filepath.Join(n.conf, "10-old.conf")); !strings.Contains(got, `"0.2.0"`) {
		t.Errorf("bad primary rewritten: %s", got)
	}
}

func TestInstallWithoutBinaryLeavesConfigAlone(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		errHas  string
		wantBin []string // what the bin dir holds after the failed Install
	}{
		{name: "plugin missing", mod: func(c *Config) { c.PluginBinary = filepath.Join(t.TempDir(), "missing") },
			errHas: "ambit-cni binary", wantBin: []string{"ambit-cni-lookup"}},
		// The lookup binary goes first: a plugin never runs without it.
		{name: "lookup program missing", mod: func(c *Config) { c.LookupBinary = filepath.Join(t.TempDir(), "missing") },
			errHas: "ambit-cni-lookup binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			write(t, filepath.Join(n.conf, "10-bridge.conflist"), primary, 0o644)
			i := n.installer(t, tt.mod)
			if err := i.Install(context.Background()); err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("Install = %v, want an error containing %q", err, tt.errHas)
			}
			if got := read(t, filepath.Join(n.conf, "10-bridge.conflist")); got != primary {
				t.Errorf("entry inserted although a binary is missing (every pod would fail):\n%s", got)
			}
			if got := dirNames(t, n.bin); !slices.Equal(got, tt.wantBin) {
				t.Errorf("bin dir = %v, want %v", got, tt.wantBin)
			}
		})
	}
}

// dirNames lists dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestEntry(t *testing.T) {
	n := newNode(t)
	i := n.installer(t, func(c *Config) {
		c.AgentSocket = "/run/ambit/cni.sock"
		c.AgentTimeout = 10 * time.Second
		c.ExcludeNamespaces = []string{}
		c.LogLevel = "debug"
	})
	want := Entry{Type: "ambit-cni", AgentSocket: "/run/ambit/cni.sock", AgentTimeout: "10s",
		Kubeconfig: "/etc/cni/net.d/ZZZ-ambit-cni-kubeconfig", ExcludeNamespaces: []string{}, LogLevel: "debug"}
	if got := i.Entry(); got.Type != want.Type || got.AgentSocket != want.AgentSocket || got.AgentTimeout != want.AgentTimeout ||
		got.Kubeconfig != want.Kubeconfig || got.ExcludeNamespaces == nil || len(got.ExcludeNamespaces) != 0 || got.LogLevel != want.LogLevel {
		t.Errorf("Entry = %+v, want %+v", got, want)
	}
	// The entry is a valid plugin configuration.
	out, _, err := InsertEntry([]byte(primary), i.Entry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plugin.ParseConfig(lastPlugin(t, out)); err != nil {
		t.Errorf("the installed entry does not parse as plugin configuration: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*Config)
		errHas string
	}{
		{name: "no binary", mod: func(c *Config) { c.PluginBinary = "" }, errHas: "PluginBinary"},
		{name: "no lookup binary", mod: func(c *Config) { c.LookupBinary = "" }, errHas: "LookupBinary"},
		{name: "no API server", mod: func(c *Config) { c.APIServerURL = "" }, errHas: "APIServerURL"},
		{name: "kubeconfig named like a network", mod: func(c *Config) { c.KubeconfigName = "ambit.conf" }, errHas: "must not end in"},
		{name: "hidden kubeconfig", mod: func(c *Config) { c.KubeconfigName = ".kc" }, errHas: "non-hidden"},
		{name: "timeout too long", mod: func(c *Config) { c.AgentTimeout = time.Hour }, errHas: "outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{PluginBinary: "/b", LookupBinary: "/l", APIServerURL: "https://h"}
			tt.mod(&cfg)
			if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("New = %v, want an error containing %q", err, tt.errHas)
			}
		})
	}
}

func TestRunKeepsInstalled(t *testing.T) {
	defer goleak.VerifyNone(t)
	n := newNode(t)
	primaryPath := filepath.Join(n.conf, "10-bridge.conflist")
	write(t, primaryPath, primary, 0o644)
	i := n.installer(t, func(c *Config) { c.Interval = 10 * time.Millisecond })
	if err := i.Install(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- i.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		}
	}
	defer stop()

	// The primary CNI rewrites its file, the token rotates, the binaries are deleted.
	write(t, primaryPath+".new", primary, 0o644)
	if err := os.Rename(primaryPath+".new", primaryPath); err != nil {
		t.Fatal(err)
	}
	write(t, n.token, "token-2\n", 0o600)
	for _, name := range []string{"ambit-cni", "ambit-cni-lookup"} {
		if err := os.Remove(filepath.Join(n.bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	kc := filepath.Join(n.conf, DefaultKubeconfigName)
	waitFor(t, "Run to restore the entry, token and binaries", func() bool {
		cfg, err := clientcmd.LoadFromFile(kc)
		_, binErr := os.Stat(filepath.Join(n.bin, "ambit-cni"))
		_, lookupErr := os.Stat(filepath.Join(n.bin, "ambit-cni-lookup"))
		return err == nil && cfg.AuthInfos["ambit-cni"] != nil && cfg.AuthInfos["ambit-cni"].Token == "token-2" &&
			read(t, primaryPath) == withOurs && binErr == nil && lookupErr == nil
	})
	stop()
	checkKubeconfig(t, kc, "token-2")
}

// waitFor polls cond until it holds; a deadline far above the expected
// time only stops a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lastPlugin(t *testing.T, conflist []byte) []byte {
	t.Helper()
	var list struct {
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(conflist, &list); err != nil || len(list.Plugins) == 0 {
		t.Fatalf("bad conflist (%v):\n%s", err, conflist)
	}
	return list.Plugins[len(list.Plugins)-1]
}
