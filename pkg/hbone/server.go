// Package hbone implements HBONE, Ambit's (and Istio's) tunnel protocol:
// HTTP/2 CONNECT over mutual TLS 1.3 on port 15008, with X.509-SVID
// identities. Server terminates tunnels and splices each stream to an
// upstream; Dialer opens streams over pooled connections and returns them as
// net.Conns. HTTP/2 framing and HPACK come from golang.org/x/net/http2
// (h2.go runs the CONNECT subset of the protocol on them) and peer
// verification from go-spiffe.
package hbone

import (
	"ambit.dev/pkg/netcopy"

	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"ambit.dev/pkg/identity"
)

// Port is the HBONE server port.
const Port = 15008

// Flow-control and limit defaults shared by Server and Dialer.
const (
	DefaultStreamWindow     = 4 << 20  // bytes, per stream
	DefaultConnWindow       = 16 << 20 // bytes, per connection
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxConcurrentStreams is the streams a Server lets one client
	// connection have open at once.
	DefaultMaxConcurrentStreams = 250

	// DefaultServerMaxReadFrameSize is the largest DATA frame a Server
	// accepts: 1 MiB (x/net's default too). The frame buffer is per
	// connection; each received frame is one write to the upstream, so
	// fewer, larger frames mean fewer system calls.
	DefaultServerMaxReadFrameSize = 1 << 20
	// DefaultClientMaxReadFrameSize is the largest DATA frame a Dialer
	// accepts: 1 MiB, for the same reasons.
	DefaultClientMaxReadFrameSize = 1 << 20
)

// Request describes one CONNECT stream after the server has validated it.
type Request struct {
	// SourceID is the verified identity of the client certificate: the
	// source workload, or the waypoint that forwards for it.
	SourceID identity.ID
	// Peer is the remote address of the HBONE connection.
	Peer netip.AddrPort
	// Local is the address the HBONE connection was accepted on.
	Local netip.AddrPort
	// Dst is the :authority, the final destination.
	Dst netip.AddrPort
	// Src is the original source from the first Forwarded for= with an
	// address; zero if there is none.
	Src netip.AddrPort
	// Forwarded, Baggage and Traceparent are the parsed request headers.
	Forwarded   []ForwardedElement
	Baggage     Baggage
	Traceparent string
}

// ServerConfig configures a Server. TLS, Authorize and Dial are required.
type ServerConfig struct {
	// TLS is the server TLS config, normally from ServerTLS.
	TLS *tls.Config
	// Authorize decides whether the stream may proceed; an error means 401.
	// An error wrapping a *StatusError answers its Code and Reason instead.
	Authorize func(ctx context.Context, r Request) error
	// Dial connects to the upstream for an authorized stream; an error
	// means 503, or the Code and Reason of a *StatusError it wraps (a
	// waypoint answers 400 for a destination it does not serve). The
	// returned conn should implement CloseWrite (as *net.TCPConn does) for
	// half-close to reach the upstream; a *net.TCPConn or a TCPWriter is
	// written by the connection's reader with no goroutine per stream.
	Dial func(ctx context.Context, r Request) (net.Conn, error)
	// Handle, if set, is asked before Dial for every authorized stream.
	// A non-nil serve takes the stream itself: the server answers 200 and
	// calls serve with the stream as a *Conn (LocalAddr the :authority,
	// RemoteAddr the original source), so an in-process server — the
	// waypoint's HTTP server — reads and writes the stream with no copy
	// and no goroutine hand-off in between. serve owns the Conn and
	// returns once it is done with it; the stream is closed then. A nil
	// serve means Dial as usual; an error answers as Dial's does.
	Handle func(ctx context.Context, r Request) (serve func(*Conn), err error)
	// Waypoint skips the check that the :authority IP is the local address
	// the connection was accepted on.
	Waypoint bool
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout time.Duration
	// StreamWindow and ConnWindow are the receive flow-control windows
	// (defaults 4 MiB and 16 MiB).
	StreamWindow, ConnWindow int32
	// MaxConcurrentStreams per connection (default
	// DefaultMaxConcurrentStreams).
	MaxConcurrentStreams uint32
	// MaxReadFrameSize is the largest DATA frame accepted (default
	// DefaultServerMaxReadFrameSize).
	MaxReadFrameSize uint32
	// Logger defaults to slog.Default(), tagged component=hbone.
	Logger *slog.Logger
}

