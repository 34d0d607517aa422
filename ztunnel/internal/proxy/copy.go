// Package proxy moves bytes between the two legs of a proxied connection:
// Splice copies both directions with half-close and reports bytes as they
// flow; CountingConn reports the bytes of a conn someone else copies (the
// HBONE server splices its streams itself). Tracker counts connections so
// a draining ztunnel knows when the last one ended.
package proxy

import (
	"ambit.dev/pkg/netcopy"

	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Splice copies a→b and b→a until both directions have ended, then closes
// both. When one side's reads end (EOF) the other side's write half is
// closed (CloseWrite), so a half-closed connection stays half-open across
// the proxy. aToB and bToA, if not nil, are called with the size of every
// chunk written, as it is written. A read or write failure other than EOF
// closes both connections (the peer sees a reset or close) and is returned;
// ctx ending closes both and returns nil.
func Splice(ctx context.Context, a, b net.Conn, aToB, bToA func(n int64)) error {
	if tc, ok := a.(*net.TCPConn); ok {
		// b's own reader writes b→a (an HBONE stream's connection does):
		// SpliceAsync, waited for here.
		done := make(chan error, 1)
		if SpliceAsync(ctx, tc, b, aToB, bToA, func(f func()) { go f() }, func(err error) { done <- err }) {
			return <-done
		}
	}
	stop := context.AfterFunc(ctx, func() {
		a.Close()
		b.Close()
	})
	defer stop()
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
		}
		// Unblock the other direction.
		a.Close()
		b.Close()
	}
	// b→a runs in this goroutine: one goroutine less per connection.
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		if err := copyHalf(b, a, aToB); err != nil {
			fail(err)
		}
	}()
	if err := copyHalf(a, b, bToA); err != nil {
		fail(err)
	}
	<-aDone
	return finish(ctx, a, b, &mu, &first)
}

// SpliceAsync is Splice for a TCP connection a and a conn b whose own
// reader writes b→a (an HBONE stream's), with no grown goroutine held
// while idle: a→b runs as a netcopy.Pump on goroutines that spawn starts (a
// fresh one, on a small stack, after each idle period of
// netcopy.IdleHandoff), b→a on b's reader.
// It returns at once; done(err) is called once, after both directions
// ended and both conns are closed, with what Splice would return. It
// reports false, and starts nothing, when a or b cannot do this (then
// call Splice).
func SpliceAsync(ctx context.Context, a *net.TCPConn, b net.Conn, aToB, bToA func(n int64), spawn func(func()), done func(error)) bool {
	d, ok := b.(deliverer)
	if !ok {
		return false
	}
	s := &asyncSplice{a: a, b: b, ctx: ctx, done: done}
	s.pending.Store(2)
	s.stop = context.AfterFunc(ctx, func() {
		a.Close()
		b.Close()
	})
	if !d.DeliverTo(a, bToA, func(err error) {
		if err = ignoreClosed(err); err != nil {
			s.fail(err)
		}
		s.end()
	}) {
		s.stop()
		return false
	}
	halfDone := func(rerr, werr error) {
		if err := halfResult(b, rerr, werr); err != nil {
			s.fail(err)
		}
		s.end()
	}
	if !netcopy.Pump(b, a, aToB, spawn, halfDone) {
		spawn(func() { halfDone(netcopy.Copy(b, a, netcopy.Waiter(a), aToB)) })
	}
	return true
}

// asyncSplice is the state SpliceAsync's two directions share.
type asyncSplice struct {
	a, b    net.Conn
	ctx     context.Context
	done    func(error)
	stop    func() bool
	pending atomic.Int32

	mu    sync.Mutex
	first error
}

// fail records the first failure and closes both conns, which ends the
// other direction too.
func (s *asyncSplice) fail(err error) {
	s.mu.Lock()
	if s.first == nil {
		s.first = err
	}
	s.mu.Unlock()
	s.a.Close()
	s.b.Close()
}

// end is called once per direction; the last one finishes.
func (s *asyncSplice) end() {
	if s.pending.Add(-1) != 0 {
		return
	}
	s.stop()
	s.done(finish(s.ctx, s.a, s.b, &s.mu, &s.first))
}

