// Command ztunnel-admin inspects the ztunnel running on this node through
// its loopback admin port: ztunnel-admin certs|workloads|services|connections|policies.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"ambit.dev/ztunnel/pkg/admincli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := admincli.NewCommand(admincli.Env{Out: os.Stdout}).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel-admin:", err)
		os.Exit(1)
	}
}
