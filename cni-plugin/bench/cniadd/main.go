// Command cniadd measures the CNI ADD latency Ambit adds to a pod (issue 6:
// p99 <= 50 ms for an enrolled pod). It needs root.
//
// In a "host" network namespace it creates (nothing is done in the root
// netns), it runs the real node agent in-process (internal/app: informers
// on a fake clientset, the CNI server, the ZDS server, the real pkg/redirect
// rule installer) on temporary sockets, and a ztunnel peer on the ZDS socket
// that, like ztunnel, enters each pod netns it is handed and listens on
// 15001, 15006 and 15008 before acking. Then, for -n pods, it times libcni's
// AddNetworkList (as containerd calls it, from the host netns, on a fresh
// pod netns) for three chains, interleaved so that machine noise hits all
// three alike:
//
//  1. bridge + host-local + portmap (the local cluster's primary network);
//  2. the same + ambit-cni, pod in a namespace that is not enrolled;
//  3. the same + ambit-cni, pod in an enrolled namespace (the agent installs
//     the rules in the pod netns and waits for ztunnel's ack).
//
// Each pod is DELeted after its ADD (not timed). It prints a markdown table
// (p50, p90, p99, max, and what chains 2 and 3 add to chain 1) and the
// machine facts.
//
//	go run ./bench/cniadd [-n 50] [-warmup 3] [-plugin PATH] [-dual-stack] [-v]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// options are the flags.
type options struct {
	n, warmup  int
	plugin     string
	cniBinDir  string
	backend    string
	dualStack  bool
	target     time.Duration
	countExecs bool
	verbose    bool
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cniadd", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.n, "n", 50, "measured pods per chain")
	fs.IntVar(&o.warmup, "warmup", 3, "pods per chain run first and not recorded (bridge creation, first iptables run, page cache)")
	fs.StringVar(&o.plugin, "plugin", "", "ambit-cni binary (default: go build ./cmd/ambit-cni into a temporary directory; run from the cni-plugin module)")
	fs.StringVar(&o.cniBinDir, "cni-bin-dir", "/usr/lib/cni", "directory of the reference CNI plugins bridge, host-local and portmap (Debian: containernetworking-plugins)")
	fs.StringVar(&o.backend, "iptables-backend", "auto", "iptables backend of the agent's in-pod rules: auto, nft or legacy")
	fs.BoolVar(&o.dualStack, "dual-stack", false, "give pods an IPv6 address too (the agent then writes IPv4 and IPv6 rules); the local cluster is IPv4 only")
	fs.DurationVar(&o.target, "target", 50*time.Millisecond, "the issue's bound on the added p99 of an enrolled pod")
	fs.BoolVar(&o.countExecs, "count-execs", true, "count the programs each ADD execs (plugins, IPAM, iptables) with the kernel's process events connector")
	fs.BoolVar(&o.verbose, "v", false, "log progress, the agent's info logs and the plugins' stderr to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q (all settings are -flags)", fs.Args())
	}
	if o.n < 1 || o.warmup < 0 {
		return o, fmt.Errorf("-n %d must be at least 1 and -warmup %d at least 0", o.n, o.warmup)
	}
	return o, nil
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cniadd:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigc
		// A second signal kills the bench (stale netns are removed by the
		// next run).
		signal.Stop(sigc)
		fmt.Fprintf(os.Stderr, "cniadd: %v: stopping and cleaning up (signal again to abort the cleanup)\n", s)
		cancel()
	}()
	if err := run(ctx, opts, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cniadd:", err)
		os.Exit(1)
	}
}
