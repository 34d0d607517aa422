package proxy

import (
	"net"
	"sync"

	"ambit.dev/pkg/hbone"
)

// streamConn is an HBONE stream the HTTP server serves: the server reads
// and writes the stream itself (hbone.ServerConfig.Handle), with no copy
// in between. closed is closed, and the stream's upstream transports shut,
// on the first Close.
type streamConn struct {
	*hbone.Conn
	stream *httpStream
	once   sync.Once
	closed chan struct{}
}

func (c *streamConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.stream.close()
		close(c.closed)
	})
	return err
}

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
