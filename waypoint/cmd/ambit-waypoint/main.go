// Command ambit-waypoint is Ambit's L7 waypoint proxy: it terminates
// HBONE, routes by the Envoy xDS the control plane serves (waypoint/XDS.md)
// and re-originates HBONE to the chosen endpoints. See waypoint/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"ambit.dev/waypoint/internal/app"
	"ambit.dev/waypoint/internal/config"
)

func main() {
	cfg, err := config.FromOS()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ambit-waypoint:", err)
		os.Exit(2)
	}
	log := cfg.Logger(os.Stderr)
	if ml := cfg.SoftMemoryLimitFromOS(); ml.Bytes > 0 {
		debug.SetMemoryLimit(ml.Bytes)
		log.Info("soft memory limit", "bytes", ml.Bytes, "source", ml.Source)
	} else {
		log.Info("soft memory limit not set by the waypoint", "source", ml.Source)
	}
	a, err := app.New(cfg, log)
	if err != nil {
		log.Error("cannot start", "error", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := a.Run(ctx); err != nil {
		log.Error("stopped", "error", err)
		os.Exit(1)
	}
}
