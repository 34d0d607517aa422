// Package inpod runs ztunnel's listeners inside the network namespaces of
// the pods it captures. For each pod it opens, inside the pod's netns and
// with SO_REUSEPORT and ztunnel's mark, the outbound listener (15001), the
// inbound plaintext listener (15006) and the HBONE listener (15008), and
// serves them until the pod is removed or ztunnel shuts down; then it stops
// accepting and lets open connections finish for up to the drain period.
//
// Pods come from AddPod(uid, netns) — driven by the node agent over ZDS
// (internal/zds) — or, in file mode, from the workload state: every mesh
// workload of this node with a netns path.
package inpod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/redirect"
	"ambit.dev/ztunnel/internal/inbound"
	"ambit.dev/ztunnel/internal/outbound"
	"ambit.dev/ztunnel/internal/proxy"
	"ambit.dev/ztunnel/internal/socket"
	"ambit.dev/ztunnel/internal/state"
)

// Default ports and mark: the ones pkg/redirect's in-pod rules send
// traffic to and exempt, taken from there so the two cannot drift apart.
const (
	DefaultOutboundPort         = redirect.DefaultOutboundPort
	DefaultInboundPlaintextPort = redirect.DefaultInboundPlaintextPort
	DefaultHBONEPort            = redirect.DefaultHBONEPort
	DefaultMark                 = redirect.DefaultZtunnelMark
	DefaultDrainPeriod          = 30 * time.Second
)

// migrateReqSysctl makes the kernel move connections waiting in the accept
// queue of a closing SO_REUSEPORT listener to another listener of the group
// (the new ztunnel during an upgrade) instead of resetting them.
const migrateReqSysctl = "/proc/sys/net/ipv4/tcp_migrate_req"

// retryInterval is how often file mode retries pods it failed to capture.
const retryInterval = time.Second

// Config configures a Manager. Store, Inbound, Outbound and NewDialer are
// required.
type Config struct {
	// Node is this ztunnel's node name.
	Node     string
	Store    *state.Store
	Inbound  *inbound.Inbound
	Outbound *outbound.Handler
	// NewDialer returns the HBONE dialer of one pod; its DialTCP must
	// connect from inside ns (see outbound.NetnsDialTCP).
	NewDialer func(ns *socket.Netns) (*hbone.Dialer, error)
	// Prefetch, if set, is called (in its own goroutine) for each added pod
	// so its certificate is ready before the first connection.
	Prefetch func(ctx context.Context, uid string)
	// FileMode captures the state's local workloads by their netns paths.
	FileMode bool
	// Ports default to 15001, 15006 and 15008.
	OutboundPort, InboundPlaintextPort, HBONEPort uint16
	// Mark is the SO_MARK of every socket (default 0x539).
	Mark uint32
	// DrainPeriod bounds how long open connections may run after a pod is
	// removed or ztunnel shuts down (default 30s).
	DrainPeriod time.Duration
	Logger      *slog.Logger
}

// Manager owns the per-pod listeners.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	running  bool
	draining bool
	connCtx  context.Context // parent of every pod's connections
	pods     map[string]*pod
	failed   map[string]error // file mode: pods that could not be captured
	wg       sync.WaitGroup   // pod goroutines and pod drains
	started  chan struct{}
}

// NewManager validates cfg and fills defaults. It opens nothing.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Inbound == nil || cfg.Outbound == nil || cfg.NewDialer == nil {
		return nil, errors.New("inpod: Config.Store, Inbound, Outbound and NewDialer are required")
	}
	if cfg.FileMode && cfg.Node == "" {
		return nil, errors.New("inpod: file mode needs the node name")
	}
	if cfg.OutboundPort == 0 {
		cfg.OutboundPort = DefaultOutboundPort
	}
	if cfg.InboundPlaintextPort == 0 {
		cfg.InboundPlaintextPort = DefaultInboundPlaintextPort
	}
	if cfg.HBONEPort == 0 {
		cfg.HBONEPort = DefaultHBONEPort
	}
	if cfg.Mark == 0 {
		cfg.Mark = DefaultMark
	}
	if cfg.DrainPeriod <= 0 {
		cfg.DrainPeriod = DefaultDrainPeriod
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "inpod"),
		pods:    map[string]*pod{},
		failed:  map[string]error{},
		started: make(chan struct{}),
	}, nil
}

