package outbound

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/ztunnel/internal/metrics"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/proxy"
	"ambit.dev/ztunnel/internal/socket"
	"ambit.dev/ztunnel/internal/state"
)

// hboneAttempts bounds how often an HBONE tunnel is tried for one
// connection. A retry only happens when no CONNECT was answered (the
// connection broke or was going away, e.g. the destination's ztunnel is
// being replaced), so the application has sent nothing anywhere yet.
const hboneAttempts = 3

// HandlerConfig configures a Handler. Store is required.
type HandlerConfig struct {
	Store *state.Store
	// Planner decides routes (nil: random endpoint choice).
	Planner *Planner
	// Metrics may be nil.
	Metrics *metrics.Metrics
	// Mark is the SO_MARK of the sockets ztunnel opens (0x539).
	Mark uint32
	// SourceWait bounds how long a connection from a pod that is not in the
	// workload state yet waits for it (default DefaultSourceWait). A pod
	// is captured as soon as its sandbox exists, before the control plane
	// has published it, and its app may connect at once.
	SourceWait time.Duration
	Logger     *slog.Logger
}

// DefaultSourceWait is HandlerConfig.SourceWait's default.
const DefaultSourceWait = 5 * time.Second

// Handler serves connections accepted on a pod's outbound listener.
type Handler struct {
	cfg HandlerConfig
	log *slog.Logger
}

