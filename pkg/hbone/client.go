package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"ambit.dev/pkg/identity"
)

// Dialer defaults.
const (
	DefaultMaxStreamsPerConn = 100
	DefaultIdleTimeout       = 60 * time.Second
	DefaultConnectTimeout    = 10 * time.Second
)

// Target says where and as whom to open an HBONE stream.
type Target struct {
	// SourceID is the identity whose certificate the client presents.
	SourceID identity.ID
	// DestID is the identity the server must present.
	DestID identity.ID
	// HBONEAddr is the server address: the destination pod (or waypoint)
	// IP and port 15008.
	HBONEAddr netip.AddrPort
	// SourceAddr, if valid, is the local IP to dial from. It is part of the
	// pool key, so two workloads never share a connection.
	SourceAddr netip.Addr
	// Authority is the final destination ip:port sent as :authority.
	Authority netip.AddrPort
	// Forwarded, Baggage and Traceparent become request headers when set.
	Forwarded   []ForwardedElement
	Baggage     Baggage
	Traceparent string
}

// PoolKey identifies a pooled connection: streams with equal keys share
// connections.
type PoolKey struct {
	SourceID   identity.ID
	DestID     identity.ID
	SourceAddr netip.Addr
	HBONEAddr  netip.AddrPort
}

// Key returns the pool key of t.
func (t Target) Key() PoolKey {
	return PoolKey{SourceID: t.SourceID, DestID: t.DestID, SourceAddr: t.SourceAddr, HBONEAddr: t.HBONEAddr}
}

// DialerConfig configures a Dialer. Certificate and Roots are required.
type DialerConfig struct {
	// Certificate returns the client certificate of a source identity,
	// normally (*identity.Manager).Get(...).TLS.
	Certificate func(ctx context.Context, id identity.ID) (*tls.Certificate, error)
	// Roots returns the mesh trust anchors, normally
	// (*identity.Manager).Roots.
	Roots RootsFunc
	// DialTCP opens the TCP connection to t.HBONEAddr. The default uses a
	// net.Dialer bound to t.SourceAddr when that is set.
	DialTCP func(ctx context.Context, t Target) (net.Conn, error)
	// ConnectTimeout bounds TCP connect, TLS handshake and the wait for the
	// CONNECT response (default 10s).
	ConnectTimeout time.Duration
	// MaxStreamsPerConn caps concurrent streams on one connection before
	// another is opened (default 100).
	MaxStreamsPerConn int
	// SpreadConns is how many connections a key may use before streams
	// share one (default DefaultSpreadConns: GOMAXPROCS, at most 4; 1
	// puts every stream on the first connection until it is full). When
	// every connection of a key carries a stream, another one is dialled
	// in the background and later streams go to the least-loaded one, so
	// concurrent busy streams are framed and decrypted by as many
	// connections' goroutines in parallel; no stream waits for that dial.
	SpreadConns int
	// IdleTimeout closes a connection that has had no stream for this long
	// (default 60s).
	IdleTimeout time.Duration
	// StreamWindow and ConnWindow are the receive flow-control windows
	// (defaults 4 MiB and 16 MiB).
	StreamWindow, ConnWindow int32
	// MaxReadFrameSize is the largest DATA frame the client accepts
	// (default DefaultClientMaxReadFrameSize).
	MaxReadFrameSize uint32
	// Logger defaults to slog.Default(), tagged component=hbone.
	Logger *slog.Logger

	// afterFunc replaces time.AfterFunc for idle timers in tests.
	afterFunc func(time.Duration, func()) stopper
}

type stopper interface{ Stop() bool }

// Dialer opens HBONE streams over pooled HTTP/2 connections.
type Dialer struct {
	cfg DialerConfig
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	pools  map[PoolKey]*pool

	// bg ends the background dials (spreadLocked) on Close; spares
	// tracks them.
	bg     context.Context
	stopBg context.CancelFunc
	spares sync.WaitGroup
}

type pool struct {
	conns   []*poolConn
	dialing chan struct{} // non-nil while a connection is being dialed
}

// DefaultSpreadConns is DialerConfig.SpreadConns's default: one
// connection per CPU the process may use, at most 4.
func DefaultSpreadConns() int { return min(runtime.GOMAXPROCS(0), 4) }

type poolConn struct {
	key     PoolKey
	cc      *h2conn
	local   net.Addr
	streams int // streams handed out and not yet closed
	idle    stopper
	idleGen uint64
	dead    bool
}

