package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
)

// result is what one path measured.
type result struct {
	name    string
	proxies bool
	l7      bool
	err     error
	notes   []string

	base     phase // at cfg.rate
	roundP99 []time.Duration
	rssIdle  uint64 // L7 proxy
	rssFile  uint64 // file-backed part of rssIdle (binary pages)
	rssPeak  uint64 // L7 proxy, peak over the fixed-rate and sweep phases
	best     *phase // highest rate held
	sweepEnd string // why the sweep stopped
}

// phase is one load phase's outcome.
type phase struct {
	rate                      int
	samples                   []time.Duration // sorted
	errs                      int
	cpuAll, cpuL7             float64 // CPU seconds
	readsL7, writesL7         uint64  // system calls of the L7 proxy
	elapsed                   time.Duration
	measured                  bool
	p50, p99                  time.Duration
	perKAll, perKL7           float64 // CPU seconds per 1000 requests
	readsPerReq, writesPerReq float64 // L7 proxy system calls per request
}

func (p *phase) finish() {
	if len(p.samples) == 0 {
		return
	}
	slices.Sort(p.samples)
	p.measured = true
	p.p50, p.p99 = benchkit.Percentile(p.samples, 0.50), benchkit.Percentile(p.samples, 0.99)
	k := float64(len(p.samples)) / 1000
	p.perKAll, p.perKL7 = p.cpuAll/k, p.cpuL7/k
	n := float64(len(p.samples))
	p.readsPerReq, p.writesPerReq = float64(p.readsL7)/n, float64(p.writesL7)/n
}