// NewHandler validates cfg.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("outbound: HandlerConfig.Store is required")
	}
	if cfg.Planner == nil {
		cfg.Planner = NewPlanner(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SourceWait <= 0 {
		cfg.SourceWait = DefaultSourceWait
	}
	return &Handler{cfg: cfg, log: cfg.Logger.With("component", "outbound")}, nil
}

// source returns the state holding the pod uid, waiting up to SourceWait
// for it to appear.
func (h *Handler) source(ctx context.Context, uid string) (*state.Snapshot, model.Workload, bool) {
	snap := h.cfg.Store.Current()
	if w, ok := snap.WorkloadByUID(uid); ok {
		return snap, w, true
	}
	changed, done := h.cfg.Store.Subscribe()
	defer done()
	timer := time.NewTimer(h.cfg.SourceWait)
	defer timer.Stop()
	for {
		select {
		case <-changed:
			snap = h.cfg.Store.Current()
			if w, ok := snap.WorkloadByUID(uid); ok {
				return snap, w, true
			}
		case <-timer.C:
			return snap, model.Workload{}, false
		case <-ctx.Done():
			return snap, model.Workload{}, false
		}
	}
}

// Pod is the source pod of the connections a Handler serves.
type Pod struct {
	UID   string
	Netns *socket.Netns
	// Dialer opens HBONE tunnels; its DialTCP must create sockets inside
	// the pod's netns with ztunnel's mark (see NetnsDialTCP).
	Dialer *hbone.Dialer
	// Track, if set, is called when a connection starts; the returned
	// func when it ends.
	Track func() (done func())
	// Go, if set, runs f on a new goroutine the caller tracks
	// (sync.WaitGroup.Go): Serve then returns once the connection is set
	// up and carries it on such goroutines; nil carries it in Serve.
	Go func(f func())
}

// NetnsDialTCP returns an hbone.DialerConfig.DialTCP that connects from
// inside ns with mark: the tunnel leaves from the pod's own IP, and the
// pod's redirection rules let it through.
func NetnsDialTCP(ns *socket.Netns, mark uint32) func(ctx context.Context, t hbone.Target) (net.Conn, error) {
	return func(ctx context.Context, t hbone.Target) (net.Conn, error) {
		return socket.DialInNetns(ctx, ns, "tcp", t.HBONEAddr.String(), socket.DialOptions{Mark: mark})
	}
}

// Serve handles one connection captured from the pod: it reads the
// original destination, plans the route and proxies until both sides are
// done (or ctx ends). It closes c.
//
// The decision and the dial run in open, deep in its frames (snapshot,
// route, labels, the HBONE handshake). With pod.Go set, Serve returns
// once the connection is set up: an HBONE connection is then carried by
// proxy.SpliceAsync (no goroutine waits while it is idle, and each burst
// runs on a fresh small stack), any other by Splice on a new goroutine.
func (h *Handler) Serve(ctx context.Context, pod Pod, c *net.TCPConn) {
	conn := h.open(ctx, pod, c)
	if conn == nil {
		c.Close()
		return
	}
	end := func(err error) {
		c.Close()
		conn.mc.Close()
		conn.done()
		if err != nil {
			h.log.Debug("outbound connection broken", "pod", pod.UID, "client", c.RemoteAddr().String(), "dst", conn.dst.String(), "error", err)
		}
	}
	if pod.Go != nil {
		if proxy.SpliceAsync(ctx, c, conn.up, conn.mc.AddSent, conn.mc.AddReceived, pod.Go, end) {
			return
		}
		pod.Go(func() { end(proxy.Splice(ctx, c, conn.up, conn.mc.AddSent, conn.mc.AddReceived)) })
		return
	}
	end(proxy.Splice(ctx, c, conn.up, conn.mc.AddSent, conn.mc.AddReceived))
}

// opened is an outbound connection ready to splice.
type opened struct {
	up   net.Conn
	mc   *metrics.Conn
	dst  netip.AddrPort
	done func() // Pod.Track's
}

// open decides where c goes and connects there; nil when the connection
// was refused (c is reset then).
//
//go:noinline
func (h *Handler) open(ctx context.Context, pod Pod, c *net.TCPConn) *opened {
	client := addrPort(c.RemoteAddr())
	log := h.log.With("pod", pod.UID, "client", client.String())
	dst, err := socket.OriginalDst(c)
	if err != nil {
		log.Warn("outbound connection refused: no original destination", "error", err)
		reset(c)
		return nil
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if dst == addrPort(c.LocalAddr()) {
		log.Debug("outbound connection refused: addressed to the capture port itself")
		reset(c)
		return nil
	}
	log = log.With("dst", dst.String())
	snap, src, ok := h.source(ctx, pod.UID)
	if !ok {
		h.cfg.Metrics.Refused(metrics.RefusedUnknownWorkload)
		log.Warn("outbound connection refused: source pod is not in the workload state", "waited", h.cfg.SourceWait.String())
		reset(c)
		return nil
	}
	route, err := h.cfg.Planner.Plan(snap, src, dst)
	if err != nil {
		reason := metrics.RefusedNoEndpoint
		if errors.Is(err, ErrWaypointUnavailable) {
			reason = metrics.RefusedNoWaypoint
		}
		h.cfg.Metrics.Refused(reason)
		log.Info("outbound connection denied", "reason", route.Reason)
		reset(c)
		return nil
	}
	done := func() {}
	if pod.Track != nil {
		done = pod.Track()
	}

	var up net.Conn
	protocol, security := metrics.ProtocolTCP, metrics.SecurityNone
	switch route.Kind {
	case Passthrough:
		up, err = socket.DialInNetns(ctx, pod.Netns, "tcp", route.Dst.String(), socket.DialOptions{Mark: h.cfg.Mark})
		if err != nil {
			err = fmt.Errorf("passthrough to %s: %w", route.Dst, err)
		}
	case HBONE, Waypoint:
		protocol, security = metrics.ProtocolHBONE, metrics.SecurityMutualTLS
		up, err = h.dialHBONE(ctx, pod, src, client, route)
	default:
		err = fmt.Errorf("unexpected route kind %v", route.Kind)
	}
	if err != nil {
		h.cfg.Metrics.Refused(metrics.RefusedUpstream)
		log.Info("outbound connection failed", "route", route.Kind.String(), "error", err)
		reset(c)
		done()
		return nil
	}
	labels := metrics.ConnLabels{
		Reporter:        metrics.ReporterSource,
		SourceWorkload:  src.Name,
		SourceNamespace: src.Namespace,
		SourcePrincipal: src.Identity().String(),
		SecurityPolicy:  security,
	}
	if w := route.DestWorkload; w != nil {
		labels.DestinationWorkload, labels.DestinationNamespace = w.Name, w.Namespace
		if w.InMesh() {
			labels.DestinationPrincipal = w.Identity().String()
		}
	}
	if route.Service != nil {
		labels.DestinationService = route.Service.Hostname
	}
	mc := h.cfg.Metrics.Open(labels, metrics.DirectionOutbound, protocol, client, dst)
	log.Debug("outbound connection", "route", route.Kind.String(), "reason", route.Reason)
	return &opened{up: up, mc: mc, dst: dst, done: done}
}

func (h *Handler) dialHBONE(ctx context.Context, pod Pod, src model.Workload, client netip.AddrPort, r Route) (net.Conn, error) {
	t := hbone.Target{
		SourceID:   src.Identity(),
		DestID:     r.DestID,
		HBONEAddr:  r.HBONEAddr,
		SourceAddr: client.Addr(),
		Authority:  r.Authority,
		Forwarded:  []hbone.ForwardedElement{hbone.ForwardedFor(client, r.ForwardedHost)},
	}
	var err error
	for attempt := 1; attempt <= hboneAttempts; attempt++ {
		var c *hbone.Conn
		c, err = pod.Dialer.Dial(ctx, t)
		if err == nil {
			return c, nil
		}
		h.cfg.Metrics.HBONEDialFailed()
		var se *hbone.StatusError
		if errors.As(err, &se) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			break // the destination answered, timed out, or we are shutting down
		}
		h.log.Debug("HBONE dial failed; retrying", "attempt", attempt, "target", r.HBONEAddr.String(), "error", err)
	}
	return nil, err
}

func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
