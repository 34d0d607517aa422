package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// podEnv is the environment of a pod named pod (the downward API sets
// AMBIT_POD_NAME); an empty pod leaves it unset.
func podEnv(pod, host string) Env {
	return Env{
		Getenv: func(k string) string {
			if k == EnvPodName {
				return pod
			}
			return ""
		},
		Hostname: func() (string, error) {
			if host == "" {
				return "", errors.New("no hostname")
			}
			return host, nil
		},
	}
}

func TestParse(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c, err := ParseEnv(nil, io.Discard, podEnv("ambit-controlplane-7d9c-x2x4q", "ignored"))
		if err != nil {
			t.Fatal(err)
		}
		want := Config{
			TrustDomain: "cluster.local", ClusterDomain: "cluster.local", Namespace: "ambit-system", RootNamespace: "ambit-system", ServiceName: "ambit-controlplane",
			XDSAddr: ":15012", CAAddr: ":15017", MonitoringAddr: ":15014",
			NodeProxies: []string{"ambit-system/ztunnel"}, LogLevel: slog.LevelInfo, LogFormat: "text",
			WaypointImage: "localhost/ambit-waypoint:dev", WaypointImagePullPolicy: "IfNotPresent", AutoWaypoints: true, WaypointXDSAddress: "ambit-controlplane.ambit-system.svc:15012",
			LeaderElect: true, LeaderElectLeaseName: "ambit-controlplane", LeaderElectIdentity: "ambit-controlplane-7d9c-x2x4q",
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		}
		if !equal(c, want) {
			t.Fatalf("Parse(nil) = %+v\nwant %+v", c, want)
		}
	})
	t.Run("flags", func(t *testing.T) {
		c, err := ParseEnv([]string{"--kubeconfig=/k", "--trust-domain=example.org", "--dev-plaintext-xds-addr=127.0.0.1:15010",
			"--xds-addr=[::1]:15012", "--node-proxies=a/b, c/d", "--serving-names=10.0.0.1,fd00::1", "--log-level=debug", "--log-format=json"}, io.Discard, podEnv("cp-0", ""))
		if err != nil {
			t.Fatal(err)
		}
		if c.Kubeconfig != "/k" || c.TrustDomain != "example.org" || c.DevPlaintextXDSAddr != "127.0.0.1:15010" || c.XDSAddr != "[::1]:15012" ||
			!slices.Equal(c.NodeProxies, []string{"a/b", "c/d"}) || !slices.Equal(c.ServingNames, []string{"10.0.0.1", "fd00::1"}) ||
			c.LogLevel != slog.LevelDebug || c.LogFormat != "json" {
			t.Fatalf("Parse = %+v", c)
		}
	})
	t.Run("root namespace", func(t *testing.T) {
		c, err := ParseEnv([]string{"--namespace=mesh", "--root-namespace=istio-config"}, io.Discard, podEnv("cp-0", ""))
		if err != nil {
			t.Fatal(err)
		}
		if c.Namespace != "mesh" || c.RootNamespace != "istio-config" {
			t.Fatalf("namespace %q root %q, want mesh and istio-config", c.Namespace, c.RootNamespace)
		}
		d, err := ParseEnv([]string{"--namespace=mesh"}, io.Discard, podEnv("cp-0", ""))
		if err != nil {
			t.Fatal(err)
		}
		if d.RootNamespace != "mesh" {
			t.Fatalf("root namespace %q, want the control plane's namespace mesh", d.RootNamespace)
		}
	})
	t.Run("waypoint", func(t *testing.T) {
		c, err := ParseEnv([]string{"--waypoint-image=registry.example.com/ambit/ambit-waypoint:v0.1.0", "--waypoint-image-pull-policy=Never",
			"--waypoint-xds-address=[fd00:96::5]:15012"}, io.Discard, podEnv("cp-0", ""))
		if err != nil {
			t.Fatal(err)
		}
		if c.WaypointImage != "registry.example.com/ambit/ambit-waypoint:v0.1.0" || c.WaypointImagePullPolicy != "Never" || c.WaypointXDSAddress != "[fd00:96::5]:15012" {
			t.Fatalf("Parse = %+v", c)
		}
		d, err := ParseEnv([]string{"--namespace=mesh", "--service-name=cp", "--waypoint-xds-address=10.96.0.5:15012"}, io.Discard, podEnv("cp-0", ""))
		if err != nil {
			t.Fatal(err)
		}
		if d.WaypointXDSAddress != "10.96.0.5:15012" {
			t.Fatalf("xds address %q", d.WaypointXDSAddress)
		}
		e, err := ParseEnv([]string{"--namespace=mesh", "--service-name=cp"}, io.Discard, podEnv("cp-0", ""))
		if err != nil {
			t.Fatal(err)
		}
		if e.WaypointXDSAddress != "cp.mesh.svc:15012" {
			t.Fatalf("default xds address %q, want cp.mesh.svc:15012", e.WaypointXDSAddress)
		}
	})
	t.Run("leader election", func(t *testing.T) {
		c, err := ParseEnv([]string{"--leader-elect-lease-name=cp-lock"}, io.Discard, podEnv("", "laptop"))
		if err != nil {
			t.Fatal(err)
		}
		if c.LeaderElectLeaseName != "cp-lock" || !strings.HasPrefix(c.LeaderElectIdentity, "laptop_") || len(c.LeaderElectIdentity) != len("laptop_")+8 {
			t.Fatalf("lease %q identity %q, want cp-lock and laptop_<8 random characters>", c.LeaderElectLeaseName, c.LeaderElectIdentity)
		}
		other, err := ParseEnv(nil, io.Discard, podEnv("", "laptop"))
		if err != nil {
			t.Fatal(err)
		}
		if other.LeaderElectIdentity == c.LeaderElectIdentity {
			t.Fatalf("two processes on one host got the same identity %q", c.LeaderElectIdentity)
		}
		off, err := ParseEnv([]string{"--leader-elect=false"}, io.Discard, podEnv("", ""))
		if err != nil {
			t.Fatalf("--leader-elect=false needs no identity: %v", err)
		}
		if off.LeaderElect || off.LeaderElectIdentity != "" {
			t.Fatalf("--leader-elect=false: %+v", off)
		}
		if _, err := ParseEnv(nil, io.Discard, podEnv("", "")); err == nil || !strings.Contains(err.Error(), EnvPodName) {
			t.Fatalf("no pod name and no hostname: %v, want an error naming %s", err, EnvPodName)
		}
	})
	bad := []struct {
		name string
		args []string
	}{
		{"bad trust domain", []string{"--trust-domain=Not_A_Domain"}},
		{"empty namespace", []string{"--namespace="}},
		{"address without port", []string{"--xds-addr=localhost"}},
		{"same address twice", []string{"--ca-addr=:15012"}},
		{"bad log level", []string{"--log-level=loud"}},
		{"bad log format", []string{"--log-format=xml"}},
		{"bad root namespace", []string{"--root-namespace=Not_A_Namespace"}},
		{"bad lease name", []string{"--leader-elect-lease-name=Not_A_Name"}},
		{"empty lease name", []string{"--leader-elect-lease-name="}},
		{"empty waypoint image", []string{"--waypoint-image="}},
		{"bad waypoint pull policy", []string{"--waypoint-image-pull-policy=Sometimes"}},
		{"waypoint xds address without port", []string{"--waypoint-xds-address=10.96.0.5"}},
		{"positional argument", []string{"serve"}},
		{"unknown flag", []string{"--no-such-flag"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseEnv(tc.args, io.Discard, podEnv("cp-0", "")); err == nil {
				t.Fatalf("Parse(%q) succeeded, want an error", tc.args)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		if _, err := Parse([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("Parse(-h) = %v, want flag.ErrHelp", err)
		}
	})
}

func equal(a, b Config) bool {
	return reflect.DeepEqual(a, b)
}