// Server terminates HBONE: it serves HTTP/2 CONNECT streams on TLS
// connections and splices each to an upstream connection.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]*h2conn // nil until the HTTP/2 connection started
	idle    chan struct{}        // closed and replaced whenever conns becomes empty
}

// NewServer validates cfg and returns a Server. It starts nothing.
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.TLS == nil:
		return nil, errors.New("hbone: ServerConfig.TLS is required")
	case cfg.Authorize == nil:
		return nil, errors.New("hbone: ServerConfig.Authorize is required")
	case cfg.Dial == nil:
		return nil, errors.New("hbone: ServerConfig.Dial is required")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = DefaultStreamWindow
	}
	if cfg.ConnWindow <= 0 {
		cfg.ConnWindow = DefaultConnWindow
	}
	if cfg.MaxReadFrameSize == 0 {
		cfg.MaxReadFrameSize = DefaultServerMaxReadFrameSize
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if err := validateFlow(cfg.StreamWindow, cfg.ConnWindow, cfg.MaxReadFrameSize); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "hbone"),
		conns: map[net.Conn]*h2conn{},
		idle:  make(chan struct{}),
	}, nil
}

// validateFlow checks windows and frame size against RFC 9113's bounds.
func validateFlow(stream, conn int32, frame uint32) error {
	switch {
	case stream < initialWindow || conn < initialWindow:
		return fmt.Errorf("hbone: flow-control windows %d (stream) and %d (connection) must be at least %d bytes", stream, conn, initialWindow)
	case frame < initialMaxFrame || frame > 1<<24-1:
		return fmt.Errorf("hbone: max read frame size %d must be within %d..%d", frame, initialMaxFrame, 1<<24-1)
	}
	return nil
}

// ErrServerClosed is returned by Serve and ServeConn after Shutdown.
var ErrServerClosed = errors.New("hbone: server closed")

// Serve accepts connections on ln and serves each until ctx is done. It
// closes ln, and returns nil, when ctx is done, after every connection it
// accepted has been served.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if s.isClosing() {
				return ErrServerClosed
			}
			return fmt.Errorf("hbone: accepting on %s: %w", ln.Addr(), err)
		}
		wg.Go(func() {
			if err := s.ServeConn(ctx, c); err != nil && !errors.Is(err, ErrServerClosed) {
				s.log.Info("HBONE connection rejected", "peer", c.RemoteAddr().String(), "error", err)
			}
		})
	}
}

// ServeConn serves one accepted connection (plain TCP, or a *tls.Conn made
// with the server's TLS config) until the peer closes it or ctx is done;
// every stream handler has returned when it returns. It returns an error
// when the TLS handshake, peer verification or the HTTP/2 preface fails.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	if !s.track(conn) {
		return ErrServerClosed
	}
	defer s.untrack(conn)

	tc, ok := conn.(*tls.Conn)
	if !ok {
		tc = tls.Server(&recordConn{Conn: conn}, s.cfg.TLS)
	}
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		return fmt.Errorf("hbone: TLS handshake with %s: %w", conn.RemoteAddr(), err)
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != ALPN {
		return fmt.Errorf("hbone: client %s did not negotiate ALPN %q", conn.RemoteAddr(), ALPN)
	}
	src, err := PeerIdentity(cs)
	if err != nil {
		return err
	}
	_ = tc.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(tc, preface); err != nil {
		return fmt.Errorf("hbone: reading the HTTP/2 preface from %s: %w", conn.RemoteAddr(), err)
	}
	if string(preface) != http2.ClientPreface {
		return fmt.Errorf("hbone: client %s did not send the HTTP/2 connection preface (is it an HBONE client?)", conn.RemoteAddr())
	}
	// The read deadline stays until the client's SETTINGS frame is in.
	ci := &connInfo{
		source: src,
		local:  addrPortOf(conn.LocalAddr()),
		peer:   addrPortOf(conn.RemoteAddr()),
		done:   make(chan struct{}),
	}
	sctx, cancelStreams := context.WithCancel(ctx)
	defer cancelStreams()
	var h *h2conn
	h = newH2conn(tc, h2Config{
		server:       true,
		streamWindow: s.cfg.StreamWindow,
		connWindow:   s.cfg.ConnWindow,
		maxReadFrame: s.cfg.MaxReadFrameSize,
		maxStreams:   s.cfg.MaxConcurrentStreams,
		log:          s.log,
		onRequest: func(st *stream, f *http2.MetaHeadersFrame) {
			if !ci.enter() {
				go h.resetStream(st.id, http2.ErrCodeRefusedStream, nil)
				return
			}
			st.ctx, st.cancelCtx = context.WithCancel(sctx)
			go s.serveStream(st, f, ci)
		},
	})
	h.onIdle = h.closeIdle
	if err := h.start(); err != nil {
		return err
	}
	if !s.started(conn, h) {
		h.goAway(http2.ErrCodeNo, "server shutting down")
	}
	stop := context.AfterFunc(ctx, h.close)
	defer stop()
	h.readLoop()
	ci.closeAndWait()
	return nil
}

