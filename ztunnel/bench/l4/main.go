// Command l4 benchmarks ztunnel's L4 data path against a direct pod-to-pod
// connection and a reference mTLS tunnel made of two HAProxy instances, on
// a real two-node topology of network namespaces (internal/testtopo), and
// prints one markdown table. It needs root. See README.md for what each row
// measures.
//
//	go run ./bench/l4 [-duration 5s] [-quick] [-skip-ambit] [-skip-haproxy]
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
)

// config holds the flags.
type config struct {
	duration    time.Duration
	quick       bool
	skipAmbit   bool
	skipHAProxy bool
	ztunnelBin  string
	haproxyBin  string
	rate        int
	rrConns     int
	streams     int
	crWorkers   int
	idleConns   int
	pods        int
	zLogLevel   string
	verbose     bool
	rounds      int
	hapThreads  int
	nice        int

	fdLimit uint64 // RLIMIT_NOFILE in effect
	self    string // this executable, re-run as the idle client
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("l4", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "length of each measured load phase (throughput, latency, connection rate)")
	fs.BoolVar(&c.quick, "quick", false, "short run: 2s phases, 1000 idle connections, 20 pods for the pod-count RSS row")
	fs.BoolVar(&c.skipAmbit, "skip-ambit", false, "do not measure the Ambit HBONE path (ztunnel)")
	fs.BoolVar(&c.skipHAProxy, "skip-haproxy", false, "do not measure the HAProxy mTLS pair")
	fs.StringVar(&c.ztunnelBin, "ztunnel", "", "ztunnel binary (default: go build ./cmd/ztunnel into a temporary directory)")
	fs.StringVar(&c.haproxyBin, "haproxy", "haproxy", "haproxy binary (Debian: apt-get install haproxy)")
	fs.IntVar(&c.hapThreads, "haproxy-threads", 0, "HAProxy nbthread (0: one per CPU, HAProxy's own default)")
	fs.IntVar(&c.rate, "rate", 1000, "request rate of the latency phase (req/s, 1 KiB request and response)")
	fs.IntVar(&c.rrConns, "rr-conns", 16, "persistent connections carrying the latency phase's requests")
	fs.IntVar(&c.streams, "streams", 8, "streams of the multi-stream throughput phase")
	fs.IntVar(&c.crWorkers, "cr-workers", 8, "concurrent workers of the connection-rate phase")
	fs.IntVar(&c.idleConns, "idle-conns", 10000, "idle connections opened to measure memory per connection")
	fs.IntVar(&c.pods, "pods", 100, "pods on node1 for the ztunnel idle RSS row (0 skips it)")
	fs.StringVar(&c.zLogLevel, "ztunnel-log-level", "info", "ztunnel --log-level")
	fs.BoolVar(&c.verbose, "v", false, "log progress to stderr")
	fs.IntVar(&c.rounds, "rounds", 5, "each load phase alternates between the paths in this many segments of duration/rounds")
	fs.IntVar(&c.nice, "nice", -10, "run the bench and the proxies at this nice value (-20..19), to reduce interference from other work on the machine; 0 leaves it")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			c.duration = 2 * time.Second
		}
		if !set["idle-conns"] {
			c.idleConns = 1000
		}
		if !set["pods"] {
			c.pods = 20
		}
		if !set["rounds"] {
			c.rounds = 2
		}
	}
	switch {
	case c.duration < 500*time.Millisecond || c.duration > 10*time.Minute:
		return c, fmt.Errorf("-duration %v: want 500ms..10m", c.duration)
	case c.rate < 1 || c.rate > 100000:
		return c, fmt.Errorf("-rate %d: want 1..100000", c.rate)
	case c.rrConns < 1 || c.rrConns > 1000:
		return c, fmt.Errorf("-rr-conns %d: want 1..1000", c.rrConns)
	case c.streams < 1 || c.streams > 256:
		return c, fmt.Errorf("-streams %d: want 1..256", c.streams)
	case c.crWorkers < 1 || c.crWorkers > 256:
		return c, fmt.Errorf("-cr-workers %d: want 1..256", c.crWorkers)
	case c.idleConns < 0 || c.idleConns > 50000:
		return c, fmt.Errorf("-idle-conns %d: want 0..50000", c.idleConns)
	case c.pods < 0 || c.pods > 250:
		return c, fmt.Errorf("-pods %d: want 0..250", c.pods)
	case c.rounds < 1 || c.duration/time.Duration(c.rounds) < 200*time.Millisecond:
		return c, fmt.Errorf("-rounds %d: want at least 1, and segments (duration/rounds) of at least 200ms", c.rounds)
	case c.hapThreads < 0 || c.hapThreads > 64:
		return c, fmt.Errorf("-haproxy-threads %d: want 0..64", c.hapThreads)
	case c.nice < -20 || c.nice > 19:
		return c, fmt.Errorf("-nice %d: want -20..19", c.nice)
	}
	return c, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == idleClientCmd {
		os.Exit(idleClientMain(os.Args[2:]))
	}
	os.Exit(benchkit.Main("l4", os.Args[1:], parseFlags, func(c config) bool { return c.verbose }, run))
}
