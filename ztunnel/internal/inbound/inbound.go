// Package inbound handles connections arriving at a pod ztunnel captures:
// HBONE streams on the pod's port 15008 (terminated with the pod's
// certificate, authorized, then delivered to the application inside the
// pod's netns from the client's own IP) and plaintext connections
// redirected to the pod's port 15006 (refused when the pod's mTLS mode for
// the port is STRICT, otherwise authorized and delivered the same way).
// PolicyAuthorizer enforces the state's Authorization policies.
package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/authz"
	"ambit.dev/ztunnel/internal/metrics"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/proxy"
	"ambit.dev/ztunnel/internal/socket"
	"ambit.dev/ztunnel/internal/state"
)

// Request is what an Authorizer decides on: one inbound connection.
type Request struct {
	// Source is the client's verified identity; zero for plaintext.
	Source identity.ID
	// SourceAddr is the client's address (the original client for HBONE).
	SourceAddr netip.AddrPort
	// Dst is the destination ip:port in the pod.
	Dst netip.AddrPort
	// Workload is the destination pod.
	Workload model.Workload
	// Plaintext says the connection arrived without mTLS.
	Plaintext bool
}

// Authorizer is L4 authorization: a non-nil error refuses the connection
// (HTTP 401 for HBONE, a close for plaintext) and says why.
type Authorizer interface {
	Authorize(ctx context.Context, r Request) error
}

// AllowAll is the default Authorizer: every connection is allowed
// (ztunnel itself uses PolicyAuthorizer).
// (STRICT mTLS is enforced by the plaintext path itself, not here.)
type AllowAll struct{}

// Authorize allows.
func (AllowAll) Authorize(context.Context, Request) error { return nil }

// Certs serves certificates per identity; *identity.Manager implements it.
type Certs interface {
	TLSCertificate(ctx context.Context, id identity.ID) (*tls.Certificate, error)
}

// Config configures the inbound side. Store, Certs and Roots are required.
type Config struct {
	Store *state.Store
	Certs Certs
	// Roots are the mesh trust anchors client certificates must chain to.
	Roots hbone.RootsFunc
	// TrustDomain is the trust domain clients must belong to.
	TrustDomain string
	// Authorizer defaults to AllowAll.
	Authorizer Authorizer
	// Metrics may be nil (nothing counted).
	Metrics *metrics.Metrics
	// Mark is the SO_MARK of the sockets connecting to the app (0x539).
	Mark   uint32
	Logger *slog.Logger
}

// Inbound builds per-pod HBONE servers and serves plaintext connections.
type Inbound struct {
	cfg Config
	log *slog.Logger
}