// deliverer is a conn whose own reader can write what it receives to a TCP
// connection (*hbone.Conn).
type deliverer interface {
	DeliverTo(dst *net.TCPConn, count func(int64), done func(error)) bool
}

// finish closes both conns once both directions ended and returns the
// first failure, or nil when ctx ended.
func finish(ctx context.Context, a, b net.Conn, mu *sync.Mutex, first *error) error {
	a.Close()
	b.Close()
	if ctx.Err() != nil {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	return *first
}

// copyHalf copies src to dst until src ends, then half-closes dst.
func copyHalf(dst, src net.Conn, count func(int64)) error {
	rerr, werr := netcopy.Copy(dst, src, netcopy.Waiter(src), count)
	return halfResult(dst, rerr, werr)
}

// halfResult ends one direction after its copy returned rerr, werr: a
// failure (other than a closed conn) is returned; the source's EOF
// half-closes dst.
func halfResult(dst net.Conn, rerr, werr error) error {
	if werr != nil {
		return ignoreClosed(werr)
	}
	if rerr != nil {
		return ignoreClosed(rerr)
	}
	return closeWrite(dst)
}

// closeWrite half-closes c when it can, else closes it.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
	return c.Close()
}

// ignoreClosed hides the error of using a connection the other direction
// (or ctx) already closed: that is the normal end, not a failure.
func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return err
}

// CountingConn wraps a net.Conn and reports bytes written and read.
// CloseWrite is passed through; OnClose runs once, after the first Close.
type CountingConn struct {
	net.Conn
	// OnWrite and OnRead receive the size of each successful Write/Read.
	OnWrite, OnRead func(n int64)
	// OnClose runs once on the first Close.
	OnClose func()
	once    sync.Once
}

// Read reads and counts.
func (c *CountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.OnRead != nil {
		c.OnRead(int64(n))
	}
	return n, err
}

// Write writes and counts.
func (c *CountingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 && c.OnWrite != nil {
		c.OnWrite(int64(n))
	}
	return n, err
}

// CloseWrite half-closes the wrapped conn (or closes it if it cannot).
func (c *CountingConn) CloseWrite() error { return closeWrite(c.Conn) }

// SyscallConn passes the wrapped conn's raw connection through, so a copy
// can wait for readability without holding a buffer (pkg/hbone's server
// does); reads through it would bypass the counting.
func (c *CountingConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// WriteTarget is the *net.TCPConn writes go to (nil if the wrapped conn is
// not one) and the count of them, for a writer that writes it directly
// (hbone.TCPWriter).
func (c *CountingConn) WriteTarget() (*net.TCPConn, func(int64)) {
	tc, _ := c.Conn.(*net.TCPConn)
	return tc, c.OnWrite
}

// ReadSource is the *net.TCPConn reads come from (nil if the wrapped conn
// is not one) and the count of them, for a copy that reads it directly
// (netcopy.TCPSource).
func (c *CountingConn) ReadSource() (*net.TCPConn, func(int64)) {
	tc, _ := c.Conn.(*net.TCPConn)
	return tc, c.OnRead
}

// Close closes the wrapped conn and runs OnClose once.
func (c *CountingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if c.OnClose != nil {
			c.OnClose()
		}
	})
	return err
}

// Tracker counts open connections and lets a drain wait for them.
type Tracker struct {
	mu    sync.Mutex
	n     int
	empty chan struct{} // closed while n == 0
}

// NewTracker returns a Tracker with no connections.
func NewTracker() *Tracker {
	t := &Tracker{empty: make(chan struct{})}
	close(t.empty)
	return t
}

// Add counts one more connection; call the returned func when it ends
// (calls after the first do nothing).
func (t *Tracker) Add() (done func()) {
	t.mu.Lock()
	if t.n == 0 {
		t.empty = make(chan struct{})
	}
	t.n++
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			t.n--
			if t.n == 0 {
				close(t.empty)
			}
			t.mu.Unlock()
		})
	}
}

// Len returns the number of open connections.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// Wait returns nil once no connection is open, or ctx's error if ctx ends
// first.
func (t *Tracker) Wait(ctx context.Context) error {
	for {
		t.mu.Lock()
		n, empty := t.n, t.empty
		t.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-empty:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