// Run serves pods until ctx is done, then drains: every listener is
// closed at once (a new ztunnel sharing the ports takes the new
// connections), open connections get up to the drain period to finish,
// the rest are closed. Run returns after all of that, with nothing it
// started still running. In file mode it also keeps the captured pods in
// line with the state.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("inpod: Manager.Run called twice")
	}
	m.running = true
	var cancelConns context.CancelFunc
	m.connCtx, cancelConns = context.WithCancel(context.WithoutCancel(ctx))
	m.mu.Unlock()
	close(m.started)
	defer cancelConns()

	if m.cfg.FileMode {
		m.watchState(ctx)
	} else {
		<-ctx.Done()
	}

	m.mu.Lock()
	m.draining = true
	pods := slices.Collect(maps.Values(m.pods))
	clear(m.pods)
	m.mu.Unlock()
	m.log.Info("draining", "pods", len(pods), "drainPeriod", m.cfg.DrainPeriod.String())
	for _, p := range pods {
		p.closeListeners()
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.DrainPeriod)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() { p.drain(dctx) })
	}
	wg.Wait()
	cancelConns() // ends pods released earlier and still draining
	m.wg.Wait()
	m.log.Info("drained")
	return nil
}

// watchState reconciles file-mode pods on every state change until ctx is
// done.
func (m *Manager) watchState(ctx context.Context) {
	ch, unsubscribe := m.cfg.Store.Subscribe()
	defer unsubscribe()
	retry := time.NewTicker(retryInterval)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-retry.C:
			m.mu.Lock()
			n := len(m.failed)
			m.mu.Unlock()
			if n == 0 {
				continue
			}
		}
		m.reconcile()
	}
}

// reconcile captures the state's local workloads and releases pods that
// left it (or whose netns path changed).
func (m *Manager) reconcile() {
	want := map[string]string{} // uid -> netns path
	for _, w := range m.cfg.Store.Current().LocalWorkloads(m.cfg.Node) {
		want[w.UID] = w.Netns
	}
	m.mu.Lock()
	var remove []string
	for uid, p := range m.pods {
		if path, ok := want[uid]; !ok || path != p.path {
			remove = append(remove, uid)
		}
	}
	for uid := range m.failed {
		if _, ok := want[uid]; !ok {
			delete(m.failed, uid)
		}
	}
	m.mu.Unlock()
	for _, uid := range remove {
		if err := m.RemovePod(uid); err != nil {
			m.log.Warn("removing pod", "uid", uid, "error", err)
		}
	}
	for uid, path := range want {
		if m.Captured(uid) {
			continue
		}
		err := m.addPath(uid, path)
		m.mu.Lock()
		if err != nil {
			if prev, ok := m.failed[uid]; !ok || prev.Error() != err.Error() {
				m.log.Error("cannot capture pod; will retry", "uid", uid, "netns", path, "error", err)
			}
			m.failed[uid] = err
		} else {
			delete(m.failed, uid)
		}
		m.mu.Unlock()
	}
}

func (m *Manager) addPath(uid, path string) error {
	ns, err := socket.OpenNetns(path)
	if err != nil {
		return err
	}
	key, err := netnsKey(ns)
	if err == nil {
		err = m.add(uid, ns, key, path)
	}
	if err != nil {
		ns.Close()
		return err
	}
	return nil
}

// AddPod starts serving the pod uid whose network namespace is ns. The
// Manager owns ns from then on (it closes it when the pod is removed),
// unless AddPod fails. Adding a pod that is already captured in the same
// network namespace (same nsfs device and inode, whichever path or
// descriptor ns came from) keeps the existing listeners and closes ns; in
// another namespace (the pod's sandbox was recreated) the pod is moved:
// the new namespace's listeners are opened first, then the old ones are
// released as RemovePod does. If that fails the old ones keep serving.
// Run must have started.
func (m *Manager) AddPod(uid string, ns *socket.Netns) error {
	if err := m.canAdd(); err != nil {
		return err
	}
	key, err := netnsKey(ns)
	if err != nil {
		return fmt.Errorf("capture pod %s: %w", uid, err)
	}
	m.mu.Lock()
	old := m.pods[uid]
	m.mu.Unlock()
	if old != nil && old.key == key {
		m.log.Debug("pod already captured in this netns; keeping its listeners", "uid", uid)
		ns.Close()
		return nil
	}
	return m.add(uid, ns, key, "")
}

