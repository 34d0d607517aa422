package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
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
// request stream, Read reads the response stream. CloseWrite ends the
// request stream (the upstream sees EOF); Read returns io.EOF when the
// upstream has closed its side. Close after both directions finished ends
// the stream cleanly; Close before that resets it (like a TCP RST).
//
// Write frames and sends the data itself, on the caller's goroutine; Read
// takes what the connection's reader has buffered. A Read with an empty
// buffer returns at once; WaitRead waits until data or the end of the
// stream is there without consuming anything. Deadlines bound the waits
// for data (Read, WaitRead) and for flow-control window (Write); setting
// one wakes a waiting call to check it.
type Conn struct {
	s      *stream
	local  net.Addr
	remote net.Addr

	sent, received atomic.Int64
	closeOnce      sync.Once
	release        func()
	// server: a stream the Server handed to ServerConfig.Handle, whose
	// Close ends the response like a TCP close (see Close).
	server bool
}

func newConn(s *stream, local, remote net.Addr, release func()) *Conn {
	return &Conn{s: s, local: local, remote: remote, release: release}
}

// Read reads from the response stream.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.s.read(p)
	c.received.Add(int64(n))
	return n, readError(err)
}

// WaitRead blocks until a Read would not block (data is buffered, or the
// stream ended or failed), without consuming anything; it fails only when
// the read deadline passes or the Conn is closed. A proxy calls it before
// taking a copy buffer, so an idle stream holds none.
func (c *Conn) WaitRead() error {
	_, err := c.s.read(nil)
	if errors.Is(err, errStreamClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return nil
}

// readError maps a stream error to what a net.Conn reports.
func readError(err error) error {
	switch {
	case err == nil || err == io.EOF || errors.Is(err, errStreamClosed) || errors.Is(err, os.ErrDeadlineExceeded):
		return err
	}
	return fmt.Errorf("hbone: stream broken: %w", err)
}

// Write writes to the request stream.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.s.write(p, false)
	c.sent.Add(int64(n))
	return n, readError(err)
}

// CloseWrite half-closes the stream: the request stream ends and the
// upstream reads EOF. Reading continues to work.
func (c *Conn) CloseWrite() error {
	_, err := c.s.write(nil, true)
	return readError(err)
}

// Close releases the stream (see the Conn comment). On a stream the
// Server handed to ServerConfig.Handle, Close is a TCP close rather than a
// reset: it ends the response stream (END_STREAM) and, if the client is
// still sending, tells it to stop without discarding the response
// (RST_STREAM NO_ERROR, RFC 9113 §8.1).
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		code := http2.ErrCodeCancel
		if c.server {
			_, _ = c.s.write(nil, true)
			code = http2.ErrCodeNo
		}
		c.s.closeStream(code)
		c.release()
	})
	return nil
}

// DeliverTo hands the stream's received data to dst: from now on the HBONE
// connection's reader writes it there itself, so no goroutine of the
// caller waits on the stream (Read then fails). count, if not nil, gets the
// size of every chunk written. done is called once: nil after the end of
// the stream was passed on as dst.CloseWrite, or the error that ended the
// delivery (dst failed, or the stream was reset or closed). It reports
// false, and changes nothing, when dst has no raw connection.
func (c *Conn) DeliverTo(dst *net.TCPConn, count func(int64), done func(error)) bool {
	return c.s.deliverTo(dst, func(n int64) {
		c.received.Add(n)
		if count != nil {
			count(n)
		}
	}, func(err error) { done(readError(err)) })
}

// LocalAddr is the local address of the underlying HBONE connection.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the final destination (the :authority).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline, for waiting Reads and WaitReads
// too.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.s.readDeadline.Store(&t)
	signal(c.s.readable) // a waiting Read re-checks its deadline
	return nil
}

// SetWriteDeadline sets the write deadline: how long a Write, including a
// waiting one, may wait for flow-control window.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.s.writeDeadline.Store(&t)
	signal(c.s.writable)
	return nil
}

// BytesSent is the number of payload bytes written so far.
func (c *Conn) BytesSent() int64 { return c.sent.Load() }

// BytesReceived is the number of payload bytes read so far.
func (c *Conn) BytesReceived() int64 { return c.received.Load() }

var _ net.Conn = (*Conn)(nil)
