// Package hbone implements HBONE, Ambit's (and Istio's) tunnel protocol:
// HTTP/2 CONNECT over mutual TLS 1.3 on port 15008, with X.509-SVID
// identities. Server terminates tunnels and splices each stream to an
// upstream; Dialer opens streams over pooled connections and returns them as
// net.Conns. The HTTP/2 work is done by golang.org/x/net/http2 and peer
// verification by go-spiffe.
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
	"strings"
	"sync"
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

	// DefaultServerMaxReadFrameSize is the largest DATA frame a Server
	// accepts: 16 KiB, the HTTP/2 minimum and one TLS record. A client's
	// x/net body writer holds a scratch buffer of this size (capped at
	// 512 KiB) for the whole life of each stream, idle or not, so a larger
	// value costs every open stream that much client memory.
	DefaultServerMaxReadFrameSize = 16 << 10
	// DefaultClientMaxReadFrameSize is the largest DATA frame a Dialer
	// accepts: 1 MiB. Its read buffer is per connection, not per stream,
	// so large frames cost nothing per stream and save framing work.
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
	// half-close to reach the upstream.
	Dial func(ctx context.Context, r Request) (net.Conn, error)
	// Waypoint skips the check that the :authority IP is the local address
	// the connection was accepted on.
	Waypoint bool
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout time.Duration
	// StreamWindow and ConnWindow are the receive flow-control windows
	// (defaults 4 MiB and 16 MiB).
	StreamWindow, ConnWindow int32
	// MaxConcurrentStreams per connection (0: the x/net default, 250).
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
	h1  *http.Server // carries the graceful-shutdown hook of h2
	h2  *http2.Server

	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]struct{}
	idle    chan struct{} // closed and replaced whenever conns becomes empty
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg: cfg,
		log: cfg.Logger.With("component", "hbone"),
		h1:  &http.Server{ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)},
		h2: &http2.Server{
			MaxConcurrentStreams:         cfg.MaxConcurrentStreams,
			MaxReadFrameSize:             cfg.MaxReadFrameSize,
			MaxUploadBufferPerStream:     cfg.StreamWindow,
			MaxUploadBufferPerConnection: cfg.ConnWindow,
		},
		conns: map[net.Conn]struct{}{},
		idle:  make(chan struct{}),
	}
	if err := http2.ConfigureServer(s.h1, s.h2); err != nil {
		return nil, fmt.Errorf("hbone: configuring HTTP/2: %w", err)
	}
	return s, nil
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
// when the TLS handshake or peer verification fails.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	if !s.track(conn) {
		return ErrServerClosed
	}
	defer s.untrack(conn)

	tc, ok := conn.(*tls.Conn)
	if !ok {
		tc = tls.Server(conn, s.cfg.TLS)
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
	ci := &connInfo{
		source: src,
		local:  addrPortOf(conn.LocalAddr()),
		peer:   addrPortOf(conn.RemoteAddr()),
		done:   make(chan struct{}),
	}
	stop := context.AfterFunc(ctx, func() { tc.Close() })
	defer stop()
	s.h2.ServeConn(newBatchConn(tc), &http2.ServeConnOpts{
		Context:    ctx,
		BaseConfig: s.h1,
		Handler:    http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveStream(w, r, ci) }),
	})
	ci.closeAndWait()
	return nil
}

// Shutdown stops new connections, asks clients to go away (HTTP/2 GOAWAY)
// and waits for the open streams to finish. When ctx ends first it closes
// the remaining connections and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		// Sends GOAWAY on every connection s.h2 serves; returns at once as
		// h1 owns no listeners or connections of its own. Repeated because
		// a connection accepted just before closing was set may register
		// with s.h2 after a broadcast; GOAWAY is sent once per connection.
		_ = s.h1.Shutdown(ctx)
		s.mu.Lock()
		n, idle := len(s.conns), s.idle
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-tick.C:
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
	s.conns[c] = struct{}{}
	return true
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
// running handlers so ServeConn can wait for them: x/net/http2 does not.
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
func (s *Server) buildRequest(r *http.Request, ci *connInfo) (Request, int, error) {
	dst, code, err := CheckRequest(r.Method, r.Host, ci.local.Addr(), s.cfg.Waypoint)
	if err != nil {
		return Request{}, code, err
	}
	req := Request{SourceID: ci.source, Peer: ci.peer, Local: ci.local, Dst: dst,
		Traceparent: r.Header.Get("Traceparent")}
	if v := r.Header.Values("Forwarded"); len(v) > 0 {
		if req.Forwarded, err = ParseForwarded(strings.Join(v, ",")); err != nil {
			return Request{}, http.StatusBadRequest, err
		}
		for _, e := range req.Forwarded {
			if ap, ok := e.ForAddr(); ok {
				req.Src = ap
				break
			}
		}
	}
	if v := r.Header.Values("Baggage"); len(v) > 0 {
		// Baggage is informational: a malformed header is dropped, not fatal.
		if b, err := ParseBaggage(strings.Join(v, ",")); err == nil {
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

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, ci *connInfo) {
	if !ci.enter() {
		return
	}
	defer ci.exit()

	req, code, err := s.buildRequest(r, ci)
	if err != nil {
		s.log.Debug("HBONE request rejected", "source", ci.source.String(), "code", code, "error", err)
		http.Error(w, err.Error(), code)
		return
	}
	ctx := r.Context()
	if err := s.cfg.Authorize(ctx, req); err != nil {
		s.log.Debug("HBONE request denied", "source", req.SourceID.String(), "dst", req.Dst.String(), "error", err)
		if se := (*StatusError)(nil); errors.As(err, &se) {
			http.Error(w, se.Reason, se.Code)
			return
		}
		http.Error(w, reasonDenied, http.StatusUnauthorized)
		return
	}
	up, err := s.cfg.Dial(ctx, req)
	if err != nil {
		s.log.Debug("HBONE upstream dial failed", "dst", req.Dst.String(), "error", err)
		if se := (*StatusError)(nil); errors.As(err, &se) {
			http.Error(w, se.Reason, se.Code)
			return
		}
		http.Error(w, reasonUpstreamFail+": "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer up.Close()
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	if err := splice(ctx, r.Body, flushWriter{w, rc}, up); err != nil {
		// The upstream broke: reset the stream so the client sees an
		// error rather than a clean end of stream.
		panic(http.ErrAbortHandler)
	}
}

// splice copies client→upstream and upstream→client. The client's end of
// request body half-closes the upstream; the upstream's EOF ends the
// response (x/net/http2 cannot end a response while still reading the
// request, so client data sent after that point is discarded). It returns
// an error only if reading the upstream failed for a reason other than
// EOF or the stream's end.
func splice(ctx context.Context, body io.ReadCloser, w io.Writer, up net.Conn) error {
	stop := context.AfterFunc(ctx, func() { up.Close() })
	defer stop()
	toUp := make(chan struct{})
	go func() {
		defer close(toUp)
		// A zero-length read of the request body returns once data (or
		// its end) is there: the copy takes a buffer only then.
		wait := func() error { _, _ = body.Read(nil); return nil }
		if rerr, werr := netcopy.Copy(up, body, wait, nil); rerr != nil || werr != nil {
			up.Close()
			return
		}
		closeWrite(up)
	}()
	var upErr error
	if err, _ := netcopy.Copy(w, up, netcopy.Waiter(up), nil); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
		upErr = err
	}
	body.Close()
	<-toUp
	return upErr
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, f.rc.Flush()
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