// canAdd says why no pod can be added now, if so.
func (m *Manager) canAdd() error {
	select {
	case <-m.started:
	default:
		return errors.New("inpod: AddPod before Run")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.draining {
		return errors.New("inpod: shutting down, not adding pods")
	}
	return nil
}

// Started is closed once Run has started: from then on AddPod can succeed.
func (m *Manager) Started() <-chan struct{} { return m.started }

func (m *Manager) add(uid string, ns *socket.Netns, key nsKey, path string) error {
	if err := m.canAdd(); err != nil {
		return err
	}
	m.mu.Lock()
	connCtx := m.connCtx
	m.mu.Unlock()

	p, err := m.openPod(connCtx, uid, ns, path)
	if err != nil {
		return fmt.Errorf("capture pod %s in %v: %w", uid, ns, err)
	}
	p.key = key
	m.mu.Lock()
	old := m.pods[uid]
	if m.draining || (old != nil && old.key == key) {
		// Shutting down, or a concurrent AddPod captured the same netns.
		draining := m.draining
		m.mu.Unlock()
		p.closeListeners()
		p.drain(connCtx)
		if draining {
			return errors.New("inpod: shutting down, not adding pods")
		}
		return nil
	}
	m.pods[uid] = p
	m.mu.Unlock()
	p.serve(&m.wg)
	if m.cfg.Prefetch != nil {
		m.wg.Go(func() { m.cfg.Prefetch(connCtx, uid) })
	}
	if old != nil {
		m.log.Info("pod moved to a new netns (sandbox recreated); releasing the old one", "uid", uid, "netns", ns.String(), "oldNetns", old.ns.String())
		m.release(old)
	}
	m.log.Info("pod captured", "uid", uid, "netns", ns.String())
	return nil
}

// RemovePod stops accepting connections for the pod and drains it in the
// background (up to the drain period). Removing an unknown pod is not an
// error.
func (m *Manager) RemovePod(uid string) error {
	m.mu.Lock()
	p := m.pods[uid]
	delete(m.pods, uid)
	delete(m.failed, uid)
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	m.log.Info("pod released; draining its connections", "uid", uid)
	m.release(p)
	return nil
}

// release closes a pod's listeners and drains it in the background (up to
// the drain period). The pod must no longer be in m.pods.
func (m *Manager) release(p *pod) {
	p.closeListeners()
	m.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.DrainPeriod)
		defer cancel()
		p.drain(ctx)
	})
}

// Captured reports whether the pod's listeners are open.
func (m *Manager) Captured(uid string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.pods[uid]
	return ok
}

// Pods lists the captured pods' UIDs, sorted.
func (m *Manager) Pods() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.pods))
}

// Ready returns nil when the Manager serves and (file mode) every local
// workload of the state is captured; otherwise it says what is missing.
func (m *Manager) Ready() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.running:
		return errors.New("pod listeners not started")
	case m.draining:
		return errors.New("draining: ztunnel is shutting down")
	}
	if !m.cfg.FileMode {
		return nil
	}
	var missing []string
	for _, w := range m.cfg.Store.Current().LocalWorkloads(m.cfg.Node) {
		if _, ok := m.pods[w.UID]; !ok {
			s := w.UID
			if err := m.failed[w.UID]; err != nil {
				s += " (" + err.Error() + ")"
			}
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("pods not captured yet: %s", strings.Join(missing, "; "))
	}
	return nil
}

// pod is one captured pod: its three listeners and their connections.
type pod struct {
	uid     string
	path    string // netns path in file mode
	ns      *socket.Netns
	key     nsKey // identity of ns
	log     *slog.Logger
	ctx     context.Context // ends every connection of the pod
	cancel  context.CancelFunc
	out     net.Listener
	plain   net.Listener
	hbone   net.Listener
	srv     *hbone.Server
	dialer  *hbone.Dialer
	handler *outbound.Handler
	inb     *inbound.Inbound
	conns   *proxy.Tracker
	loops   sync.WaitGroup // accept loops
	workers sync.WaitGroup // connection handlers
	once    sync.Once
}