// NewDialer validates cfg and returns a Dialer. It starts nothing; Close
// closes its connections.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if cfg.Certificate == nil || cfg.Roots == nil {
		return nil, errors.New("hbone: DialerConfig.Certificate and Roots are required")
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxStreamsPerConn <= 0 {
		cfg.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if cfg.SpreadConns <= 0 {
		cfg.SpreadConns = DefaultSpreadConns()
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow <= 0 {
		cfg.ConnWindow = DefaultConnWindow
	}
	if cfg.MaxReadFrameSize == 0 {
		cfg.MaxReadFrameSize = DefaultClientMaxReadFrameSize
	}
	if cfg.DialTCP == nil {
		cfg.DialTCP = defaultDialTCP
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.afterFunc == nil {
		cfg.afterFunc = func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
	}
	if err := validateFlow(cfg.StreamWindow, cfg.ConnWindow, cfg.MaxReadFrameSize); err != nil {
		return nil, err
	}
	d := &Dialer{cfg: cfg, log: cfg.Logger.With("component", "hbone"), pools: map[PoolKey]*pool{}}
	d.bg, d.stopBg = context.WithCancel(context.Background())
	return d, nil
}

func defaultDialTCP(ctx context.Context, t Target) (net.Conn, error) {
	var d net.Dialer
	if t.SourceAddr.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: t.SourceAddr.AsSlice()}
	}
	return d.DialContext(ctx, "tcp", t.HBONEAddr.String())
}

// Dial opens a CONNECT stream to t.Authority through t.HBONEAddr, reusing a
// pooled connection when one has room. It returns once the server answered
// 200, i.e. once the upstream is connected; any other answer is a
// *StatusError.
func (d *Dialer) Dial(ctx context.Context, t Target) (*Conn, error) {
	if err := t.SourceID.Validate(); err != nil {
		return nil, fmt.Errorf("hbone: bad source identity: %w", err)
	}
	if err := t.DestID.Validate(); err != nil {
		return nil, fmt.Errorf("hbone: bad destination identity: %w", err)
	}
	if !t.HBONEAddr.IsValid() || !t.Authority.IsValid() {
		return nil, errors.New("hbone: Target needs HBONEAddr and Authority")
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConnectTimeout)
	defer cancel()
	pc, err := d.acquire(ctx, t)
	if err != nil {
		return nil, err
	}
	c, err := d.openStream(ctx, pc, t)
	if err != nil {
		// A refused (non-200) or timed-out stream leaves the connection
		// usable; any other failure means the connection is broken, even
		// if x/net has not noticed yet.
		var se *StatusError
		broken := !errors.As(err, &se) && ctx.Err() == nil
		d.releaseStream(pc, broken)
		return nil, err
	}
	return c, nil
}

// acquire reserves a stream on a pooled connection for t's key, dialing a
// new connection when none has room. Only one dial per key runs at a time;
// other callers wait for it and then retry.
func (d *Dialer) acquire(ctx context.Context, t Target) (*poolConn, error) {
	key := t.Key()
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, errors.New("hbone: dialer closed")
		}
		p := d.pools[key]
		if p == nil {
			p = &pool{}
			d.pools[key] = p
		}
		var drop []*poolConn
		p.conns = slices.DeleteFunc(p.conns, func(pc *poolConn) bool {
			if pc.streams == 0 && !pc.cc.usable() {
				pc.dead = true
				drop = append(drop, pc)
			}
			return pc.dead
		})
		if pc := d.leastLoadedLocked(p); pc != nil {
			pc.streams++
			pc.stopIdle()
			if pc.streams > 1 && len(p.conns) < d.cfg.SpreadConns && p.dialing == nil {
				d.spreadLocked(p, t)
			}
			d.mu.Unlock()
			closeAll(drop)
			return pc, nil
		}
		if wait := p.dialing; wait != nil {
			d.mu.Unlock()
			closeAll(drop)
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, d.timeoutError(ctx, t, "waiting for a connection")
			}
		}
		done := make(chan struct{})
		p.dialing = done
		d.mu.Unlock()
		closeAll(drop)

		pc, err := d.connect(ctx, t)

		d.mu.Lock()
		p.dialing = nil
		close(done)
		if err != nil && len(p.conns) == 0 && d.pools[key] == p {
			delete(d.pools, key)
		}
		if err == nil {
			if d.closed {
				err = errors.New("hbone: dialer closed")
			} else if !pc.cc.reserve(d.cfg.MaxStreamsPerConn) {
				err = fmt.Errorf("hbone: new connection to %s refused its first stream", t.HBONEAddr)
			} else {
				pc.streams = 1
				p.conns = append(p.conns, pc)
			}
		}
		d.mu.Unlock()
		if err != nil {
			if pc != nil {
				pc.cc.close()
			}
			return nil, err
		}
		return pc, nil
	}
}

