package proxy

import (
	"net"
	"sync"
	"time"
)

// pipeConn is one end of an in-memory, full-duplex connection made of two
// net.Pipes, one per direction, so that each direction can be closed on
// its own (CloseWrite: the peer reads EOF and can still answer) and both
// deadlines work (net/http relies on read deadlines to stop its
// background reads).
type pipeConn struct {
	r, w          net.Conn // read from r, write to w
	local, remote net.Addr
	onClose       func()
	once          sync.Once
	// stream is set on the end served by the HTTP server.
	stream *httpStream
}

// newPipe returns the two ends: outer is what the HBONE server splices to
// the source, inner is what the HTTP server serves. onClose (may be nil)
// runs once when inner is closed.
func newPipe(local, remote net.Addr, onClose func()) (outer, inner *pipeConn) {
	toInnerR, toInnerW := net.Pipe()
	toOuterR, toOuterW := net.Pipe()
	outer = &pipeConn{r: toOuterR, w: toInnerW, local: remote, remote: local}
	inner = &pipeConn{r: toInnerR, w: toOuterW, local: local, remote: remote, onClose: onClose}
	return outer, inner
}

func (c *pipeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error) { return c.w.Write(b) }

// CloseWrite ends the direction this end writes: the other end reads EOF.
func (c *pipeConn) CloseWrite() error { return c.w.Close() }

// Close closes both directions.
func (c *pipeConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		c.r.Close()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

func (c *pipeConn) LocalAddr() net.Addr  { return c.local }
func (c *pipeConn) RemoteAddr() net.Addr { return c.remote }

func (c *pipeConn) SetDeadline(t time.Time) error {
	c.r.SetReadDeadline(t)
	return c.w.SetWriteDeadline(t)
}
func (c *pipeConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// streamListener is the net.Listener the HTTP server accepts streams on.
type streamListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newStreamListener() *streamListener {
	return &streamListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return streamAddr{} }

type streamAddr struct{}

func (streamAddr) Network() string { return "hbone" }
func (streamAddr) String() string  { return "hbone-streams" }