// Shutdown stops new connections, asks clients to go away (HTTP/2 GOAWAY)
// and waits for the open streams to finish. When ctx ends first it closes
// the remaining connections and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	var started []*h2conn
	for _, h := range s.conns {
		if h != nil {
			started = append(started, h)
		}
	}
	s.mu.Unlock()
	for _, h := range started {
		h.goAway(http2.ErrCodeNo, "server shutting down")
	}
	for {
		s.mu.Lock()
		n, idle := len(s.conns), s.idle
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.Close()
			}
			s.mu.Unlock()
			return ctx.Err()
		}
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = nil
	return true
}

// started records c's HTTP/2 connection; false means Shutdown began before
// it did, so the caller sends GOAWAY itself.
func (s *Server) started(c net.Conn, h *h2conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = h
	return !s.closing
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if len(s.conns) == 0 {
		close(s.idle)
		s.idle = make(chan struct{})
	}
}

// connInfo is what the handlers of one connection share. It also counts
// running handlers so ServeConn can wait for them.
type connInfo struct {
	source      identity.ID
	local, peer netip.AddrPort

	mu      sync.Mutex
	running int
	closed  bool
	done    chan struct{}
}

func (ci *connInfo) enter() bool {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if ci.closed {
		return false
	}
	ci.running++
	return true
}

func (ci *connInfo) exit() {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	ci.running--
	if ci.closed && ci.running == 0 {
		close(ci.done)
	}
}

func (ci *connInfo) closeAndWait() {
	ci.mu.Lock()
	ci.closed = true
	if ci.running == 0 {
		close(ci.done)
	}
	ci.mu.Unlock()
	<-ci.done
}

// CheckRequest is the server's decision on a request line: it must be a
// CONNECT whose :authority is a valid ip:port and, unless waypoint is set,
// names the local address the connection was accepted on. It returns the
// destination, or the HTTP status to answer and why.
func CheckRequest(method, authority string, local netip.Addr, waypoint bool) (netip.AddrPort, int, error) {
	if method != http.MethodConnect {
		return netip.AddrPort{}, http.StatusBadRequest, fmt.Errorf("hbone: method %q is not CONNECT", method)
	}
	dst, err := ParseAuthority(authority)
	if err != nil {
		return netip.AddrPort{}, http.StatusBadRequest, err
	}
	if !waypoint && dst.Addr() != local.Unmap() {
		return netip.AddrPort{}, http.StatusBadRequest,
			fmt.Errorf("hbone: :authority %s is not the address this connection reached (%s)", dst, local.Unmap())
	}
	return dst, http.StatusOK, nil
}

// buildRequest validates one stream and parses its headers.
func (s *Server) buildRequest(f *http2.MetaHeadersFrame, ci *connInfo) (Request, int, error) {
	if f.Truncated {
		return Request{}, http.StatusRequestHeaderFieldsTooLarge, errors.New("hbone: request headers too large")
	}
	dst, code, err := CheckRequest(f.PseudoValue("method"), f.PseudoValue("authority"), ci.local.Addr(), s.cfg.Waypoint)
	if err != nil {
		return Request{}, code, err
	}
	req := Request{SourceID: ci.source, Peer: ci.peer, Local: ci.local, Dst: dst}
	var forwarded, baggage []string
	for _, hf := range f.RegularFields() {
		switch hf.Name {
		case "forwarded":
			forwarded = append(forwarded, hf.Value)
		case "baggage":
			baggage = append(baggage, hf.Value)
		case "traceparent":
			if req.Traceparent == "" {
				req.Traceparent = hf.Value
			}
		}
	}
	if len(forwarded) > 0 {
		if req.Forwarded, err = ParseForwarded(strings.Join(forwarded, ",")); err != nil {
			return Request{}, http.StatusBadRequest, err
		}
		for _, e := range req.Forwarded {
			if ap, ok := e.ForAddr(); ok {
				req.Src = ap
				break
			}
		}
	}
	if len(baggage) > 0 {
		// Baggage is informational: a malformed header is dropped, not fatal.
		if b, err := ParseBaggage(strings.Join(baggage, ",")); err == nil {
			req.Baggage = b
		} else {
			s.log.Debug("dropping malformed baggage", "source", ci.source.String(), "error", err)
		}
	}
	return req, http.StatusOK, nil
}

