package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// StatusError is returned by Dialer.Dial when the server answers the
// CONNECT with a status other than 200. A Server's Authorize or Dial
// returns one to choose the status it answers.
type StatusError struct {
	Code int
	// Reason is the start of the server's response body, if any.
	Reason string
}

func (e *StatusError) Error() string {
	var cause string
	switch e.Code {
	case http.StatusBadRequest:
		cause = "destination rejected the CONNECT request as malformed"
	case http.StatusUnauthorized:
		cause = reasonDenied
	case http.StatusServiceUnavailable:
		cause = "destination could not connect to the upstream workload"
	default:
		cause = "destination answered " + http.StatusText(e.Code)
	}
	msg := fmt.Sprintf("hbone: %s (HTTP %d)", cause, e.Code)
	if e.Reason != "" && e.Reason != cause {
		msg += ": " + e.Reason
	}
	return msg
}

// Conn is one HBONE stream, used as a net.Conn: Write sends on the CONNECT
// request body, Read reads the response body. CloseWrite ends the request
// body (the upstream sees EOF); Read returns io.EOF when the upstream has
// closed its side. Close after both directions finished ends the stream
// cleanly; Close before that resets it (like a TCP RST).
//
// Read reads the response body directly (no goroutine, no buffer of its
// own); a Read with an empty buffer waits until data or the end of the
// stream is there without consuming anything (see WaitRead). Deadlines are
// supported: writes go through an in-memory pipe (net.Pipe) whose
// deadlines they inherit; a read deadline applies to the Reads that start
// after it is set.
type Conn struct {
	wr     net.Conn // our end of the request-body pipe
	body   io.ReadCloser
	cancel context.CancelFunc
	local  net.Addr
	remote net.Addr

	sent, received atomic.Int64
	closed         atomic.Bool
	closeOnce      sync.Once
	release        func()

	rmu      sync.Mutex // serializes Read and WaitRead
	deadline atomic.Pointer[time.Time]
	// waiting is non-nil while a goroutine waits for the body to become
	// readable on behalf of a Read that had a deadline; it delivers the
	// wait's error once. Guarded by rmu.
	waiting chan error
}

func newConn(wr net.Conn, body io.ReadCloser, cancel context.CancelFunc, local, remote net.Addr, release func()) *Conn {
	return &Conn{wr: wr, body: body, cancel: cancel, local: local, remote: remote, release: release}
}

// Read reads from the response body.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.waitLocked(); err != nil {
		return 0, err
	}
	n, err := c.body.Read(p)
	c.received.Add(int64(n))
	return n, c.readError(err)
}

// WaitRead blocks until a Read would not block (data is buffered, or the
// stream ended or failed), without consuming anything; it fails only when
// the read deadline passes or the Conn is closed. A proxy calls it before
// taking a copy buffer, so an idle stream holds none.
func (c *Conn) WaitRead() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.waitLocked(); err != nil {
		return err
	}
	_, err := c.body.Read(nil)
	if err = c.readError(err); errors.Is(err, io.ErrClosedPipe) {
		return err
	}
	return nil
}

// waitLocked waits, under the read deadline if one is set, until the body
// is readable; it returns nil at once when no deadline is set (the caller's
// own body read then blocks).
func (c *Conn) waitLocked() error {
	if c.closed.Load() {
		return io.ErrClosedPipe
	}
	dl := c.deadline.Load()
	if c.waiting == nil && (dl == nil || dl.IsZero()) {
		return nil
	}
	if c.waiting == nil {
		if !time.Now().Before(*dl) {
			return os.ErrDeadlineExceeded
		}
		ch := make(chan error, 1)
		c.waiting = ch
		go func() {
			_, err := c.body.Read(nil) // returns when readable, ended or closed
			ch <- err
		}()
	}
	var timeout <-chan time.Time
	if dl != nil && !dl.IsZero() {
		t := time.NewTimer(time.Until(*dl))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-c.waiting:
		// The wait's error (end of stream, reset) is sticky in the body:
		// the caller's read returns it again.
		c.waiting = nil
		return nil
	case <-timeout:
		return os.ErrDeadlineExceeded
	}
}

// readError maps a response-body error to what a net.Conn reports.
func (c *Conn) readError(err error) error {
	switch {
	case err == nil || err == io.EOF:
		return err
	case c.closed.Load():
		return io.ErrClosedPipe
	}
	return fmt.Errorf("hbone: stream broken: %w", err)
}

// Write writes to the request body.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.wr.Write(p)
	c.sent.Add(int64(n))
	return n, err
}

// CloseWrite half-closes the stream: the request body ends and the
// upstream reads EOF. Reading continues to work.
func (c *Conn) CloseWrite() error { return c.wr.Close() }

// Close releases the stream (see the Conn comment).
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.wr.Close()
		c.body.Close() // resets the stream unless the response ended; wakes readers
		c.cancel()
		c.release()
	})
	return nil
}

// LocalAddr is the local address of the underlying HBONE connection.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the final destination (the :authority).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.deadline.Store(&t)
	return c.wr.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.deadline.Store(&t)
	return nil
}

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.wr.SetWriteDeadline(t) }

// BytesSent is the number of payload bytes written so far.
func (c *Conn) BytesSent() int64 { return c.sent.Load() }

// BytesReceived is the number of payload bytes read so far.
func (c *Conn) BytesReceived() int64 { return c.received.Load() }

var _ net.Conn = (*Conn)(nil)
