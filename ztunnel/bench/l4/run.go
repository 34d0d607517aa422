package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
	"ambit.dev/ztunnel/internal/testtopo"
)

func nproc() int { return runtime.NumCPU() }

// result is what one path measured; zero values print as "—".
type result struct {
	name    string
	proxies bool
	err     error    // the path could not be measured (first fatal error)
	notes   []string // non-fatal problems and observations

	tput1, tput8       float64 // MB/s
	p50, p99           time.Duration
	roundP99           []time.Duration // p99 of each latency segment
	rrDone, rrErrs     int
	cpuPerGB           float64 // CPU seconds, all proxies
	cpuPer1kReq        float64 // CPU seconds, all proxies
	vcpuAtRate         float64 // vCPU, all proxies
	rssIdle, rssLoad   []uint64
	rssFileIdle        []uint64 // file-backed part of rssIdle (binary pages)
	rssRate            []uint64
	perConn            []float64 // bytes per idle connection, per proxy
	idleOpened         int
	connsPerSec        float64
	podsRSS            uint64 // ztunnel on node1 with cfg.pods pods
	measuredThroughput bool
	measuredLatency    bool
	measuredConnRate   bool
}

func (r *result) notef(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func run(ctx context.Context, cfg config, log *slog.Logger, cmdline string) error {
	fdLimit, err := benchkit.Prepare(cfg.nice)
	if err != nil {
		return err
	}
	haproxyBin := ""
	if !cfg.skipHAProxy {
		if haproxyBin, err = exec.LookPath(cfg.haproxyBin); err != nil {
			return fmt.Errorf("the reference tunnel needs HAProxy: install it with `apt-get install haproxy`, or pass -skip-haproxy: %w", err)
		}
	}
	cfg.fdLimit = fdLimit
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the bench executable (it re-runs itself as the idle-connection client): %w", err)
	}
	cfg.self = self
	dir, err := os.MkdirTemp("", "ambit-bench-l4-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ztunnelBin := cfg.ztunnelBin
	if !cfg.skipAmbit && ztunnelBin == "" {
		ztunnelBin = filepath.Join(dir, "ztunnel")
		log.Info("building ztunnel", "out", ztunnelBin)
		if err := benchkit.GoBuild(ctx, ztunnelBin, "./cmd/ztunnel"); err != nil {
			return fmt.Errorf("%w (run the bench from the ztunnel module directory, pass -ztunnel, or -skip-ambit)", err)
		}
	}

	facts := append(benchkit.MachineFacts(), fmt.Sprintf("RLIMIT_NOFILE: %d", fdLimit), fmt.Sprintf("nice: %d (bench and proxies)", benchkit.CurrentNice()))
	// Pod 1 of each node carries the Ambit path (redirection rules), pod 2
	// the direct and HAProxy paths: all paths coexist, so phases can
	// alternate between them.
	topo, err := testtopo.New(ctx, testtopo.Options{Nodes: 2, PodsPerNode: 2, Logger: log})
	if err != nil {
		return err
	}
	defer topo.Close()
	if err := tuneForLoad(topo); err != nil {
		return err
	}
	meshEnv := &env{topo: topo, client: topo.Nodes[0].Pods[0], server: topo.Nodes[1].Pods[0], dir: dir}
	plainEnv := &env{topo: topo, client: topo.Nodes[0].Pods[1], server: topo.Nodes[1].Pods[1], dir: dir}
	for _, e := range []*env{meshEnv, plainEnv} {
		if e.srv, err = startServers(topo, e.server); err != nil {
			return err
		}
		defer e.srv.Close()
	}

	var ver string
	if !cfg.skipHAProxy {
		if out, err := exec.Command(haproxyBin, "-v").Output(); err == nil {
			ver, _, _ = strings.Cut(string(out), "\n")
		}
	}
	paths := []path{&direct{e: plainEnv}}
	if !cfg.skipHAProxy {
		paths = append(paths, &haproxyPair{e: plainEnv, bin: haproxyBin, maxConn: haproxyMaxConn(fdLimit), threads: cmp.Or(cfg.hapThreads, nproc())})
	}
	var amb *ambit
	if !cfg.skipAmbit {
		amb = &ambit{e: meshEnv, bin: ztunnelBin, logLevel: cfg.zLogLevel}
		paths = append(paths, amb)
	}
	results := measureAll(ctx, cfg, paths, log)
	if amb != nil {
		if err := amb.removeRedirect(context.WithoutCancel(ctx)); err != nil {
			log.Warn("remove redirection", "err", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	printReport(os.Stdout, cfg, cmdline, facts, ver, results)
	return nil
}

// tuneForLoad widens the ephemeral port range and lets TIME_WAIT ports be
// reused in the pods and nodes (not in the root netns): the connection-rate
// phase opens tens of thousands of connections between the same addresses.
func tuneForLoad(topo *testtopo.Topology) error {
	var nss []string
	for _, n := range topo.Nodes {
		nss = append(nss, n.NetnsPath)
		for _, p := range n.Pods {
			nss = append(nss, p.NetnsPath)
		}
	}
	for _, ns := range nss {
		err := topo.Do(ns, func() error {
			for k, v := range map[string]string{
				"net/ipv4/ip_local_port_range": "10000 65000",
				"net/ipv4/tcp_tw_reuse":        "1",
			} {
				if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0); err != nil {
					return fmt.Errorf("sysctl %s: %w", k, err)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("tune %s: %w", ns, err)
		}
	}
	return nil
}

// lane is one path under measurement.
type lane struct {
	p    path
	r    *result
	dial dialFunc
	ok   bool // still measurable
}

// measureAll measures every path. All proxies run at once and every load
// phase alternates between the paths in cfg.rounds short segments, so
// background load on the machine affects the paths alike. Then, path by
// path on freshly restarted proxies: memory per idle connection, and the
// ztunnel pod-count RSS.
func measureAll(ctx context.Context, cfg config, paths []path, log *slog.Logger) []*result {
	var lanes []*lane
	var results []*result
	for _, p := range paths {
		l := &lane{p: p, r: &result{name: p.Name()}, dial: p.Env().dialer(p)}
		results = append(results, l.r)
		lanes = append(lanes, l)
		if err := p.Start(ctx); err != nil {
			l.r.err = err
			continue
		}
		l.ok = true
		l.r.proxies = len(p.PIDs()) > 0
	}
	defer func() {
		for _, l := range lanes {
			l.r.notes = append(l.r.notes, benchkit.ProblemLines(l.p.Output())...)
			_ = l.p.Stop()
		}
	}()
	for _, l := range lanes {
		if !l.ok {
			continue
		}
		srv := l.p.Env().srv
		srv.takePeers()
		if err := waitPath(ctx, l.dial, 10*time.Second); err != nil {
			l.r.err, l.ok = err, false
			continue
		}
		l.r.notef("the server saw connections from %v", slices.Sorted(mapKeys(srv.takePeers())))
	}
	time.Sleep(time.Second)
	for _, l := range lanes {
		if l.ok && l.r.proxies {
			rss, err := benchkit.RSSBytes(l.p.PIDs())
			if err != nil {
				l.r.err, l.ok = err, false
				continue
			}
			l.r.rssIdle = rss
			if l.r.rssFileIdle, err = benchkit.FileRSSBytes(l.p.PIDs()); err != nil {
				l.r.err, l.ok = err, false
			}
		}
	}
	seg := cfg.duration / time.Duration(cfg.rounds)
	active := func() []*lane {
		var out []*lane
		for _, l := range lanes {
			if l.ok && ctx.Err() == nil {
				out = append(out, l)
			}
		}
		return out
	}

	// Latency at a fixed rate: a warm-up per path, then the rounds. It
	// runs before the throughput phases so that its RSS peak is the
	// memory of that rate, not what the runtime still holds after moving
	// hundreds of MB/s (Go returns freed memory to the OS over minutes).
	meters := map[*lane]*benchkit.Meter{}
	samples := map[*lane][]time.Duration{}
	rrConns := map[*lane][]net.Conn{}
	for _, l := range active() {
		cs, err := dialPersistent(ctx, l.dial, cfg.rrConns)
		if err != nil {
			l.r.notef("latency: could not open %d persistent connections: %v", cfg.rrConns, err)
			continue
		}
		rrConns[l] = cs
		if w := latency(ctx, cs, cfg.rate, 1024, time.Second); w.err != nil {
			l.r.notef("latency warm-up: %d errors, first: %v", w.errs, w.err)
		}
		meters[l] = &benchkit.Meter{PIDs: l.p.PIDs()}
	}
	for range cfg.rounds {
		for _, l := range active() {
			cs := rrConns[l]
			if cs == nil {
				continue
			}
			meters[l].Segment(func() {
				lr := latency(ctx, cs, cfg.rate, 1024, seg)
				samples[l] = append(samples[l], lr.samples...)
				if len(lr.samples) > 0 {
					l.r.roundP99 = append(l.r.roundP99, benchkit.Percentile(lr.samples, 0.99))
				}
				l.r.rrErrs += lr.errs
				if lr.err != nil {
					l.r.notef("latency: %d of %d requests failed, first: %v", lr.errs, lr.sent, lr.err)
				}
			})
		}
	}
	for _, cs := range rrConns {
		closeAll(cs)
	}
	for _, l := range active() {
		r, m, s := l.r, meters[l], samples[l]
		r.rssRate = m.Peak
		if len(s) == 0 {
			continue
		}
		slices.Sort(s)
		r.measuredLatency = true
		r.p50, r.p99 = benchkit.Percentile(s, 0.50), benchkit.Percentile(s, 0.99)
		r.rrDone = len(s)
		if r.proxies && m.Err == nil {
			r.cpuPer1kReq = m.Total() / (float64(len(s)) / 1000)
			r.vcpuAtRate = m.Total() / (seg * time.Duration(cfg.rounds)).Seconds()
		}
		log.Info("latency done", "path", r.name, "p50", r.p50, "p99", r.p99)
	}

	// Throughput: single stream, then cfg.streams streams.
	type tput struct {
		bytes   int64
		elapsed time.Duration
		err     error
	}
	t1, tn := map[*lane]*tput{}, map[*lane]*tput{}
	for _, l := range active() {
		meters[l] = &benchkit.Meter{PIDs: l.p.PIDs()}
		t1[l], tn[l] = &tput{}, &tput{}
	}
	for range cfg.rounds {
		for _, streams := range []int{1, cfg.streams} {
			for _, l := range active() {
				acc := t1[l]
				if streams != 1 {
					acc = tn[l]
				}
				if acc.err != nil {
					continue
				}
				meters[l].Segment(func() {
					b, el, err := throughput(ctx, l.p.Env().srv, l.dial, streams, seg)
					acc.bytes += b
					acc.elapsed += el
					acc.err = err
				})
			}
		}
	}
	for _, l := range active() {
		r, m := l.r, meters[l]
		r.rssLoad = m.Peak
		switch {
		case t1[l].err != nil:
			r.notef("single-stream throughput failed: %v", t1[l].err)
		case tn[l].err != nil:
			r.notef("%d-stream throughput failed: %v", cfg.streams, tn[l].err)
		default:
			r.measuredThroughput = true
			r.tput1 = float64(t1[l].bytes) / t1[l].elapsed.Seconds() / 1e6
			r.tput8 = float64(tn[l].bytes) / tn[l].elapsed.Seconds() / 1e6
			if r.proxies && m.Err == nil {
				r.cpuPerGB = m.Total() / (float64(t1[l].bytes+tn[l].bytes) / 1e9)
			}
		}
		log.Info("throughput done", "path", r.name, "1", r.tput1, "n", r.tput8)
	}

	// Connection rate.
	okN, badN := map[*lane]int64{}, map[*lane]int64{}
	for range cfg.rounds {
		for _, l := range active() {
			ok, bad, err := connRate(ctx, l.dial, cfg.crWorkers, seg)
			okN[l] += ok
			badN[l] += bad
			if bad > 0 {
				l.r.notef("connection rate: %d of %d connections failed, first: %v", bad, ok+bad, err)
			}
		}
	}
	for _, l := range active() {
		if okN[l] > 0 {
			l.r.measuredConnRate = true
			l.r.connsPerSec = float64(okN[l]) / (seg * time.Duration(cfg.rounds)).Seconds()
		}
		log.Info("connection rate done", "path", l.r.name, "cps", l.r.connsPerSec)
		if a, isAmbit := l.p.(*ambit); isAmbit {
			n1, err1 := a.openedConnections(ctx, a.e.client.Node)
			n2, err2 := a.openedConnections(ctx, a.e.server.Node)
			if err := errors.Join(err1, err2); err != nil {
				l.r.notef("could not read ztunnel metrics: %v", err)
			} else {
				l.r.notef("ztunnel metrics: istio_tcp_connections_opened_total node1 %.0f, node2 %.0f", n1, n2)
			}
		}
	}

	// Path by path, on restarted proxies.
	for _, l := range active() {
		if !l.r.proxies {
			continue
		}
		if cfg.idleConns > 0 {
			measureIdle(ctx, cfg, l, log)
		}
		if a, isAmbit := l.p.(*ambit); isAmbit && cfg.pods > 0 && ctx.Err() == nil {
			if err := measurePods(ctx, cfg, a, l.r); err != nil {
				l.r.notef("%d-pod RSS not measured: %v", cfg.pods, err)
			}
		}
	}
	return results
}

// measureIdle measures memory per idle connection on freshly restarted
// proxies (so memory freed by the load phases cannot hide the cost).
func measureIdle(ctx context.Context, cfg config, l *lane, log *slog.Logger) {
	p, r := l.p, l.r
	r.notes = append(r.notes, benchkit.ProblemLines(p.Output())...)
	_ = p.Stop()
	if err := p.Start(ctx); err != nil {
		r.notef("restart for the idle-connection phase failed: %v", err)
		return
	}
	pids := p.PIDs()
	if err := waitPath(ctx, l.dial, 10*time.Second); err != nil {
		r.notef("idle-connection phase: %v", err)
		return
	}
	time.Sleep(time.Second)
	before, err := benchkit.RSSBytes(pids)
	if err != nil {
		r.notef("idle-connection phase: %v", err)
		return
	}
	n := cfg.idleConns
	if _, ok := p.(*haproxyPair); ok {
		// Each HAProxy holds two descriptors per tunnelled connection.
		n = min(n, haproxyMaxConn(cfg.fdLimit))
	}
	opened, failed, hold, err := holdIdle(ctx, cfg, p.Env(), p, n)
	if err != nil {
		r.notef("idle-connection phase: %v", err)
		return
	}
	defer hold.Stop(5 * time.Second)
	if failed != "" {
		r.notef("idle connections: %s", failed)
	}
	time.Sleep(2 * time.Second)
	after, err := benchkit.RSSBytes(pids)
	if err != nil {
		r.notef("idle-connection phase: %v", err)
		return
	}
	r.idleOpened = opened
	if opened > 0 {
		for i := range pids {
			r.perConn = append(r.perConn, (float64(after[i])-float64(before[i]))/float64(opened))
		}
	}
	log.Info("idle connections done", "path", p.Name(), "opened", opened, "perConn", r.perConn)
}

// haproxyMaxConn is the most connections one HAProxy can tunnel with fd
// descriptors (two per connection, some for itself).
func haproxyMaxConn(fd uint64) int { return int(fd-300) / 2 }

// holdIdle starts the bench itself as idle client in the client pod: it
// opens n connections through p, does one echo on each, prints a summary
// and holds them until stopped. It returns once they are open.
func holdIdle(ctx context.Context, cfg config, e *env, p path, n int) (int, string, *testtopo.Process, error) {
	proc, err := e.topo.Start(ctx, e.client.NetnsPath, cfg.self, idleClientCmd,
		"-addr", p.Addr(echoPort), "-n", strconv.Itoa(n), "-parallel", "32")
	if err != nil {
		return 0, "", nil, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		for line := range strings.Lines(proc.Output()) {
			var opened, failed int
			if _, err := fmt.Sscanf(line, "opened %d failed %d", &opened, &failed); err == nil {
				msg := ""
				if failed > 0 {
					msg = strings.TrimSpace(line)
				}
				return opened, msg, proc, nil
			}
		}
		if proc.Exited() {
			return 0, "", nil, fmt.Errorf("idle client exited: %v\n%s", proc.Err(), proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = proc.Stop(time.Second)
	return 0, "", nil, fmt.Errorf("idle client did not finish opening %d connections within 5 minutes", n)
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// measurePods restarts ztunnel with cfg.pods pods on node1 (the client and
// cfg.pods-1 more) and records node1's ztunnel RSS once every pod has its
// HBONE listener.
func measurePods(ctx context.Context, cfg config, a *ambit, r *result) error {
	e := a.e
	_ = a.Stop()
	for len(a.extraPods) < cfg.pods-1 {
		p, err := e.topo.AddPod(ctx, e.client.Node)
		if err != nil {
			return err
		}
		a.extraPods = append(a.extraPods, p)
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	defer a.Stop()
	pods := append([]*testtopo.Pod{e.client}, a.extraPods...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for _, p := range pods {
			out, err := e.topo.Exec(ctx, p.NetnsPath, "ss", "-Hltn", "sport = :15008")
			if err != nil || len(strings.TrimSpace(string(out))) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d pods on node1 have no ztunnel listener on :15008 after 60s", missing, len(pods))
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	rss, err := benchkit.RSSBytes(a.PIDs()[:1])
	if err != nil {
		return err
	}
	r.podsRSS = rss[0]
	return nil
}