// leastLoadedLocked reserves a stream on the connection of p with the
// fewest streams that has room (the first such, in dial order); nil when
// none has.
func (d *Dialer) leastLoadedLocked(p *pool) *poolConn {
	conns := p.conns
	if len(conns) > 1 {
		conns = slices.SortedStableFunc(slices.Values(conns), func(a, b *poolConn) int { return a.streams - b.streams })
	}
	for _, pc := range conns {
		if pc.streams < d.cfg.MaxStreamsPerConn && pc.cc.reserve(d.cfg.MaxStreamsPerConn) {
			return pc
		}
	}
	return nil
}

// spreadLocked dials one more connection for p's key in the background
// (SpreadConns); streams that find it ready use it. A failure is logged
// and changes nothing: the existing connections serve.
func (d *Dialer) spreadLocked(p *pool, t Target) {
	done := make(chan struct{})
	p.dialing = done
	t.Forwarded, t.Baggage = nil, nil // the connection's, not this stream's
	d.spares.Go(func() {
		ctx, cancel := context.WithTimeout(d.bg, d.cfg.ConnectTimeout)
		defer cancel()
		pc, err := d.connect(ctx, t)
		d.mu.Lock()
		p.dialing = nil
		close(done)
		if err == nil && !d.closed && d.pools[t.Key()] == p {
			p.conns = append(p.conns, pc)
			pc.idleGen++
			gen := pc.idleGen
			pc.idle = d.cfg.afterFunc(d.cfg.IdleTimeout, func() { d.expireIdle(pc, gen) })
			pc = nil
		}
		d.mu.Unlock()
		if err != nil {
			d.log.Debug("spare HBONE connection failed", "addr", t.HBONEAddr.String(), "error", err)
		}
		if pc != nil {
			pc.cc.close()
		}
	})
}