func (m *Manager) openPod(connCtx context.Context, uid string, ns *socket.Netns, path string) (_ *pod, err error) {
	p := &pod{uid: uid, path: path, ns: ns, log: m.log.With("pod", uid), handler: m.cfg.Outbound, inb: m.cfg.Inbound, conns: proxy.NewTracker()}
	p.ctx, p.cancel = context.WithCancel(connCtx)
	defer func() {
		if err != nil {
			p.closeListeners()
			p.cancel()
			if p.dialer != nil {
				p.dialer.Close()
			}
		}
	}()
	if err := ns.Do(func() error { return os.WriteFile(migrateReqSysctl, []byte("1"), 0) }); err != nil {
		// Kernels before 5.14 lack it: upgrades then reset connections
		// queued on the old listeners; everything else works.
		p.log.Warn("cannot enable "+migrateReqSysctl+" in the pod netns; connections queued during an upgrade may be reset", "error", err)
	}
	opts := socket.Options{Mark: m.cfg.Mark}
	listen := func(port uint16) (net.Listener, error) {
		return socket.ListenInNetns(connCtx, ns, "tcp", fmt.Sprintf(":%d", port), opts)
	}
	if p.out, err = listen(m.cfg.OutboundPort); err != nil {
		return nil, err
	}
	if p.plain, err = listen(m.cfg.InboundPlaintextPort); err != nil {
		return nil, err
	}
	if p.hbone, err = listen(m.cfg.HBONEPort); err != nil {
		return nil, err
	}
	if p.dialer, err = m.cfg.NewDialer(ns); err != nil {
		return nil, err
	}
	p.srv, err = m.cfg.Inbound.HBONEServer(inbound.Pod{UID: uid, Netns: ns, Track: p.conns.Add})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// serve starts the accept loops; wg tracks them.
func (p *pod) serve(wg *sync.WaitGroup) {
	accept := func(ln net.Listener, handle func(c net.Conn)) {
		p.loops.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					p.log.Warn("accept failed", "listener", ln.Addr().String(), "error", err)
					select {
					case <-time.After(50 * time.Millisecond):
						continue
					case <-p.ctx.Done():
						return
					}
				}
				p.workers.Go(func() { handle(c) })
			}
		})
	}
	accept(p.out, func(c net.Conn) {
		p.handler.Serve(p.ctx, outbound.Pod{UID: p.uid, Netns: p.ns, Dialer: p.dialer, Track: p.conns.Add, Go: p.workers.Go}, c.(*net.TCPConn))
	})
	accept(p.plain, func(c net.Conn) {
		p.inb.ServePlaintext(p.ctx, inbound.Pod{UID: p.uid, Netns: p.ns, Track: p.conns.Add}, c.(*net.TCPConn))
	})
	accept(p.hbone, func(c net.Conn) {
		if err := p.srv.ServeConn(p.ctx, c); err != nil && !errors.Is(err, hbone.ErrServerClosed) {
			p.log.Info("HBONE connection rejected", "peer", c.RemoteAddr().String(), "error", err)
		}
	})
	wg.Go(p.loops.Wait)
}

// closeListeners stops accepting; idempotent.
func (p *pod) closeListeners() {
	for _, ln := range []net.Listener{p.out, p.plain, p.hbone} {
		if ln != nil {
			ln.Close()
		}
	}
}

// drain waits for the pod's connections to end, until ctx is done; then
// closes what is left and releases the pod's resources. The listeners
// must be closed already.
func (p *pod) drain(ctx context.Context) {
	p.once.Do(func() {
		p.loops.Wait()
		shut := make(chan struct{})
		go func() {
			defer close(shut)
			if p.srv != nil {
				// GOAWAY: clients open new tunnels elsewhere (the new
				// ztunnel); open streams continue.
				_ = p.srv.Shutdown(ctx)
			}
		}()
		// The handlers' goroutines, and the connections: one carried by
		// proxy.SpliceAsync may be in no goroutine at all while its
		// HBONE stream delivers the answer.
		idle := make(chan struct{})
		go func() {
			p.workers.Wait()
			_ = p.conns.Wait(ctx)
			close(idle)
		}()
		select {
		case <-idle:
		case <-ctx.Done():
			p.log.Warn("drain period over; closing the remaining connections", "open", p.conns.Len())
		}
		p.cancel()
		<-idle
		p.workers.Wait()
		<-shut
		if p.dialer != nil {
			p.dialer.Close()
		}
		p.ns.Close()
	})
}
