package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// StatusError is returned by Dialer.Dial when the server answers the
// CONNECT with a status other than 200.
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
// Deadlines are supported: Read and Write go through in-memory pipes
// (net.Pipe), whose deadlines they inherit.
type Conn struct {
	rd     net.Conn // our end of the response pipe
	wr     net.Conn // our end of the request-body pipe
	body   io.ReadCloser
	cancel context.CancelFunc
	local  net.Addr
	remote net.Addr

	sent, received atomic.Int64
	readErr        atomic.Pointer[error] // set when the response body failed
	closeOnce      sync.Once
	release        func()
}

// newConn wires the pipes: reqBody is the transport's end of the request
// pipe (wr is ours); the pump copies resp body into the response pipe.
func newConn(wr net.Conn, body io.ReadCloser, cancel context.CancelFunc, local, remote net.Addr, release func()) *Conn {
	rd, pumpEnd := net.Pipe()
	c := &Conn{rd: rd, wr: wr, body: body, cancel: cancel, local: local, remote: remote, release: release}
	go func() {
		_, err := io.Copy(pumpEnd, body)
		if err != nil && !errors.Is(err, io.ErrClosedPipe) {
			err = fmt.Errorf("hbone: stream broken: %w", err)
			c.readErr.Store(&err)
		}
		pumpEnd.Close()
	}()
	return c
}

// Read reads from the response body.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.rd.Read(p)
	c.received.Add(int64(n))
	if err == io.EOF {
		if e := c.readErr.Load(); e != nil {
			return n, *e
		}
	}
	return n, err
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
		c.wr.Close()
		c.rd.Close()
		c.body.Close() // resets the stream unless the response ended
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
	if err := c.rd.SetReadDeadline(t); err != nil {
		return err
	}
	return c.wr.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.rd.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.wr.SetWriteDeadline(t) }

// BytesSent is the number of payload bytes written so far.
func (c *Conn) BytesSent() int64 { return c.sent.Load() }

// BytesReceived is the number of payload bytes read so far.
func (c *Conn) BytesReceived() int64 { return c.received.Load() }

var _ net.Conn = (*Conn)(nil)
