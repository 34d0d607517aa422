package config

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c, err := Parse(nil, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		want := Config{
			TrustDomain: "cluster.local", ClusterDomain: "cluster.local", Namespace: "ambit-system", ServiceName: "ambit-controlplane",
			XDSAddr: ":15012", CAAddr: ":15017", MonitoringAddr: ":15014",
			NodeProxies: []string{"ambit-system/ztunnel"}, LogLevel: slog.LevelInfo, LogFormat: "text",
		}
		if !equal(c, want) {
			t.Fatalf("Parse(nil) = %+v\nwant %+v", c, want)
		}
	})
	t.Run("flags", func(t *testing.T) {
		c, err := Parse([]string{"--kubeconfig=/k", "--trust-domain=example.org", "--dev-plaintext-xds-addr=127.0.0.1:15010",
			"--xds-addr=[::1]:15012", "--node-proxies=a/b, c/d", "--serving-names=10.0.0.1,fd00::1", "--log-level=debug", "--log-format=json"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.Kubeconfig != "/k" || c.TrustDomain != "example.org" || c.DevPlaintextXDSAddr != "127.0.0.1:15010" || c.XDSAddr != "[::1]:15012" ||
			!slices.Equal(c.NodeProxies, []string{"a/b", "c/d"}) || !slices.Equal(c.ServingNames, []string{"10.0.0.1", "fd00::1"}) ||
			c.LogLevel != slog.LevelDebug || c.LogFormat != "json" {
			t.Fatalf("Parse = %+v", c)
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
		{"positional argument", []string{"serve"}},
		{"unknown flag", []string{"--no-such-flag"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.args, io.Discard); err == nil {
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
