// Command ambitctl installs, checks and inspects Ambit from anywhere kubectl
// works: install, uninstall, check, enroll, unenroll, status, ztunnel,
// waypoint, migrate, version. See ambitctl --help.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
	"k8s.io/klog/v2"

	"ambit.dev/ambitctl/internal/cli"
	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/deploy/charts"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	// client-go logs transient port-forward and watch errors through
	// klog; ambitctl reports what matters in its own errors.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewCommand(cli.Env{
		Out:      os.Stdout,
		Err:      os.Stderr,
		Connect:  kube.Connect,
		Render:   charts.Render,
		ReadFile: os.ReadFile,
		Terminal: term.IsTerminal(int(os.Stdout.Fd())),
		Version:  version,
	}).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ambitctl:", err)
		os.Exit(1)
	}
}
