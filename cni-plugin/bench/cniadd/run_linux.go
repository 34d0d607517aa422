package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes/fake"

	"ambit.dev/cni-plugin/internal/app"
	"ambit.dev/pkg/redirect"
)

// stepTimeout bounds every setup step and each ADD and DEL.
const stepTimeout = 60 * time.Second

// measured is one chain's measurements.
type measured struct {
	kind    chainKind
	adds    []time.Duration
	rules   []time.Duration // enrolled: the agent's rules Apply, per ADD
	zt      []time.Duration // enrolled: ztunnel's AddWorkload, receive to ack
	gets    int64           // API GETs during the measured ADDs
	patches int64           // API PATCHes during the measured ADDs
	windows [][2]uint64     // CLOCK_MONOTONIC start and end of each measured ADD
	execs   []int           // programs exec'd during each measured ADD
}

// report is what the run found, printed once everything is cleaned up.
type report struct {
	chains     []*measured
	loadBefore string
	iptables   string
	plugin     string
	// execsErr says why exec counts are missing or incomplete.
	execsErr error
	// pluginStart is ambit-cni's VERSION exec, once per measured
	// iteration; pluginSize its size in bytes.
	pluginStart []time.Duration
	pluginSize  int64
}

func run(ctx context.Context, opts options, args []string, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("cniadd must run as root: it creates network namespaces, runs CNI plugins and writes iptables rules in pod netns " +
			"(e.g. go build -o /tmp/cniadd ./bench/cniadd && sudo /tmp/cniadd -n 100, from the cni-plugin directory)")
	}
	rep, err := measure(ctx, opts, stderr)
	// Whatever happened, check that the cleanup left nothing behind.
	err = errors.Join(err, checkClean())
	if err != nil {
		return err
	}
	printReport(stdout, opts, args, rep)
	return nil
}