func (r *result) notef(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func buildBinary(ctx context.Context, dir, pkg, name string, log *slog.Logger) (string, error) {
	out := filepath.Join(dir, name)
	log.Info("building", "pkg", pkg, "out", out)
	if err := benchkit.GoBuild(ctx, out, pkg); err != nil {
		return "", fmt.Errorf("%w (run the bench inside the repository's Go workspace, or pass the binary's flag)", err)
	}
	return out, nil
}

func run(ctx context.Context, cfg config, log *slog.Logger, cmdline string) error {
	if _, err := benchkit.Prepare(cfg.nice); err != nil {
		return err
	}
	haproxyBin := ""
	if !cfg.skipRef {
		var err error
		if haproxyBin, err = exec.LookPath(cfg.haproxyBin); err != nil {
			return fmt.Errorf("the reference L7 proxy is HAProxy: install it with `apt-get install haproxy`, or pass -skip-reference: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "ambit-bench-l7-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	zBin, wBin := cfg.ztunnelBin, cfg.waypointBin
	if zBin == "" {
		if zBin, err = buildBinary(ctx, dir, "ambit.dev/ztunnel/cmd/ztunnel", "ztunnel", log); err != nil {
			return err
		}
	}
	if wBin == "" {
		if wBin, err = buildBinary(ctx, dir, "ambit.dev/waypoint/cmd/ambit-waypoint", "ambit-waypoint", log); err != nil {
			return err
		}
	}
	facts := append(benchkit.MachineFacts(), fmt.Sprintf("nice: %d (bench and proxies)", benchkit.CurrentNice()))
	if len(cfg.waypointEnv) > 0 {
		facts = append(facts, "waypoint environment: "+strings.Join(cfg.waypointEnv, " "))
	}
	if !cfg.skipRef {
		if out, err := exec.Command(haproxyBin, "-v").Output(); err == nil {
			line, _, _ := strings.Cut(string(out), "\n")
			facts = append(facts, "reference: "+line)
		}
	}

	topo, err := benchkit.NewTopology(ctx, benchkit.Options{Nodes: 3, PodsPerNode: 2, Logger: log})
	if err != nil {
		return err
	}
	defer topo.Close()
	tp := &topology{t: topo, dir: dir,
		meshClient: topo.Nodes[0].Pods[0], plainClient: topo.Nodes[0].Pods[1],
		meshServer: topo.Nodes[1].Pods[0], plainServer: topo.Nodes[1].Pods[1],
		waypointPod: topo.Nodes[2].Pods[0], refPod: topo.Nodes[2].Pods[1]}
	meshBackend, err := startBackend(topo, tp.meshServer, waypointPort, l4Port)
	if err != nil {
		return err
	}
	defer meshBackend.Close()
	plainBackend, err := startBackend(topo, tp.plainServer, waypointPort)
	if err != nil {
		return err
	}
	defer plainBackend.Close()

	m := &mesh{tp: tp}
	var extraNotes []string
	defer func() { _ = m.stop(context.WithoutCancel(ctx)) }()
	if err := m.start(ctx, zBin, wBin, cfg.zLogLevel, cfg.wLogLevel, cfg.waypointEnv); err != nil {
		return fmt.Errorf("start the mesh: %w", err)
	}
	ref := &reference{tp: tp, bin: haproxyBin}
	if !cfg.skipRef {
		defer ref.stop()
		if err := ref.start(ctx); err != nil {
			return fmt.Errorf("start the HAProxy reference: %w", err)
		}
	}

	paths := []*path{
		{name: "direct", dial: tp.dialer(tp.plainClient, netip.AddrPortFrom(tp.plainServer.IP, waypointPort).String()), pids: func() []int { return nil }, l7: -1},
		{name: "L4 only (2 ztunnels)", dial: tp.dialer(tp.meshClient, netip.AddrPortFrom(tp.meshServer.IP, l4Port).String()),
			pids: func() []int { return pidsOf(m.ztunnels[0], m.ztunnels[1]) }, l7: -1},
		{name: "L4 + waypoint", dial: tp.dialer(tp.meshClient, netip.AddrPortFrom(serviceVIP, servicePort).String()),
			pids: func() []int { return pidsOf(m.ztunnels[0], m.ztunnels[1], m.waypoint) }, l7: 2},
	}
	if !cfg.skipRef {
		paths = append(paths, &path{name: "HAProxy L7 reference", dial: tp.dialer(tp.plainClient, fmt.Sprintf("127.0.0.1:%d", refFront)),
			pids: func() []int { return pidsOf(ref.procs[0], ref.procs[1], ref.procs[2]) }, l7: 1})
	}
	results := measure(ctx, cfg, paths, tp, log)
	results[2].notes = append(results[2].notes, m.counters(ctx)...)
	results[2].notef("backend requests: behind the waypoint (ports %d and %d) %d, plain server %d", waypointPort, l4Port, meshBackend.requests.Load(), plainBackend.requests.Load())
	extraNotes = append(extraNotes, m.stop(context.WithoutCancel(ctx))...)
	m.redirect, m.ztunnels, m.waypoint, m.cp = false, [2]*benchkit.Process{}, nil, nil
	if !cfg.skipRef {
		extraNotes = append(extraNotes, ref.stop()...)
		ref.procs = [3]*benchkit.Process{}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	printReport(os.Stdout, cfg, cmdline, facts, results, extraNotes)
	return nil
}

// lane is a path under measurement with its persistent connections.
type lane struct {
	p  *path
	r  *result
	cs []*client
}

func (l *lane) segment(ctx context.Context, ph *phase, conns, rate int, d time.Duration) benchkit.LoadResult {
	pids := l.p.pids()
	mt := &benchkit.Meter{PIDs: pids}
	var lr benchkit.LoadResult
	t0 := time.Now()
	mt.Segment(func() { lr = load(ctx, l.cs, conns, rate, d) })
	ph.elapsed += time.Since(t0)
	ph.samples = append(ph.samples, lr.Samples...)
	ph.errs += lr.Errs
	if mt.Err != nil {
		l.r.notef("CPU/RSS not measured: %v", mt.Err)
	} else if len(pids) > 0 {
		ph.cpuAll += mt.Total()
		if l.p.l7 >= 0 {
			ph.cpuL7 += mt.CPU[l.p.l7]
			ph.readsL7 += mt.Reads[l.p.l7]
			ph.writesL7 += mt.Writes[l.p.l7]
			l.r.rssPeak = max(l.r.rssPeak, mt.Peak[l.p.l7])
		}
	}
	if lr.Err != nil {
		l.r.notef("at %d req/s: %d of %d requests failed, first: %v", rate, lr.Errs, lr.Sent, lr.Err)
	}
	return lr
}

func measure(ctx context.Context, cfg config, paths []*path, tp *topology, log *slog.Logger) []*result {
	var lanes []*lane
	var results []*result
	pool := max(cfg.conns, cfg.sweepConns)
	for _, p := range paths {
		r := &result{name: p.name, proxies: p.l7 >= 0 || len(p.pids()) > 0, l7: p.l7 >= 0}
		results = append(results, r)
		if err := waitPath(ctx, p.dial, 30*time.Second); err != nil {
			r.err = err
			continue
		}
		cs, err := openClients(ctx, p.dial, pool)
		if err != nil {
			r.err = fmt.Errorf("open %d persistent connections: %w", pool, err)
			continue
		}
		lanes = append(lanes, &lane{p: p, r: r, cs: cs})
	}
	defer func() {
		for _, l := range lanes {
			closeClients(l.cs)
		}
	}()
	time.Sleep(time.Second)
	for _, l := range lanes {
		if l.p.l7 >= 0 {
			pid := []int{l.p.pids()[l.p.l7]}
			if rss, err := benchkit.RSSBytes(pid); err == nil {
				l.r.rssIdle = rss[0]
			}
			if rss, err := benchkit.FileRSSBytes(pid); err == nil {
				l.r.rssFile = rss[0]
			}
		}
		var warm phase
		l.segment(ctx, &warm, cfg.conns, cfg.rate, time.Second)
	}

	// The fixed rate, alternating between the paths.
	var profile chan error
	seg := cfg.duration / time.Duration(cfg.rounds)
	for round := range cfg.rounds {
		for _, l := range lanes {
			if ctx.Err() != nil {
				break
			}
			if cfg.cpuProfile != "" && round == 0 && l.p.l7 >= 0 && l.p.name == "L4 + waypoint" {
				profile = startProfile(ctx, tp, cfg.cpuProfile, seg)
			}
			var ph phase
			lr := l.segment(ctx, &ph, cfg.conns, cfg.rate, seg)
			if len(lr.Samples) > 0 {
				l.r.roundP99 = append(l.r.roundP99, benchkit.Percentile(lr.Samples, 0.99))
			}
			l.r.base.merge(ph)
		}
	}
	if profile != nil {
		if err := <-profile; err != nil {
			log.Warn("waypoint CPU profile", "err", err)
		}
	}
	if cfg.memProfile != "" {
		if err := fetchProfile(ctx, tp, "/debug/pprof/heap", cfg.memProfile); err != nil {
			log.Warn("waypoint heap profile", "err", err)
		}
	}
	for _, l := range lanes {
		l.r.base.rate = cfg.rate
		l.r.base.finish()
		log.Info("fixed rate done", "path", l.r.name, "p50", l.r.base.p50, "p99", l.r.base.p99)
	}
	if cfg.skipSweep {
		return results
	}

	// The sweep: path by path, doubling the rate while the path holds it.
	for _, l := range lanes {
		if held, _ := holds(l.r.base, cfg.holdP99); !held {
			_, why := holds(l.r.base, cfg.holdP99)
			l.r.sweepEnd = fmt.Sprintf("%d req/s not held: %s", cfg.rate, why)
			continue
		}
		best := l.r.base
		l.r.best = &best
		for _, rate := range sweepRates(cfg.rate, cfg.maxRate) {
			if ctx.Err() != nil {
				break
			}
			ph := phase{rate: rate}
			l.segment(ctx, &ph, cfg.sweepConns, rate, cfg.sweepDuration)
			ph.finish()
			ok, why := holds(ph, cfg.holdP99)
			log.Info("sweep", "path", l.r.name, "rate", rate, "p99", ph.p99, "held", ok)
			if !ok {
				l.r.sweepEnd = fmt.Sprintf("%d req/s not held: %s", rate, why)
				break
			}
			l.r.best = &ph
		}
		if l.r.sweepEnd == "" {
			l.r.sweepEnd = fmt.Sprintf("held up to -max-rate %d req/s", cfg.maxRate)
		}
	}
	return results
}

func (p *phase) merge(o phase) {
	p.samples = append(p.samples, o.samples...)
	p.errs += o.errs
	p.cpuAll += o.cpuAll
	p.cpuL7 += o.cpuL7
	p.readsL7 += o.readsL7
	p.writesL7 += o.writesL7
	p.elapsed += o.elapsed
}

// sweepRates are the rates the sweep tries after base: doubling, up to max.
func sweepRates(base, maxRate int) []int {
	var out []int
	for r := base * 2; r <= maxRate; r *= 2 {
		out = append(out, r)
	}
	return out
}

// holds reports whether a phase held its rate: every request answered
// and p99 within limit; else why not.
func holds(p phase, limit time.Duration) (bool, string) {
	switch {
	case p.errs > 0:
		return false, fmt.Sprintf("%d requests failed", p.errs)
	case !p.measured:
		return false, "no request answered"
	case p.p99 > limit:
		return false, fmt.Sprintf("p99 %.1f ms > %v", p.p99.Seconds()*1000, limit)
	}
	return true, ""
}

// startProfile fetches the waypoint's CPU profile for d (the admin
// endpoint's pprof, inside the waypoint pod) and writes it to file.
func startProfile(ctx context.Context, tp *topology, file string, d time.Duration) chan error {
	done := make(chan error, 1)
	go func() {
		secs := max(1, int(d.Seconds()))
		ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+10*time.Second)
		defer cancel()
		done <- fetchProfile(ctx, tp, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), file)
	}()
	return done
}

// fetchProfile writes the waypoint's admin endpoint's answer to path.
func fetchProfile(ctx context.Context, tp *topology, path, file string) error {
	code, body, err := benchkit.NodeGet(ctx, tp.t, tp.waypointPod.NetnsPath, 15000, path)
	switch {
	case err != nil:
		return err
	case code != 200:
		return fmt.Errorf("%s answered %d: %s", path, code, body)
	}
	return os.WriteFile(file, []byte(body), 0o644)
}
