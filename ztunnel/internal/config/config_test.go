package config

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

var required = []string{"--node-name=node1", "--workloads-file=/w.yaml", "--ca-cert=/ca.pem", "--ca-key=/ca-key.pem"}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse(required, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{NodeName: "node1", WorkloadsFile: "/w.yaml", CACert: "/ca.pem", CAKey: "/ca-key.pem",
		ControlPlaneName: DefaultControlPlaneName, TrustDomain: "cluster.local", AdminAddr: "127.0.0.1:15000", MetricsAddr: ":15020", ReadyAddr: ":15021",
		DrainPeriod: 30 * time.Second, CertTTL: 24 * time.Hour, LogLevel: slog.LevelInfo, LogFormat: "json"}
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
		{name: "env fills an unset flag", args: []string{"--workloads-file=/w", "--ca-cert=/c", "--ca-key=/k"},
			env:   map[string]string{"AMBIT_NODE_NAME": "n7", "AMBIT_DRAIN_PERIOD": "5s"},
			check: func(c Config) bool { return c.NodeName == "n7" && c.DrainPeriod == 5*time.Second }},
		{name: "flag wins over env", args: append([]string{"--log-level=debug"}, required...),
			env:   map[string]string{"AMBIT_NODE_NAME": "other", "AMBIT_LOG_LEVEL": "error"},
			check: func(c Config) bool { return c.NodeName == "node1" && c.LogLevel == slog.LevelDebug }},
		{name: "IPv6 loopback admin", args: append([]string{"--admin-addr=[::1]:15000"}, required...),
			check: func(c Config) bool { return c.AdminAddr == "[::1]:15000" }},
		{name: "IPv4 non-loopback admin refused", args: append([]string{"--admin-addr=10.0.0.1:15000"}, required...), wantErr: "--admin-addr"},
		{name: "IPv6 non-loopback admin refused", args: append([]string{"--admin-addr=[fd00::1]:15000"}, required...), wantErr: "not a loopback"},
		{name: "all interfaces admin refused", args: append([]string{"--admin-addr=:15000"}, required...), wantErr: "all interfaces"},
		{name: "missing node", args: required[1:], wantErr: "--node-name is required"},
		{name: "missing CA", args: required[:2], wantErr: "--ca-cert and --ca-key are required"},
		{name: "xDS mode", args: []string{"--node-name=n", "--xds-address=10.96.0.20:15012", "--ca-address=[fd00:96::20]:15017", "--root-cert-file=/r.pem", "--token-file=/t"},
			check: func(c Config) bool {
				return c.XDSMode() && c.CAAddress == "[fd00:96::20]:15017" && c.ControlPlaneName == DefaultControlPlaneName
			}},
		{name: "xDS mode from env", args: []string{"--node-name=n"}, env: map[string]string{"AMBIT_XDS_ADDRESS": "10.96.0.20:15012", "AMBIT_CA_ADDRESS": "10.96.0.20:15017", "AMBIT_ROOT_CERT_FILE": "/r.pem", "AMBIT_TOKEN_FILE": "/t"},
			check: func(c Config) bool { return c.XDSMode() && c.TokenFile == "/t" }},
		{name: "xDS mode with ZDS", args: []string{"--node-name=n", "--xds-address=10.96.0.20:15012", "--ca-address=10.96.0.20:15017", "--root-cert-file=/r.pem", "--token-file=/t", "--zds-socket=/var/run/ambit/ztunnel.sock"},
			check: func(c Config) bool { return c.XDSMode() && c.ZDSSocket == "/var/run/ambit/ztunnel.sock" }},
		{name: "ZDS socket from env", args: []string{"--node-name=n", "--xds-address=[fd00:96::20]:15012", "--ca-address=[fd00:96::20]:15017", "--root-cert-file=/r.pem", "--token-file=/t"},
			env:   map[string]string{"AMBIT_ZDS_SOCKET": "/run/zds.sock"},
			check: func(c Config) bool { return c.ZDSSocket == "/run/zds.sock" }},
		{name: "ZDS off by default", args: []string{"--node-name=n", "--xds-address=10.96.0.20:15012", "--ca-address=10.96.0.20:15017", "--root-cert-file=/r.pem", "--token-file=/t"},
			check: func(c Config) bool { return c.ZDSSocket == "" }},
		{name: "ZDS with a workloads file refused", args: append([]string{"--zds-socket=/var/run/ambit/ztunnel.sock"}, required...), wantErr: "--zds-socket needs xDS mode"},
		{name: "ZDS alone refused", args: []string{"--node-name=n", "--zds-socket=/run/zds.sock"}, wantErr: "--zds-socket needs xDS mode"},
		{name: "ZDS from env with a workloads file refused", args: required, env: map[string]string{"AMBIT_ZDS_SOCKET": "/run/zds.sock"}, wantErr: "--zds-socket needs xDS mode"},
		{name: "xDS mode incomplete", args: []string{"--node-name=n", "--xds-address=10.96.0.20:15012"}, wantErr: "xDS mode needs all of"},
		{name: "both modes refused", args: append([]string{"--xds-address=10.96.0.20:15012"}, required...), wantErr: "are exclusive"},
		{name: "bad env value", args: required, env: map[string]string{"AMBIT_DRAIN_PERIOD": "soon"}, wantErr: "AMBIT_DRAIN_PERIOD"},
		{name: "bad log level", args: append([]string{"--log-level=loud"}, required...), wantErr: "--log-level"},
		{name: "bad log format", args: append([]string{"--log-format=xml"}, required...), wantErr: "--log-format"},
		{name: "bad trust domain", args: append([]string{"--trust-domain=Not Valid"}, required...), wantErr: "--trust-domain"},
		{name: "zero drain", args: append([]string{"--drain-period=0s"}, required...), wantErr: "--drain-period"},
		{name: "stray argument", args: append(required, "extra"), wantErr: "unexpected arguments"},
		{name: "unknown flag", args: append(required, "--nope"), wantErr: "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(tc.args, env(tc.env), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("Parse = %+v, %v", c, err)
			}
		})
	}
}