// measure sets everything up, runs the chains and tears everything down
// (also on error and on ctx's end).
func measure(ctx context.Context, opts options, stderr io.Writer) (rep *report, err error) {
	rep = &report{loadBefore: loadavg()}
	var cleanups []func() error
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			err = errors.Join(err, cleanups[i]())
		}
	}()
	progress := func(format string, a ...any) {
		if opts.verbose {
			fmt.Fprintf(stderr, "cniadd: "+format+"\n", a...)
		}
	}

	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join(opts.cniBinDir, p)); err != nil {
			return nil, fmt.Errorf("reference CNI plugin %s not found in %s (apt-get install containernetworking-plugins, or pass -cni-bin-dir): %w", p, opts.cniBinDir, err)
		}
	}
	backend, err := parseBackend(opts.backend)
	if err != nil {
		return nil, err
	}
	ipt, _, err := backend.Binaries(redirect.IPv4)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(ipt, "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w (the agent's rules need iptables: apt-get install iptables)\n%s", ipt, err, out)
	}
	rep.iptables = strings.TrimSpace(string(out))
	if err := removeStale(); err != nil {
		return nil, err
	}

	var execs *execCounter
	if opts.countExecs {
		if execs, err = startExecCounter(); err != nil {
			rep.execsErr = err
		} else {
			cleanups = append(cleanups, func() error {
				if err := execs.stop(); err != nil && rep.execsErr == nil {
					rep.execsErr = err
				}
				return nil
			})
		}
	} else {
		rep.execsErr = errors.New("not counted (-count-execs=false)")
	}

	tmp, err := os.MkdirTemp("", "ambit-cniadd-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	cleanups = append(cleanups, func() error { return os.RemoveAll(tmp) })
	binDir := filepath.Join(tmp, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		return nil, err
	}
	rep.plugin, err = pluginBinary(ctx, opts.plugin, binDir, progress)
	if err != nil {
		return nil, err
	}

	// The node: a netns of its own, with the runtime's thread in it.
	host := nsName("host")
	if err := createNetns(host); err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() error { return deleteNetns(host) })
	runtimeThread, err := startNSThread(nsPath(host))
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() error { runtimeThread.stop(); return nil })

	// The cluster: namespaces and every pod the bench will create.
	byKind := map[chainKind][]podRef{}
	var pods []podRef
	for _, k := range chainKinds {
		for i := range opts.warmup + opts.n {
			p := podRef{namespace: k.namespace(), name: fmt.Sprintf("pod-%04d", i), uid: fmt.Sprintf("uid-%s-%04d", k.key(), i)}
			byKind[k] = append(byKind[k], p)
			pods = append(pods, p)
		}
	}
	client := fake.NewClientset(clusterObjects(chainEnrolled.namespace(),
		[]string{chainBaseline.namespace(), chainNotEnrolled.namespace()}, pods)...)
	var api apiCalls
	api.count(client)

	// The node agent, in the host netns (its HTTP servers listen there).
	level := slog.LevelWarn
	if opts.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	rules := &timedRules{in: redirect.NewInstaller(log)}
	cfg := agentConfig(tmp, backend, level)
	agentApp, err := app.New(cfg, client, log, app.Options{Rules: rules})
	if err != nil {
		return nil, err
	}
	appCtx, stopApp := context.WithCancel(context.Background())
	appDone := make(chan struct{})
	var appErr error
	if err := goInNetns(nsPath(host), func() {
		defer close(appDone)
		appErr = agentApp.Run(appCtx)
	}); err != nil {
		stopApp()
		return nil, err
	}
	cleanups = append(cleanups, func() error {
		stopApp()
		<-appDone
		if appErr != nil {
			return fmt.Errorf("node agent: %w", appErr)
		}
		return nil
	})
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := waitReady(sctx, agentApp, appDone, func() error { return appErr }); err != nil {
		return nil, err
	}
	zt, err := dialZtunnel(sctx, cfg.ZDSSocket)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, zt.close)
	if err := zt.waitLive(sctx); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filepath.Join(binDir, "ambit-cni")); err == nil {
		rep.pluginSize = fi.Size()
	}
	progress("agent ready, ztunnel connected; plugin %s", rep.plugin)

	// The runtime: libcni, as containerd uses it.
	var pluginStderr io.Writer
	if opts.verbose {
		pluginStderr = stderr
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, opts.cniBinDir}, filepath.Join(tmp, "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: pluginStderr}, PluginDecoder: version.PluginDecoder{}})
	lists := map[chainKind]*libcni.NetworkConfigList{}
	for _, k := range chainKinds {
		spec := chainSpec{IPAMDir: filepath.Join(tmp, "ipam"), DualStack: opts.dualStack}
		if k != chainBaseline {
			spec.AgentSocket = cfg.CNISocket
		}
		b, err := conflist(spec)
		if err != nil {
			return nil, err
		}
		if lists[k], err = libcni.ConfListFromBytes(b); err != nil {
			return nil, fmt.Errorf("network configuration of %v: %w", k, err)
		}
	}

	b := &bencher{cni: cni, lists: lists, thread: runtimeThread, zt: zt, rules: rules,
		check: redirect.NewInstaller(slog.New(slog.DiscardHandler)), api: &api}
	for _, k := range chainKinds {
		rep.chains = append(rep.chains, &measured{kind: k})
	}
	for i := range opts.warmup + opts.n {
		for _, m := range rotate(rep.chains, i) {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("interrupted after %d of %d pods per chain: %w", max(i-opts.warmup, 0), opts.n, err)
			}
			if err := b.one(ctx, m, byKind[m.kind][i], i >= opts.warmup); err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("interrupted: %w", err)
				}
				return nil, err
			}
		}
		d, err := b.pluginStart(ctx)
		if err != nil {
			return nil, err
		}
		if i >= opts.warmup {
			rep.pluginStart = append(rep.pluginStart, d)
		}
		if i == opts.warmup-1 {
			progress("warm-up done")
		}
	}
	progress("measured %d pods per chain", opts.n)
	if execs != nil {
		if err := execs.sync(5 * time.Second); err != nil {
			rep.execsErr = err
		}
		for _, m := range rep.chains {
			m.execs = execs.counts(m.windows)
		}
	}

	// Every DelWorkload reached ztunnel.
	deadline := time.Now().Add(10 * time.Second)
	for zt.held() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := zt.held(); n > 0 {
		return nil, fmt.Errorf("ztunnel still holds the listeners of %d deleted pods 10s after the last DEL: the agent did not send their DelWorkload", n)
	}
	if _, _, n := rules.state(); n > 0 {
		return nil, fmt.Errorf("the agent's rules Apply failed %d times", n)
	}
	return rep, nil
}

// bencher runs one pod's ADD and DEL.
type bencher struct {
	cni    *libcni.CNIConfig
	lists  map[chainKind]*libcni.NetworkConfigList
	thread *nsThread
	zt     *ztunnel
	rules  *timedRules
	check  *redirect.Installer
	api    *apiCalls
}

