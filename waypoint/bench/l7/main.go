// Command l7 benchmarks the waypoint: HTTP/1.1 requests at a fixed rate
// from a client pod to a server pod on a real three-node topology of
// network namespaces, directly, through two ztunnels (L4), through two
// ztunnels and the waypoint (L4 + waypoint), and through a reference
// chain of HAProxy (TCP mTLS, HTTP-mode L7 proxy with TLS both ways, TCP
// mTLS), and prints one markdown table. It needs root. See README.md.
//
//	go run ./bench/l7 [-duration 10s] [-rate 1000] [-quick] [-skip-reference]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
)

type config struct {
	duration      time.Duration
	rounds        int
	rate          int
	conns         int
	sweepConns    int
	sweepDuration time.Duration
	maxRate       int
	holdP99       time.Duration
	skipRef       bool
	skipSweep     bool
	ztunnelBin    string
	waypointBin   string
	haproxyBin    string
	zLogLevel     string
	wLogLevel     string
	cpuProfile    string
	memProfile    string
	waypointEnv   []string
	nice          int
	verbose       bool
}

func parseFlags(args []string) (config, error) {
	var c config
	var quick bool
	fs := flag.NewFlagSet("l7", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of the fixed-rate phase per path (split into -rounds segments)")
	fs.IntVar(&c.rounds, "rounds", 5, "the fixed-rate phase alternates between the paths in this many segments")
	fs.IntVar(&c.rate, "rate", 1000, "request rate of the fixed-rate phase (req/s)")
	fs.IntVar(&c.conns, "conns", 16, "persistent HTTP/1.1 connections carrying the fixed-rate phase")
	fs.IntVar(&c.sweepConns, "sweep-conns", 64, "persistent connections carrying the rate sweep")
	fs.DurationVar(&c.sweepDuration, "sweep-duration", 3*time.Second, "length of each step of the rate sweep")
	fs.IntVar(&c.maxRate, "max-rate", 32000, "the sweep doubles the rate from 2×-rate up to this")
	fs.DurationVar(&c.holdP99, "hold-p99", 20*time.Millisecond, "a path holds a rate when every request succeeds and p99 stays at or below this")
	fs.BoolVar(&quick, "quick", false, "short run: 4s fixed-rate phase in 2 rounds, 1.5s sweep steps up to 8000 req/s")
	fs.BoolVar(&c.skipRef, "skip-reference", false, "do not measure the HAProxy reference")
	fs.BoolVar(&c.skipSweep, "skip-sweep", false, "do not look for the highest rate each path holds")
	fs.StringVar(&c.ztunnelBin, "ztunnel", "", "ztunnel binary (default: go build ambit.dev/ztunnel/cmd/ztunnel)")
	fs.StringVar(&c.waypointBin, "waypoint", "", "ambit-waypoint binary (default: go build ./cmd/ambit-waypoint)")
	fs.StringVar(&c.haproxyBin, "haproxy", "haproxy", "haproxy binary (Debian: apt-get install haproxy)")
	fs.StringVar(&c.zLogLevel, "ztunnel-log-level", "info", "ztunnel --log-level")
	fs.StringVar(&c.wLogLevel, "waypoint-log-level", "info", "waypoint --log-level")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the waypoint (its /debug/pprof/profile) taken during its fixed-rate segments to this file")
	fs.StringVar(&c.memProfile, "memprofile", "", "write the waypoint's heap profile (its /debug/pprof/heap) at the end of the fixed-rate phase to this file")
	fs.Func("waypoint-env", "KEY=VALUE added to the waypoint's environment (repeatable), e.g. GOMEMLIMIT=24MiB or GOGC=50", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE, not %q", v)
		}
		c.waypointEnv = append(c.waypointEnv, v)
		return nil
	})
	fs.IntVar(&c.nice, "nice", -10, "run the bench and the proxies at this nice value (-20..19); 0 leaves it")
	fs.BoolVar(&c.verbose, "v", false, "log progress to stderr")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, apply := range map[string]func(){
			"duration": func() { c.duration = 4 * time.Second }, "rounds": func() { c.rounds = 2 },
			"sweep-duration": func() { c.sweepDuration = 1500 * time.Millisecond }, "max-rate": func() { c.maxRate = 8000 },
		} {
			if !set[name] {
				apply()
			}
		}
	}
	switch {
	case c.rate < 1 || c.rate > 200000:
		return c, fmt.Errorf("-rate %d: want 1..200000", c.rate)
	case c.rounds < 1 || c.duration/time.Duration(c.rounds) < 500*time.Millisecond || c.duration > 10*time.Minute:
		return c, fmt.Errorf("-duration %v / -rounds %d: want segments of at least 500ms and at most 10m in all", c.duration, c.rounds)
	case c.conns < 1 || c.conns > 1000 || c.sweepConns < 1 || c.sweepConns > 1000:
		return c, fmt.Errorf("-conns %d, -sweep-conns %d: want 1..1000", c.conns, c.sweepConns)
	case c.sweepDuration < 500*time.Millisecond || c.sweepDuration > time.Minute:
		return c, fmt.Errorf("-sweep-duration %v: want 500ms..1m", c.sweepDuration)
	case c.maxRate < c.rate || c.maxRate > 1000000:
		return c, fmt.Errorf("-max-rate %d: want -rate (%d) ..1000000", c.maxRate, c.rate)
	case c.holdP99 <= 0:
		return c, fmt.Errorf("-hold-p99 %v: want > 0", c.holdP99)
	case c.nice < -20 || c.nice > 19:
		return c, fmt.Errorf("-nice %d: want -20..19", c.nice)
	}
	return c, nil
}

func nproc() int { return runtime.NumCPU() }

func main() {
	os.Exit(benchkit.Main("l7", os.Args[1:], parseFlags, func(c config) bool { return c.verbose }, run))
}
