package testapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// gRPC answers carry who served them in response headers, so a client
// (and an e2e test) sees which backend a route chose.
const (
	// HeaderServedBy is the response header with the server's --name.
	HeaderServedBy = "x-served-by"
	// HeaderPeer is the response header with the connection's peer as the
	// server saw it.
	HeaderPeer = "x-peer"
)

// GRPCServerConfig configures ServeGRPC.
type GRPCServerConfig struct {
	// Addr is the listen address, e.g. ":9090".
	Addr string
	// Name is sent back in the x-served-by header of every answer.
	Name string
}

// ServeGRPC serves the standard gRPC health service (grpc.health.v1.Health,
// every service SERVING) on plaintext HTTP/2 until ctx is done, answering
// every call with the x-served-by and x-peer headers.
func ServeGRPC(ctx context.Context, cfg GRPCServerConfig, log *slog.Logger) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening for gRPC on %s: %w (is the port already in use?)", cfg.Addr, err)
	}
	return serveGRPC(ctx, ln, cfg.Name, log)
}

func serveGRPC(ctx context.Context, ln net.Listener, name string, log *slog.Logger) error {
	tag := func(ctx context.Context) {
		md := metadata.Pairs(HeaderServedBy, name)
		if p, ok := peer.FromContext(ctx); ok {
			md.Append(HeaderPeer, p.Addr.String())
		}
		_ = grpc.SetHeader(ctx, md)
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			tag(ctx)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			tag(ss.Context())
			return h(s, ss)
		}),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	log.Info("listening", "proto", "grpc", "addr", ln.Addr().String())
	stop := context.AfterFunc(ctx, srv.GracefulStop)
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving gRPC on %s: %w", ln.Addr(), err)
	}
	return nil
}

// GRPCCheckConfig configures GRPCCheck.
type GRPCCheckConfig struct {
	// Addr is the server's host:port.
	Addr string
	// Authority overrides the :authority of the calls (empty: Addr).
	Authority string
	// Service is the health-checked service name sent in the request.
	Service string
	// Count is the number of calls; Summary prints "N ok, M failed".
	Count   int
	Summary bool
	// Timeout bounds each call.
	Timeout time.Duration
	// Metadata is sent with every call.
	Metadata metadata.MD
}

// GRPCCheck calls grpc.health.v1.Health/Check Count times over one
// plaintext HTTP/2 connection and prints, per call, the serving status or
// the gRPC error code with the server's x-served-by header:
// "served-by=<name> status=SERVING" or "served-by=<name> code=<code>".
// It fails when any call fails.
func GRPCCheck(ctx context.Context, cfg GRPCCheckConfig, stdout, stderr io.Writer) error {
	if cfg.Count < 1 {
		return fmt.Errorf("count %d must be at least 1", cfg.Count)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if cfg.Authority != "" {
		opts = append(opts, grpc.WithAuthority(cfg.Authority))
	}
	conn, err := grpc.NewClient("passthrough:///"+cfg.Addr, opts...)
	if err != nil {
		return fmt.Errorf("gRPC client for %s: %w", cfg.Addr, err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	var ok, failed int
	var lastErr error
	for i := range cfg.Count {
		cctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(ctx, cfg.Metadata), cfg.Timeout)
		var hdr metadata.MD
		res, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: cfg.Service}, grpc.Header(&hdr))
		cancel()
		served := strings.Join(hdr.Get(HeaderServedBy), ",")
		if err != nil {
			failed++
			lastErr = fmt.Errorf("call %d/%d: %w", i+1, cfg.Count, err)
			fmt.Fprintf(stdout, "served-by=%s code=%s\n", served, status.Code(err))
			fmt.Fprintln(stderr, lastErr)
			continue
		}
		ok++
		fmt.Fprintf(stdout, "served-by=%s status=%s\n", served, res.GetStatus())
	}
	if cfg.Summary {
		fmt.Fprintf(stdout, "%d ok, %d failed\n", ok, failed)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d calls failed, the last: %w", failed, cfg.Count, lastErr)
	}
	return nil
}
