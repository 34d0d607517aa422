package testapp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

func TestGRPCCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveGRPC(ctx, ln, "echo-v1", slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	var out, errOut bytes.Buffer
	cfg := GRPCCheckConfig{Addr: ln.Addr().String(), Count: 3, Summary: true, Timeout: 5 * time.Second, Metadata: metadata.Pairs("x-canary", "yes")}
	if err := GRPCCheck(ctx, cfg, &out, &errOut); err != nil {
		t.Fatalf("check: %v (%s)", err, errOut.String())
	}
	want := strings.Repeat("served-by=echo-v1 status=SERVING\n", 3) + "3 ok, 0 failed\n"
	if out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}

	// An unknown service is NOT_FOUND: printed with its code, and an error.
	out.Reset()
	cfg.Service, cfg.Count, cfg.Summary = "no.such.Service", 1, false
	err = GRPCCheck(ctx, cfg, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "1 of 1 calls failed") || out.String() != "served-by=echo-v1 code=NotFound\n" {
		t.Fatalf("unknown service: err %v, output %q", err, out.String())
	}

	// Nothing listening: a failure, not a hang.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := dead.Addr().String()
	dead.Close()
	out.Reset()
	cfg = GRPCCheckConfig{Addr: addr, Count: 1, Timeout: time.Second}
	if err := GRPCCheck(ctx, cfg, &out, &errOut); err == nil || out.String() != "served-by= code=Unavailable\n" {
		t.Fatalf("dead server: err %v, output %q", err, out.String())
	}
}
