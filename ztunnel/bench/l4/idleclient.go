package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"ambit.dev/ztunnel/bench/benchkit"
)

// idleClientCmd is the first argument that makes the bench act as the idle
// client: a separate process in the client pod, so the connections' client
// ends do not count against the bench's own descriptor limit (the bench
// holds their server ends).
const idleClientCmd = "idle-client"

// idleClientMain opens -n connections to -addr (one echo each), prints
// "opened N failed M [first error]" and holds them until SIGTERM/SIGINT.
func idleClientMain(args []string) int {
	fs := flag.NewFlagSet(idleClientCmd, flag.ContinueOnError)
	addr := fs.String("addr", "", "ip:port to connect to")
	n := fs.Int("n", 10000, "connections")
	parallel := fs.Int("parallel", 32, "connections opened at once")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := benchkit.RaiseNoFile(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var d net.Dialer
	dial := func(ctx context.Context, _ int) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		return d.DialContext(ctx, "tcp4", *addr)
	}
	conns, failed, err := openIdle(ctx, dial, *n, *parallel)
	if err != nil {
		fmt.Printf("opened %d failed %d first error: %v\n", len(conns), failed, err)
	} else {
		fmt.Printf("opened %d failed %d\n", len(conns), failed)
	}
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	return 0
}
