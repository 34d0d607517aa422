package hbone

import (
	"net"
	"sync"
)

// recordConn is the socket under an HBONE TLS connection. crypto/tls writes
// every TLS record (16 KiB at most) with its own write(2); while gathering,
// recordConn collects the records of one HTTP/2 write and sends them with
// one system call (about a fifth less CPU per byte in
// BenchmarkHBONEThroughput). Writes outside gathering (the handshake,
// alerts) go out at once, in order with the gathered ones.
type recordConn struct {
	net.Conn

	mu        sync.Mutex // held across socket writes: keeps their order
	gathering bool
	buf       *[]byte // from gatherPool, only while gathering
}

// gatherPool holds the gather buffers: a connection has one only during a
// write, so idle connections hold none.
var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, 128<<10); return &b }}

// maxPooledGather is the largest gather buffer that goes back to the pool.
const maxPooledGather = 1 << 20

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gathering {
		if c.buf == nil {
			c.buf = gatherPool.Get().(*[]byte)
		}
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// gather starts collecting writes.
func (c *recordConn) gather() {
	c.mu.Lock()
	c.gathering = true
	c.mu.Unlock()
}

// flush stops collecting and writes what was collected.
func (c *recordConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gathering = false
	if c.buf == nil {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	if cap(*c.buf) <= maxPooledGather {
		*c.buf = (*c.buf)[:0]
		gatherPool.Put(c.buf)
	}
	c.buf = nil
	return err
}