// one creates p's netns, times the ADD of m's chain, checks what the
// agent did, DELs (not timed) and deletes the netns.
func (b *bencher) one(ctx context.Context, m *measured, p podRef, record bool) (err error) {
	name := nsName(m.kind.key() + strings.TrimPrefix(p.name, "pod-"))
	if err := createNetns(name); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, deleteNetns(name)) }()
	rt := &libcni.RuntimeConf{
		ContainerID: fmt.Sprintf("%s-%s-%s", networkName, m.kind.key(), p.name),
		NetNS:       nsPath(name),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.namespace}, {"K8S_POD_NAME", p.name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.name}, {"K8S_POD_UID", p.uid},
		},
		CapabilityArgs: map[string]any{"portMappings": []any{}},
	}
	list := b.lists[m.kind]
	// The runtime DELs a sandbox whatever its ADD did.
	defer func() {
		err = errors.Join(err, b.thread.do(func() error {
			dctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
			defer cancel()
			if err := b.cni.DelNetworkList(dctx, list, rt); err != nil {
				return fmt.Errorf("DEL of %s/%s (%v): %w", p.namespace, p.name, m.kind, err)
			}
			return nil
		}))
	}()

	rulesBefore, _, _ := b.rules.state()
	ztBefore := b.zt.handleTimes()
	gets, patches := b.api.gets.Load(), b.api.patches.Load()
	var took time.Duration
	var window [2]uint64
	var res *current.Result
	err = b.thread.do(func() error {
		actx, cancel := context.WithTimeout(ctx, stepTimeout)
		defer cancel()
		window[0] = monotonicNow()
		start := time.Now()
		r, err := b.cni.AddNetworkList(actx, list, rt)
		took = time.Since(start)
		window[1] = monotonicNow()
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return fmt.Errorf("ADD of %s/%s (%v): %w", p.namespace, p.name, m.kind, err)
	}
	gets, patches = b.api.gets.Load()-gets, b.api.patches.Load()-patches
	rulesAfter, rulesCfg, _ := b.rules.state()
	ztAfter := b.zt.handleTimes()

	// What the ADD must have done.
	if len(res.IPs) == 0 {
		return fmt.Errorf("ADD of %s/%s (%v) returned no IP", p.namespace, p.name, m.kind)
	}
	newRules, newZt := rulesAfter[len(rulesBefore):], ztAfter[len(ztBefore):]
	switch m.kind {
	case chainEnrolled:
		if len(newRules) != 1 || len(newZt) != 1 || !b.zt.holds(p.uid) {
			return fmt.Errorf("enrolled pod %s/%s: %d rules Apply, %d ztunnel AddWorkload, ztunnel listening: %v; want 1, 1, true before ADD returns",
				p.namespace, p.name, len(newRules), len(newZt), b.zt.holds(p.uid))
		}
		st, err := b.check.Check(ctx, nsPath(name), rulesCfg)
		if err != nil {
			return fmt.Errorf("check the rules in the netns of %s/%s: %w", p.namespace, p.name, err)
		}
		if !st.Installed() {
			return fmt.Errorf("enrolled pod %s/%s: redirection rules not in place after ADD: %s", p.namespace, p.name, strings.Join(st.Problems, "; "))
		}
	default:
		if len(newRules) != 0 || len(newZt) != 0 || b.zt.holds(p.uid) {
			return fmt.Errorf("pod %s/%s (%v) was captured (%d rules Apply, %d AddWorkload) but is not enrolled", p.namespace, p.name, m.kind, len(newRules), len(newZt))
		}
	}
	if record {
		m.adds = append(m.adds, took)
		m.rules = append(m.rules, newRules...)
		m.zt = append(m.zt, newZt...)
		m.gets += gets
		m.patches += patches
		m.windows = append(m.windows, window)
	}
	return nil
}

// pluginStart times one exec of ambit-cni with CNI_COMMAND=VERSION, from
// the runtime's thread: process start and Go initialisation, no agent
// call.
func (b *bencher) pluginStart(ctx context.Context) (time.Duration, error) {
	var took time.Duration
	err := b.thread.do(func() error {
		vctx, cancel := context.WithTimeout(ctx, stepTimeout)
		defer cancel()
		start := time.Now()
		_, err := b.cni.GetVersionInfo(vctx, "ambit-cni")
		took = time.Since(start)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ambit-cni VERSION: %w", err)
	}
	return took, nil
}

// pluginBinary puts ambit-cni in binDir (a symlink to path, or a fresh
// build when path is empty) and returns what it is.
func pluginBinary(ctx context.Context, path, binDir string, progress func(string, ...any)) (string, error) {
	dst := filepath.Join(binDir, "ambit-cni")
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("-plugin: %w", err)
		}
		return abs, os.Symlink(abs, dst)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, serr := os.Stat(goBin); runtime.GOROOT() == "" || serr != nil {
			return "", fmt.Errorf("no go command to build ambit-cni (put it on PATH or pass -plugin): %w", err)
		}
	}
	progress("building ambit-cni")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", dst, "ambit.dev/cni-plugin/cmd/ambit-cni")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as the Makefile builds it
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ambit.dev/cni-plugin/cmd/ambit-cni: %w (run the bench from the cni-plugin module, or pass -plugin)\n%s", err, out.Bytes())
	}
	return "built by the bench: CGO_ENABLED=0 go build -trimpath ./cmd/ambit-cni", nil
}

