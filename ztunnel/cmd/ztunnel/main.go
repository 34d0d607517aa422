// Command ztunnel is Ambit's per-node L4 proxy. See the ztunnel README.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"ambit.dev/ztunnel/internal/app"
	"ambit.dev/ztunnel/internal/config"
)

func main() {
	cfg, err := config.FromOS()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(2)
	}
	log := cfg.Logger(os.Stderr)
	a, err := app.New(cfg, log)
	if err != nil {
		log.Error("ztunnel cannot start", "error", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("ztunnel failed", "error", err)
		os.Exit(1)
	}
	log.Info("ztunnel exited")
}
