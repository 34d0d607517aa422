// Command ambit-testapp is the e2e test workload: an HTTP and TCP echo server
// that reports the peer it saw, and the matching clients. Run it without
// arguments for usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"ambit.dev/e2e/internal/testapp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	hostname, _ := os.Hostname()
	code := testapp.Main(ctx, os.Args[1:], testapp.Env{
		Hostname: hostname,
		PodIP:    os.Getenv("POD_IP"),
		Stdout:   os.Stdout,
		Stderr:   os.Stderr,
		Getenv:   os.Getenv,
	})
	stop()
	os.Exit(code)
}
