package app

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/config"
)

const workloads = `
workloads:
- {uid: a, name: a, namespace: ns1, node: other, protocol: HBONE, addresses: [10.10.1.2, "fd00:a:1::2"],
   services: {ns1/echo.ns1.svc: {80: 9090}}, waypoint: {address: "fd00:a:3::9"}}
services:
- {name: echo, namespace: ns1, hostname: echo.ns1.svc, vips: [10.96.0.10, "fd00:96::10"], ports: {80: 8080}}
`

func testConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := identity.GenerateRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.pem": certPEM, "ca-key.pem": keyPEM, "w.yaml": []byte(workloads)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return config.Config{
		NodeName: "node1", WorkloadsFile: filepath.Join(dir, "w.yaml"),
		CACert: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca-key.pem"),
		TrustDomain: "cluster.local", AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0",
		DrainPeriod: time.Second, CertTTL: time.Hour, LogFormat: "text",
	}
}

// TestRunWithoutLocalPods runs a whole ztunnel whose node has no pods to
// capture (so no root is needed): it becomes ready, dumps its state, and
// Run returns with nothing left running once ctx ends.
func TestRunWithoutLocalPods(t *testing.T) {
	defer goleak.VerifyNone(t)
	a, err := New(testConfig(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Ready(); err == nil {
		t.Fatal("ready before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); a.Ready() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", a.Ready())
		}
	}
	d := a.ConfigDump()
	if d.Node != "node1" || len(d.Workloads) != 1 || len(d.Services) != 1 || len(d.Connections) != 0 {
		t.Fatalf("ConfigDump = %+v", d)
	}
	w := d.Workloads[0]
	if w.Captured || w.Protocol != "HBONE" || w.MTLSMode != "PERMISSIVE" || strings.Join(w.Addresses, ",") != "10.10.1.2,fd00:a:1::2" ||
		w.Services["ns1/echo.ns1.svc"]["80"] != 9090 || w.Waypoint != "[fd00:a:3::9]:15008" {
		t.Errorf("workload dump = %+v", w)
	}
	if s := d.Services[0]; s.Ports["80"] != 8080 || strings.Join(s.VIPs, ",") != "10.96.0.10,fd00:96::10" {
		t.Errorf("service dump = %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "draining") {
		t.Fatalf("Ready after shutdown = %v, want draining", err)
	}
}

func TestNewAndRunErrors(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	t.Run("missing CA file", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.CACert = filepath.Join(t.TempDir(), "nope.pem")
		if _, err := New(cfg, log); err == nil || !strings.Contains(err.Error(), "--ca-cert") {
			t.Fatalf("New = %v", err)
		}
	})
	t.Run("key of another CA", func(t *testing.T) {
		cfg := testConfig(t)
		other := testConfig(t)
		cfg.CAKey = other.CAKey
		if _, err := New(cfg, log); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("New = %v", err)
		}
	})
	t.Run("bad workloads file fails Run", func(t *testing.T) {
		cfg := testConfig(t)
		if err := os.WriteFile(cfg.WorkloadsFile, []byte("workloads: [{uid: x}]"), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "workloads file") {
			t.Fatalf("Run = %v", err)
		}
	})
}