func parseBackend(s string) (redirect.Backend, error) {
	switch s {
	case "auto", "":
		return redirect.BackendAuto, nil
	case string(redirect.BackendNFT), string(redirect.BackendLegacy):
		return redirect.Backend(s), nil
	}
	return "", fmt.Errorf("-iptables-backend %q: want auto, nft or legacy", s)
}

// checkClean verifies that no netns of this run is left and that the
// bridge never appeared in the root netns.
func checkClean() error {
	var errs []error
	left, err := ownNetns()
	if err != nil {
		errs = append(errs, err)
	}
	if len(left) > 0 {
		errs = append(errs, fmt.Errorf("netns left behind: %v (delete them with ip netns del)", left))
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		errs = append(errs, fmt.Errorf("bridge %s exists in the root netns: delete it with ip link del %s", bridgeName, bridgeName))
	}
	return errors.Join(errs...)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func kernel() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func printReport(w io.Writer, opts options, args []string, rep *report) {
	fmt.Fprintf(w, "Command: `%s`\n\n", shellQuote(args))
	fmt.Fprintf(w, "- %s, %d CPUs, kernel %s, %s/%s\n", runtime.Version(), runtime.NumCPU(), kernel(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "- load average before / after: %s / %s\n", rep.loadBefore, loadavg())
	fmt.Fprintf(w, "- %s; reference plugins from %s; ambit-cni %s\n", rep.iptables, opts.cniBinDir, rep.plugin)
	stack := "IPv4 pods"
	if opts.dualStack {
		stack = "dual-stack pods (IPv4 and IPv6 rules)"
	}
	fmt.Fprintf(w, "- %d pods per chain after %d warm-up pods, chains interleaved (rotating order), %s; wall time of libcni AddNetworkList from the host netns\n\n",
		opts.n, opts.warmup, stack)

	rows := make([]chainResult, len(rep.chains))
	for i, m := range rep.chains {
		rows[i] = chainResult{name: m.kind.String(), sum: summarize(m.adds)}
	}
	writeTable(w, rows)
	fmt.Fprintln(w)

	var base, on *measured
	for _, m := range rep.chains {
		switch m.kind {
		case chainBaseline:
			base = m
		case chainEnrolled:
			on = m
		}
	}
	if base != nil && on != nil {
		fmt.Fprintf(w, "- target: %s\n", verdict(summarize(base.adds), summarize(on.adds), opts.target))
		r, z := summarize(on.rules), summarize(on.zt)
		fmt.Fprintf(w, "- inside an enrolled ADD: the agent's rules Apply (pkg/redirect, iptables run in the pod netns) p50 %s / p99 %s ms; "+
			"ztunnel's AddWorkload, receive to ack (setns + 3 listeners) p50 %s / p99 %s ms\n",
			msec(r.p50), msec(r.p99), msec(z.p50), msec(z.p99))
	}
	if ps := summarize(rep.pluginStart); ps.n > 0 {
		fmt.Fprintf(w, "- ambit-cni alone (%.1f MB; exec with CNI_COMMAND=VERSION: process start and Go init, no agent call): p50 %s / p99 %s ms\n",
			float64(rep.pluginSize)/1e6, msec(ps.p50), msec(ps.p99))
	}
	if rep.execsErr == nil {
		var parts []string
		for _, m := range rep.chains {
			lo, hi := slices.Min(m.execs), slices.Max(m.execs)
			part := fmt.Sprintf("%s: %d", m.kind.key(), medianInt(m.execs))
			if lo != hi {
				part += fmt.Sprintf(" (%d..%d)", lo, hi)
			}
			parts = append(parts, part)
		}
		fmt.Fprintf(w, "- programs exec'd per ADD (CNI plugins, the IPAM plugin, iptables), median: %s\n", strings.Join(parts, ", "))
	} else {
		fmt.Fprintf(w, "- programs exec'd per ADD: unknown: %v\n", rep.execsErr)
	}
	for _, m := range rep.chains {
		if m.kind == chainBaseline {
			continue
		}
		fmt.Fprintf(w, "- %s: %d API GETs and %d PATCHes during %d ADDs\n", m.kind, m.gets, m.patches, len(m.adds))
	}
	fmt.Fprintln(w, "- the agent reads pods and namespaces from its informer cache (as in production: the API server is not on the ADD path); "+
		"the one PATCH per enrolled pod (the ambit.dev/redirection annotation, sent in the background once the ADD answered) goes to the in-memory fake clientset here, "+
		"so a real API server's PATCH round trip is not included")
	fmt.Fprintln(w, "- cleanup: no netns of this run left in /run/netns, no bridge "+bridgeName+" in the root netns")
}