// New validates cfg.
func New(cfg Config) (*Inbound, error) {
	if cfg.Store == nil || cfg.Certs == nil || cfg.Roots == nil {
		return nil, errors.New("inbound: Config.Store, Certs and Roots are required")
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = identity.DefaultTrustDomain
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = AllowAll{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Inbound{cfg: cfg, log: cfg.Logger.With("component", "inbound")}, nil
}

// Pod identifies the pod a listener belongs to.
type Pod struct {
	UID   string
	Netns *socket.Netns
	// Track, if set, is called when an inbound connection starts; the
	// returned func when it ends (for drain accounting).
	Track func() (done func())
}

func (p Pod) track() func() {
	if p.Track == nil {
		return func() {}
	}
	return p.Track()
}

// workload returns the pod's current entry in the state.
func (in *Inbound) workload(uid string) (model.Workload, error) {
	w, ok := in.cfg.Store.Current().WorkloadByUID(uid)
	if !ok {
		return model.Workload{}, fmt.Errorf("pod %s is not in the workload state (removed from --workloads-file, or not published by the control plane yet?)", uid)
	}
	return w, nil
}

// HBONEServer returns the HBONE server for pod: it presents the pod's
// current identity, accepts clients of the mesh trust domain, authorizes
// each stream and connects to the application inside the pod's netns from
// the original client's IP (see clientAddr).
func (in *Inbound) HBONEServer(pod Pod) (*hbone.Server, error) {
	getCert := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		w, err := in.workload(pod.UID)
		if err != nil {
			return nil, err
		}
		ctx := context.Background()
		if hello != nil {
			ctx = hello.Context()
		}
		return in.cfg.Certs.TLSCertificate(ctx, w.Identity())
	}
	tlsCfg, err := hbone.ServerTLS(getCert, in.cfg.Roots, in.cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("inbound: %w", err)
	}
	return hbone.NewServer(hbone.ServerConfig{
		TLS: tlsCfg,
		Authorize: func(ctx context.Context, r hbone.Request) error {
			w, err := in.workload(pod.UID)
			if err != nil {
				in.cfg.Metrics.Refused(metrics.RefusedUnknownWorkload)
				return err
			}
			if err := CheckWaypoint(in.cfg.Store.Current(), w, r.Dst.Port(), r.SourceID, false); err != nil {
				in.cfg.Metrics.Refused(metrics.RefusedWaypointBypass)
				in.log.InfoContext(ctx, "HBONE stream refused: it bypasses the waypoint", "error", err)
				return err
			}
			if err := in.cfg.Authorizer.Authorize(ctx, Request{Source: r.SourceID, SourceAddr: clientAddr(r, in.byIP), Dst: r.Dst, Workload: w}); err != nil {
				in.cfg.Metrics.Refused(metrics.RefusedAuthorization)
				return err
			}
			return nil
		},
		Dial: func(ctx context.Context, r hbone.Request) (net.Conn, error) {
			return in.dialHBONE(ctx, pod, r)
		},
		Logger: in.cfg.Logger,
	})
}

// clientAddr is the original client of an HBONE stream, as the app and
// IP-based policy see it. The peer of the HBONE connection is the default:
// a source ztunnel dials from inside the source pod's netns, so the peer
// is the source pod. The Forwarded for= address replaces it only when the
// state says that address belongs to a workload with the identity the peer
// proved with its certificate, so a mesh client cannot make the app (or a
// policy) believe it comes from another identity's IP.
func clientAddr(r hbone.Request, byIP func(netip.Addr) (model.Workload, bool)) netip.AddrPort {
	if !r.Src.IsValid() {
		return r.Peer
	}
	src := netip.AddrPortFrom(r.Src.Addr().Unmap(), r.Src.Port())
	if src.Addr().Is4() != r.Dst.Addr().Unmap().Is4() {
		return r.Peer
	}
	if w, ok := byIP(src.Addr()); ok && w.Identity() == r.SourceID {
		return src
	}
	return r.Peer
}

// byIP looks a workload up by IP in the current state.
func (in *Inbound) byIP(ip netip.Addr) (model.Workload, bool) {
	return in.cfg.Store.Current().WorkloadByIP(ip)
}

func (in *Inbound) dialHBONE(ctx context.Context, pod Pod, r hbone.Request) (net.Conn, error) {
	w, err := in.workload(pod.UID)
	if err != nil {
		return nil, err
	}
	client := clientAddr(r, in.byIP)
	up, err := in.dialApp(ctx, pod.Netns, r.Dst, client.Addr())
	if err != nil {
		in.cfg.Metrics.Refused(metrics.RefusedUpstream)
		return nil, err
	}
	done := pod.track()
	src, _ := in.byIP(client.Addr())
	labels := metrics.ConnLabels{
		Reporter:             metrics.ReporterDestination,
		SourceWorkload:       src.Name,
		SourceNamespace:      src.Namespace,
		SourcePrincipal:      r.SourceID.String(),
		DestinationWorkload:  w.Name,
		DestinationNamespace: w.Namespace,
		DestinationPrincipal: w.Identity().String(),
		DestinationService:   forwardedHost(r.Forwarded),
		SecurityPolicy:       metrics.SecurityMutualTLS,
	}
	mc := in.cfg.Metrics.Open(labels, metrics.DirectionInbound, metrics.ProtocolHBONE, client, r.Dst)
	// The HBONE server splices the stream to up: bytes it writes to the
	// app came from the source, bytes it reads are the app's answers.
	return &proxy.CountingConn{
		Conn:    up,
		OnWrite: mc.AddSent,
		OnRead:  mc.AddReceived,
		OnClose: func() { mc.Close(); done() },
	}, nil
}

func forwardedHost(els []hbone.ForwardedElement) string {
	for _, e := range els {
		if e.Host != "" {
			return e.Host
		}
	}
	return ""
}

// dialApp connects to dst inside the pod's netns, from src when it is valid
// and of dst's family (IP_TRANSPARENT; the pod's connmark rules route the
// replies back to this socket), carrying ztunnel's mark.
func (in *Inbound) dialApp(ctx context.Context, ns *socket.Netns, dst netip.AddrPort, src netip.Addr) (*net.TCPConn, error) {
	opts := socket.DialOptions{Mark: in.cfg.Mark}
	if src.IsValid() && src.Unmap().Is4() == dst.Addr().Unmap().Is4() {
		opts.TransparentSource = src.Unmap()
	}
	c, err := socket.DialInNetns(ctx, ns, "tcp", dst.String(), opts)
	if err != nil {
		return nil, fmt.Errorf("inbound: connecting to the application at %s: %w (is the app listening on that port?)", dst, err)
	}
	return c, nil
}

// ServePlaintext handles one connection accepted on the pod's inbound
// plaintext listener (15006): refused if the pod's mTLS mode for the
// destination port is STRICT (peer-authentication policies, else the
// workload's own mode) or
// the Authorizer denies it, else delivered to the app from the client's IP.
// It returns when the connection is over; it closes c.
func (in *Inbound) ServePlaintext(ctx context.Context, pod Pod, c *net.TCPConn) {
	defer c.Close()
	client := addrPort(c.RemoteAddr())
	log := in.log.With("pod", pod.UID, "client", client.String())
	w, err := in.workload(pod.UID)
	if err != nil {
		in.cfg.Metrics.Refused(metrics.RefusedUnknownWorkload)
		log.Warn("plaintext connection refused", "error", err)
		reset(c)
		return
	}
	dst, err := socket.OriginalDst(c)
	if err != nil {
		log.Warn("plaintext connection refused: no original destination", "error", err)
		reset(c)
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if local := addrPort(c.LocalAddr()); dst == local {
		// Not redirected: someone connected to 15006 itself.
		log.Debug("plaintext connection refused: addressed to the capture port itself", "dst", dst.String())
		reset(c)
		return
	}
	if mode := in.mtlsMode(w, dst.Port()); !authz.PlaintextAllowed(mode) {
		in.cfg.Metrics.Refused(metrics.RefusedStrictMTLS)
		log.Info("plaintext connection refused: pod requires mTLS (STRICT) on this port", "dst", dst.String())
		reset(c)
		return
	}
	if err := CheckWaypoint(in.cfg.Store.Current(), w, dst.Port(), identity.ID{}, true); err != nil {
		in.cfg.Metrics.Refused(metrics.RefusedWaypointBypass)
		log.Info("plaintext connection refused: it bypasses the waypoint", "dst", dst.String(), "error", err)
		reset(c)
		return
	}
	if err := in.cfg.Authorizer.Authorize(ctx, Request{SourceAddr: client, Dst: dst, Workload: w, Plaintext: true}); err != nil {
		in.cfg.Metrics.Refused(metrics.RefusedAuthorization)
		log.Info("plaintext connection denied", "dst", dst.String(), "error", err)
		reset(c)
		return
	}
	up, err := in.dialApp(ctx, pod.Netns, dst, client.Addr())
	if err != nil {
		in.cfg.Metrics.Refused(metrics.RefusedUpstream)
		log.Info("plaintext connection failed", "dst", dst.String(), "error", err)
		reset(c)
		return
	}
	done := pod.track()
	defer done()
	src, _ := in.byIP(client.Addr())
	labels := metrics.ConnLabels{
		Reporter:             metrics.ReporterDestination,
		SourceWorkload:       src.Name,
		SourceNamespace:      src.Namespace,
		DestinationWorkload:  w.Name,
		DestinationNamespace: w.Namespace,
		DestinationPrincipal: w.Identity().String(),
		SecurityPolicy:       metrics.SecurityNone,
	}
	mc := in.cfg.Metrics.Open(labels, metrics.DirectionInbound, metrics.ProtocolTCP, client, dst)
	defer mc.Close()
	if err := proxy.Splice(ctx, c, up, mc.AddSent, mc.AddReceived); err != nil {
		log.Debug("plaintext connection broken", "dst", dst.String(), "error", err)
	}
}

// reset closes c with an RST, so the client sees the refusal at once.
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
