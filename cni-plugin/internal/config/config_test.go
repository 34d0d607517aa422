package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"ambit.dev/pkg/redirect"
)

// inCluster is what a node agent pod's environment always holds.
var inCluster = map[string]string{
	"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "AMBIT_POD_NAMESPACE": "ambit-system",
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if v, ok := m[k]; ok {
			return v, true
		}
		v, ok := inCluster[k]
		return v, ok
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]string{"--node-name=node1"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		NodeName: "node1", ZDSSocket: "/var/run/ambit/ztunnel.sock", CNISocket: "/var/run/ambit/cni.sock",
		CNIAddTimeout: 20 * time.Second, ZDSRequestTimeout: 10 * time.Second, IptablesBackend: redirect.BackendAuto,
		MetricsAddr: "127.0.0.1:15031", ReadyAddr: ":15030", LogLevel: slog.LevelInfo, LogFormat: "json",
		CNI: CNIInstall{
			Enabled: true, BinDir: "/opt/cni/bin", ConfDir: "/etc/cni/net.d", HostConfDir: "/etc/cni/net.d",
			PluginBinary: "/usr/local/bin/ambit-cni", LookupBinary: "/usr/local/bin/ambit-cni-lookup", APIServerURL: "https://10.96.0.1:443",
			Namespace: "ambit-system", DaemonSet: "ambit-node-agent",
		},
	}
	if c != want {
		t.Fatalf("Parse = %+v\nwant %+v", c, want)
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(Config) bool
		wantErr string
	}{
		{name: "node name from the downward API env", env: map[string]string{"AMBIT_NODE_NAME": "n7", "AMBIT_CNI_ADD_TIMEOUT": "5s"},
			check: func(c Config) bool { return c.NodeName == "n7" && c.CNIAddTimeout == 5*time.Second }},
		{name: "flag wins over env", args: []string{"--node-name=n1", "--log-level=debug"},
			env:   map[string]string{"AMBIT_NODE_NAME": "other", "AMBIT_LOG_LEVEL": "error"},
			check: func(c Config) bool { return c.NodeName == "n1" && c.LogLevel == slog.LevelDebug }},
		{name: "nft backend", args: []string{"--node-name=n", "--iptables-backend=nft"},
			check: func(c Config) bool { return c.IptablesBackend == redirect.BackendNFT }},
		{name: "legacy backend from env", args: []string{"--node-name=n"}, env: map[string]string{"AMBIT_IPTABLES_BACKEND": "legacy"},
			check: func(c Config) bool { return c.IptablesBackend == redirect.BackendLegacy }},
		{name: "IPv6 metrics address", args: []string{"--node-name=n", "--metrics-addr=[::1]:15031", "--ready-addr=[::]:15030"},
			check: func(c Config) bool { return c.MetricsAddr == "[::1]:15031" && c.ReadyAddr == "[::]:15030" }},
		{name: "IPv4 metrics on all interfaces", args: []string{"--node-name=n", "--metrics-addr=0.0.0.0:15031"},
			check: func(c Config) bool { return c.MetricsAddr == "0.0.0.0:15031" }},
		{name: "kubeconfig", args: []string{"--node-name=n", "--kubeconfig=/etc/kc"},
			check: func(c Config) bool { return c.Kubeconfig == "/etc/kc" }},
		{name: "IPv6 API server", args: []string{"--node-name=n"}, env: map[string]string{"KUBERNETES_SERVICE_HOST": "fd00:96::1"},
			check: func(c Config) bool { return c.CNI.APIServerURL == "https://[fd00:96::1]:443" }},
		{name: "explicit API server", args: []string{"--node-name=n", "--api-server-url=https://10.200.0.1:6443"},
			check: func(c Config) bool { return c.CNI.APIServerURL == "https://10.200.0.1:6443" }},
		{name: "no CNI install needs no API server", args: []string{"--node-name=n", "--install-cni=false"},
			env: map[string]string{"KUBERNETES_SERVICE_HOST": "", "AMBIT_POD_NAMESPACE": ""}, check: func(c Config) bool { return !c.CNI.Enabled }},
		{name: "CNI install outside a cluster", args: []string{"--node-name=n"}, env: map[string]string{"KUBERNETES_SERVICE_HOST": ""}, wantErr: "--api-server-url is required"},
		{name: "CNI install without own namespace", args: []string{"--node-name=n"}, env: map[string]string{"AMBIT_POD_NAMESPACE": ""}, wantErr: "--pod-namespace"},
		{name: "relative CNI dir", args: []string{"--node-name=n", "--cni-conf-dir=net.d"}, wantErr: "--cni-conf-dir"},
		{name: "lookup binary from env", args: []string{"--node-name=n"}, env: map[string]string{"AMBIT_CNI_LOOKUP_BINARY": "/opt/ambit/ambit-cni-lookup"},
			check: func(c Config) bool { return c.CNI.LookupBinary == "/opt/ambit/ambit-cni-lookup" }},
		{name: "relative lookup binary", args: []string{"--node-name=n", "--cni-lookup-binary=ambit-cni-lookup"}, wantErr: "--cni-lookup-binary"},
		{name: "empty lookup binary", args: []string{"--node-name=n", "--cni-lookup-binary="}, wantErr: `--cni-lookup-binary "" must be an absolute path`},
		{name: "missing node name", wantErr: "--node-name is required"},
		{name: "bad backend", args: []string{"--node-name=n", "--iptables-backend=ebpf"}, wantErr: "--iptables-backend"},
		{name: "relative socket", args: []string{"--node-name=n", "--zds-socket=zds.sock"}, wantErr: "absolute"},
		{name: "same sockets", args: []string{"--node-name=n", "--zds-socket=/run/a.sock", "--cni-socket=/run/a.sock"}, wantErr: "both"},
		{name: "zero timeout", args: []string{"--node-name=n", "--cni-add-timeout=0s"}, wantErr: "--cni-add-timeout"},
		{name: "bad address", args: []string{"--node-name=n", "--ready-addr=15030"}, wantErr: "--ready-addr"},
		{name: "same addresses", args: []string{"--node-name=n", "--ready-addr=:15030", "--metrics-addr=:15030"}, wantErr: "both"},
		{name: "bad log format", args: []string{"--node-name=n", "--log-format=xml"}, wantErr: "--log-format"},
		{name: "bad env value", args: []string{"--node-name=n"}, env: map[string]string{"AMBIT_CNI_ADD_TIMEOUT": "soon"}, wantErr: "AMBIT_CNI_ADD_TIMEOUT"},
		{name: "positional argument", args: []string{"--node-name=n", "extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, env(tc.env), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("Parse = %+v", c)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	if _, err := Parse([]string{"-h"}, nil, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
}