// Reasons sent in error response bodies; clients show them to users.
const (
	reasonDenied       = "denied by destination authorization policy"
	reasonUpstreamFail = "destination could not connect to the upstream"
)

// serveStream answers one CONNECT and carries its stream; it calls
// ci.exit when the stream is done. The decision (request parsing,
// Authorize, Handle, Dial) runs in accept, deep in its frames (the
// Request, the upstream dial); this goroutine ends once the splice is
// started, and the splice holds no goroutine while the stream is idle
// (spliceAsync).
func (s *Server) serveStream(st *stream, f *http2.MetaHeadersFrame, ci *connInfo) {
	up, serve, req := s.accept(st, f, ci)
	switch {
	case up != nil:
		if err := st.respond(":status", "200"); err != nil {
			up.Close()
			break
		}
		spliceAsync(st, up, ci)
		return
	case serve != nil:
		handOff(st, req, serve)
	}
	st.closeStream(http2.ErrCodeCancel)
	ci.exit()
}

// handOff answers 200 and gives the stream, as a Conn, to a Handle's
// serve.
func handOff(st *stream, req *Request, serve func(*Conn)) {
	if err := st.respond(":status", "200"); err != nil {
		return
	}
	c := newConn(st, net.TCPAddrFromAddrPort(req.Dst), net.TCPAddrFromAddrPort(sourceAddr(*req)), func() {})
	c.server = true
	stop := context.AfterFunc(st.ctx, func() { c.Close() })
	defer stop()
	serve(c)
	c.Close()
}

// accept decides a CONNECT: the upstream to splice it to, or the Handle
// function that serves it (with the request), or neither when it was
// answered with an error.
//
//go:noinline
func (s *Server) accept(st *stream, f *http2.MetaHeadersFrame, ci *connInfo) (net.Conn, func(*Conn), *Request) {
	req, code, err := s.buildRequest(f, ci)
	if err != nil {
		s.log.Debug("HBONE request rejected", "source", ci.source.String(), "code", code, "error", err)
		st.respondError(code, err.Error())
		return nil, nil, nil
	}
	ctx := st.ctx
	if err := s.cfg.Authorize(ctx, req); err != nil {
		s.log.Debug("HBONE request denied", "source", req.SourceID.String(), "dst", req.Dst.String(), "error", err)
		if se := (*StatusError)(nil); errors.As(err, &se) {
			st.respondError(se.Code, se.Reason)
			return nil, nil, nil
		}
		st.respondError(http.StatusUnauthorized, reasonDenied)
		return nil, nil, nil
	}
	if s.cfg.Handle != nil {
		serve, err := s.cfg.Handle(ctx, req)
		if err != nil {
			s.answerDialError(st, req, err)
			return nil, nil, nil
		}
		if serve != nil {
			return nil, serve, &req
		}
	}
	up, err := s.cfg.Dial(ctx, req)
	if err != nil {
		s.answerDialError(st, req, err)
		return nil, nil, nil
	}
	return up, nil, nil
}

// answerDialError answers a stream whose Handle or Dial failed: the
// StatusError it wraps, else 503.
func (s *Server) answerDialError(st *stream, req Request, err error) {
	s.log.Debug("HBONE upstream dial failed", "dst", req.Dst.String(), "error", err)
	if se := (*StatusError)(nil); errors.As(err, &se) {
		st.respondError(se.Code, se.Reason)
		return
	}
	st.respondError(http.StatusServiceUnavailable, reasonUpstreamFail+": "+err.Error())
}

