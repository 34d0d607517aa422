// Command ambit-controlplane watches Kubernetes, serves workload discovery
// (delta xDS) to ztunnels and runs the mesh CA. See controlplane/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"ambit.dev/controlplane/internal/app"
	"ambit.dev/controlplane/internal/config"
)

func main() {
	cfg, err := config.Parse(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	log := slog.New(h)
	// client-go (leader election, informers) logs through klog: send it to
	// the same handler, so --log-format applies to every line.
	klog.SetSlogLogger(log.With("component", "client-go"))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("ambit-controlplane failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	clients, err := app.NewClients(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	a, err := app.New(cfg, clients, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