// connect dials TCP, handshakes TLS and starts an HTTP/2 connection.
func (d *Dialer) connect(ctx context.Context, t Target) (*poolConn, error) {
	cert, err := d.cfg.Certificate(ctx, t.SourceID)
	if err != nil {
		return nil, fmt.Errorf("hbone: no certificate for source %s: %w", t.SourceID, err)
	}
	raw, err := d.cfg.DialTCP(ctx, t)
	if err != nil {
		if ctx.Err() != nil || isTimeout(err) {
			return nil, d.timeoutError(ctx, t, "connecting")
		}
		return nil, fmt.Errorf("hbone: connecting to %s: %w (is the destination's ztunnel or waypoint listening on port %d?)", t.HBONEAddr, err, t.HBONEAddr.Port())
	}
	tc := tls.Client(&recordConn{Conn: raw}, ClientTLS(cert, d.cfg.Roots(), t.DestID))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		if ctx.Err() != nil || isTimeout(err) {
			return nil, d.timeoutError(ctx, t, "in the TLS handshake")
		}
		return nil, fmt.Errorf("hbone: TLS handshake with %s (expecting %s): %w", t.HBONEAddr, t.DestID, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPN {
		tc.Close()
		return nil, fmt.Errorf("hbone: %s negotiated ALPN %q, want %q: is it an HBONE server?", t.HBONEAddr, p, ALPN)
	}
	cc := newH2conn(tc, h2Config{
		streamWindow: d.cfg.StreamWindow,
		connWindow:   d.cfg.ConnWindow,
		maxReadFrame: d.cfg.MaxReadFrameSize,
		log:          d.log,
	})
	cc.onIdle = cc.closeIdle
	if err := cc.start(); err != nil {
		tc.NetConn().Close()
		return nil, fmt.Errorf("hbone: starting HTTP/2 with %s: %w", t.HBONEAddr, err)
	}
	go cc.readLoop()
	d.log.Debug("HBONE connection opened", "src", t.SourceID.String(), "dst", t.DestID.String(), "addr", t.HBONEAddr.String())
	return &poolConn{key: t.Key(), cc: cc, local: tc.LocalAddr()}, nil
}

func (d *Dialer) timeoutError(ctx context.Context, t Target, phase string) error {
	cause := ctx.Err()
	if errors.Is(cause, context.Canceled) {
		return fmt.Errorf("hbone: canceled %s to %s: %w", phase, t.HBONEAddr, cause)
	}
	if cause == nil {
		cause = context.DeadlineExceeded
	}
	return fmt.Errorf("hbone: timed out %s to %s (is a NetworkPolicy blocking HBONE port %d?): %w", phase, t.HBONEAddr, t.HBONEAddr.Port(), cause)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// openStream sends the CONNECT on pc (which holds a reservation for it) and
// waits for the answer.
func (d *Dialer) openStream(ctx context.Context, pc *poolConn, t Target) (*Conn, error) {
	authority := t.Authority.String()
	var extra []string
	if len(t.Forwarded) > 0 {
		extra = append(extra, "forwarded", FormatForwarded(t.Forwarded))
	}
	if len(t.Baggage) > 0 {
		extra = append(extra, "baggage", t.Baggage.String())
	}
	if t.Traceparent != "" {
		extra = append(extra, "traceparent", t.Traceparent)
	}
	s, err := pc.cc.openStream(authority, extra...)
	if err != nil {
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", authority, t.HBONEAddr, err)
	}
	select {
	case <-s.respCh:
	case <-ctx.Done():
		s.closeStream(http2.ErrCodeCancel)
		return nil, d.timeoutError(ctx, t, "waiting for the CONNECT response")
	}
	pc.cc.mu.Lock()
	status, cause := s.status, s.recvErr
	pc.cc.mu.Unlock()
	if status == 0 {
		s.closeStream(http2.ErrCodeCancel)
		if cause == nil {
			cause = errors.New("stream ended without a response")
		}
		return nil, fmt.Errorf("hbone: CONNECT %s via %s: %w", authority, t.HBONEAddr, cause)
	}
	if status != http.StatusOK {
		if dl, ok := ctx.Deadline(); ok {
			s.readDeadline.Store(&dl)
		}
		msg := make([]byte, 0, 256)
		for len(msg) < cap(msg) {
			n, err := s.read(msg[len(msg):cap(msg)])
			msg = msg[:len(msg)+n]
			if err != nil {
				break
			}
		}
		s.closeStream(http2.ErrCodeCancel)
		return nil, &StatusError{Code: status, Reason: strings.TrimSpace(string(msg))}
	}
	remote := net.TCPAddrFromAddrPort(t.Authority)
	return newConn(s, pc.local, remote, func() { d.releaseStream(pc, false) }), nil
}

// releaseStream returns a stream slot; broken marks the connection
// unusable. A connection left without streams is closed if it can take no
// more, else its idle timer starts.
func (d *Dialer) releaseStream(pc *poolConn, broken bool) {
	d.mu.Lock()
	pc.streams--
	if broken {
		pc.dead = true
	}
	closeNow := pc.streams == 0 && (pc.dead || !pc.cc.usable())
	if closeNow {
		d.removeLocked(pc)
	} else if pc.streams == 0 && !pc.dead {
		pc.idleGen++
		gen := pc.idleGen
		pc.idle = d.cfg.afterFunc(d.cfg.IdleTimeout, func() { d.expireIdle(pc, gen) })
	}
	d.mu.Unlock()
	if closeNow {
		pc.cc.close()
	}
}

// expireIdle closes pc if it is still idle since timer generation gen.
func (d *Dialer) expireIdle(pc *poolConn, gen uint64) {
	d.mu.Lock()
	if pc.streams != 0 || pc.idleGen != gen || pc.dead {
		d.mu.Unlock()
		return
	}
	d.removeLocked(pc)
	d.mu.Unlock()
	d.log.Debug("closing idle HBONE connection", "addr", pc.key.HBONEAddr.String())
	pc.cc.close()
}

func (d *Dialer) removeLocked(pc *poolConn) {
	pc.dead = true
	pc.stopIdle()
	if p := d.pools[pc.key]; p != nil {
		p.conns = slices.DeleteFunc(p.conns, func(x *poolConn) bool { return x == pc })
		if len(p.conns) == 0 && p.dialing == nil {
			delete(d.pools, pc.key)
		}
	}
}

func (pc *poolConn) stopIdle() {
	if pc.idle != nil {
		pc.idle.Stop()
		pc.idle = nil
	}
	pc.idleGen++
}

func closeAll(pcs []*poolConn) {
	for _, pc := range pcs {
		pc.cc.close()
	}
}

// ConnInfo describes one pooled connection.
type ConnInfo struct {
	Key     PoolKey
	Local   net.Addr
	Streams int
}

// Conns lists the pooled connections, for tests and admin output.
func (d *Dialer) Conns() []ConnInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []ConnInfo
	for _, p := range d.pools {
		for _, pc := range p.conns {
			out = append(out, ConnInfo{Key: pc.key, Local: pc.local, Streams: pc.streams})
		}
	}
	return out
}

// Close closes every pooled connection, aborting their streams, and makes
// further Dials fail.
func (d *Dialer) Close() error {
	d.mu.Lock()
	d.closed = true
	var all []*poolConn
	for k, p := range d.pools {
		for _, pc := range p.conns {
			pc.dead = true
			pc.stopIdle()
			all = append(all, pc)
		}
		delete(d.pools, k)
	}
	d.mu.Unlock()
	d.stopBg()
	closeAll(all)
	d.spares.Wait()
	return nil
}
