package config

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	required := map[string]string{
		"AMBIT_XDS_ADDRESS": "ambit-controlplane.ambit-system.svc:15012", "AMBIT_CA_ADDRESS": "ambit-controlplane.ambit-system.svc:15017",
		"AMBIT_ROOT_CERT_FILE": "/var/run/ambit/root-cert.pem", "AMBIT_TOKEN_FILE": "/var/run/secrets/tokens/ambit-ca",
		"AMBIT_POD_NAME": "waypoint-5d8f-abcde", "AMBIT_POD_NAMESPACE": "demo", "AMBIT_POD_IPS": "10.244.1.9,fd00:10:244:1::9",
		"AMBIT_SERVICE_ACCOUNT": "waypoint", "AMBIT_GATEWAY": "demo/waypoint",
	}
	env := func(over map[string]string) func(string) (string, bool) {
		m := map[string]string{}
		for k, v := range required {
			m[k] = v
		}
		for k, v := range over {
			if v == "" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "defaults from the environment", check: func(t *testing.T, c Config) {
			if c.HBONEAddr != ":15008" || c.ReadyAddr != ":15021" || c.MetricsAddr != ":15020" || c.AdminAddr != "127.0.0.1:15000" ||
				c.TrustDomain != "cluster.local" || c.ClusterDomain != "cluster.local" || c.ControlPlaneName != DefaultControlPlaneName {
				t.Fatalf("defaults: %+v", c)
			}
			if !slices.Equal(c.PodIPs, []netip.Addr{netip.MustParseAddr("10.244.1.9"), netip.MustParseAddr("fd00:10:244:1::9")}) {
				t.Fatalf("pod IPs %v", c.PodIPs)
			}
			if id, err := c.Identity(); err != nil || id.String() != "spiffe://cluster.local/ns/demo/sa/waypoint" {
				t.Fatalf("identity %v, %v", id, err)
			}
		}},
		{name: "flag wins over environment", args: []string{"--pod-ips", "fd00:10:244:1::9", "--admin-addr", "[::1]:15000"}, check: func(t *testing.T, c Config) {
			if len(c.PodIPs) != 1 || !c.PodIPs[0].Is6() || c.AdminAddr != "[::1]:15000" {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "IPv4-mapped pod IP", env: map[string]string{"AMBIT_POD_IPS": "::ffff:10.244.1.9"}, check: func(t *testing.T, c Config) {
			if c.PodIPs[0] != netip.MustParseAddr("10.244.1.9") {
				t.Fatalf("%v", c.PodIPs)
			}
		}},
		{name: "soft memory limit default", check: func(t *testing.T, c Config) {
			if c.SoftMemoryLimitMiB != DefaultSoftMemoryLimitMiB {
				t.Fatalf("soft memory limit %d MiB, want %d", c.SoftMemoryLimitMiB, DefaultSoftMemoryLimitMiB)
			}
		}},
		{name: "soft memory limit from the environment", env: map[string]string{"AMBIT_SOFT_MEMORY_LIMIT_MIB": "24"}, check: func(t *testing.T, c Config) {
			if c.SoftMemoryLimitMiB != 24 {
				t.Fatalf("soft memory limit %d MiB, want 24", c.SoftMemoryLimitMiB)
			}
		}},
		{name: "negative soft memory limit", args: []string{"--soft-memory-limit-mib", "-1"}, wantErr: "--soft-memory-limit-mib -1 must not be negative"},
		{name: "missing gateway", env: map[string]string{"AMBIT_GATEWAY": ""}, wantErr: "--gateway is required (or AMBIT_GATEWAY)"},
		{name: "gateway of another namespace", env: map[string]string{"AMBIT_GATEWAY": "other/waypoint"}, wantErr: "not in the pod's namespace"},
		{name: "gateway without namespace", env: map[string]string{"AMBIT_GATEWAY": "waypoint"}, wantErr: "must be <namespace>/<name>"},
		{name: "no pod IP", env: map[string]string{"AMBIT_POD_IPS": ""}, wantErr: "--pod-ips is required"},
		{name: "bad pod IP", env: map[string]string{"AMBIT_POD_IPS": "10.244.1.300"}, wantErr: `"10.244.1.300" is not an IP address`},
		{name: "admin not on loopback, IPv4", args: []string{"--admin-addr", "0.0.0.0:15000"}, wantErr: "--admin-addr"},
		{name: "admin not on loopback, IPv6", args: []string{"--admin-addr", "[::]:15000"}, wantErr: "must listen on a loopback address"},
		{name: "bad trust domain", args: []string{"--trust-domain", "Cluster Local"}, wantErr: "--trust-domain"},
		{name: "short cert TTL", args: []string{"--cert-ttl", "1m"}, wantErr: "too short"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "positional argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(tt.args, env(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}