// sourceAddr is the original source of r: its Forwarded for=, else the
// peer.
func sourceAddr(r Request) netip.AddrPort {
	if r.Src.IsValid() {
		return r.Src
	}
	return r.Peer
}

// respond sends the response HEADERS, unless the stream was reset or
// closed meanwhile (the client gave up while Authorize or Dial ran).
func (st *stream) respond(fields ...string) error {
	c := st.c
	return c.write(func() error {
		c.mu.Lock()
		gone := st.removed || st.closed || st.sentEnd
		c.mu.Unlock()
		if gone {
			return errStreamClosed
		}
		return c.writeHeaders(st.id, false, fields...)
	})
}

// respondError answers the stream with status and reason as a plain-text
// body, like net/http's Error.
func (st *stream) respondError(status int, reason string) {
	err := st.respond(":status", strconv.Itoa(status),
		"content-type", "text/plain; charset=utf-8", "x-content-type-options", "nosniff")
	if err == nil {
		_, _ = st.write([]byte(reason+"\n"), true)
	}
	// The request is not read: tell the client to stop sending (RFC 9113
	// §8.1) without discarding the response.
	st.closeStream(http2.ErrCodeNo)
}

// spliceAsync copies client→upstream and upstream→client, then closes
// up, ends the stream and calls ci.exit. The client's end of stream
// half-closes the upstream; the upstream's EOF ends the response stream
// while the client may still send; an upstream that fails (other than by
// EOF or the stream's end) resets the stream, so the client sees an error
// rather than a clean end. No goroutine waits while the stream is idle: a
// TCP upstream gets the client's data from the connection's reader, and
// the upstream's data is pumped (netcopy.Pump: an idle stream waits on a
// fresh goroutine's small stack); an upstream that allows neither gets a
// copy goroutine per direction.
func spliceAsync(st *stream, up net.Conn, ci *connInfo) {
	ctx := st.ctx
	var pending atomic.Int32
	pending.Store(2)
	stop := context.AfterFunc(ctx, func() { up.Close() })
	end := func() {
		if pending.Add(-1) != 0 {
			return
		}
		stop()
		up.Close()
		st.closeStream(http2.ErrCodeCancel) // nothing if both directions ended
		ci.exit()
	}
	upEnded := func(err error) {
		if err != nil {
			up.Close()
		}
		end()
	}
	tc, count := writeTarget(up)
	if tc == nil || !st.deliverTo(tc, count, upEnded) {
		go func() {
			rerr, werr := netcopy.Copy(up, streamIO{st}, st.waitRead, nil)
			if rerr == nil && werr == nil {
				closeWrite(up)
			}
			upEnded(errors.Join(rerr, werr))
		}()
	}
	fromUp := func(rerr, werr error) {
		switch {
		case rerr != nil && ctx.Err() == nil && !errors.Is(rerr, net.ErrClosed):
			st.closeStream(http2.ErrCodeInternal)
		case rerr == nil && werr == nil:
			_, _ = st.write(nil, true)
		}
		end()
	}
	if !netcopy.Pump(streamIO{st}, up, nil, func(f func()) { go f() }, fromUp) {
		go func() { fromUp(netcopy.Copy(streamIO{st}, up, netcopy.Waiter(up), nil)) }()
	}
}

// TCPWriter is an upstream conn (such as a wrapper counting bytes) whose
// writes go to a TCP connection. The server writes the client's data to
// that connection directly, from the HBONE connection's reader, and
// reports each chunk's size to count (which may be nil).
type TCPWriter interface {
	WriteTarget() (tc *net.TCPConn, count func(n int64))
}

func writeTarget(up net.Conn) (*net.TCPConn, func(int64)) {
	switch c := up.(type) {
	case *net.TCPConn:
		return c, nil
	case TCPWriter:
		return c.WriteTarget()
	}
	return nil, nil
}

// streamIO is a server stream as the copy sees it.
type streamIO struct{ s *stream }

func (w streamIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return w.s.read(p)
}
func (w streamIO) Write(p []byte) (int, error) { return w.s.write(p, false) }

// waitRead waits until the stream has data or has ended.
func (st *stream) waitRead() error {
	_, err := st.read(nil)
	if err == io.EOF {
		return nil // the copy's read returns it
	}
	return err
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
