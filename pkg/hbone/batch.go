package hbone

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// windowUpdateDelay is how long flow-control credit may wait for the next
// write on its connection before it goes out on its own. Both ends
// advertise windows of several MiB (4 MiB per stream, 16 MiB per
// connection by default), which a sender cannot use up in a millisecond at
// any rate the data path reaches, so holding a WINDOW_UPDATE this long
// never stalls a stream.
const windowUpdateDelay = time.Millisecond

// maxHeldWindowUpdates caps the credit frames one connection holds (a
// WINDOW_UPDATE frame is 13 bytes): past it they are written at once.
const maxHeldWindowUpdates = 1 << 10

// maxMergedWrite is the largest write that held credit is merged into (one
// TLS record carries up to 16 KiB); a larger one is written after it.
const maxMergedWrite = 16 << 10

// batchConn is the TLS connection as x/net/http2 sees it, on both the
// client and the server side. x/net flushes its frame buffer after every
// frame it sends on its own — every DATA frame of a request body, every
// WINDOW_UPDATE the reader returns — and each flush is one TLS record and
// one write(2). Flushes made only of WINDOW_UPDATE frames carry no data a
// peer waits for: batchConn holds them until the next write on the
// connection, which they join in one record and one system call, or for
// windowUpdateDelay at most. Every other write goes out at once, in the
// caller, so a single small write of an interactive stream is never
// delayed, and the bytes keep their order.
type batchConn struct {
	tlsConn // reads, deadlines, ConnectionState

	mu    sync.Mutex
	held  []byte // WINDOW_UPDATE frames not yet written
	armed bool   // timer will flush held
	timer *time.Timer
	err   error // a failed write, returned by every later Write
}

// tlsConn is what x/net/http2 uses of a *tls.Conn.
type tlsConn interface {
	net.Conn
	ConnectionState() tls.ConnectionState
}

func newBatchConn(tc tlsConn) *batchConn {
	c := &batchConn{tlsConn: tc}
	c.timer = time.AfterFunc(time.Hour, c.flushHeld)
	c.timer.Stop()
	return c
}

// Write writes p, or holds it if it is only WINDOW_UPDATE frames.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if onlyWindowUpdates(p) && len(c.held)+len(p) <= maxHeldWindowUpdates {
		c.held = append(c.held, p...)
		if !c.armed {
			c.armed = true
			c.timer.Reset(windowUpdateDelay)
		}
		return len(p), nil
	}
	if len(c.held) == 0 {
		n, err := c.tlsConn.Write(p)
		c.err = err
		return n, err
	}
	if c.armed {
		c.armed = false
		c.timer.Stop()
	}
	if len(c.held)+len(p) <= maxMergedWrite {
		held := len(c.held)
		c.held = append(c.held, p...)
		n, err := c.tlsConn.Write(c.held)
		c.held = c.held[:0]
		c.err = err
		return max(n-held, 0), err
	}
	_, err := c.tlsConn.Write(c.held)
	c.held = c.held[:0]
	if err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.tlsConn.Write(p)
	c.err = err
	return n, err
}

// flushHeld writes the held credit when no other write took it along.
func (c *batchConn) flushHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	if c.err != nil || len(c.held) == 0 {
		return
	}
	_, c.err = c.tlsConn.Write(c.held)
	c.held = c.held[:0]
}

// Close closes the TLS connection, then stops the timer; held credit is
// dropped (the peer is going away). It closes before taking the lock: a
// Close is what unblocks a Write stuck on a peer that stopped reading.
// Like x/net does for a *tls.Conn (which it no longer sees), the socket
// is closed outright when the TLS close (its close_notify alert) hangs
// for 250 ms on an unresponsive peer.
func (c *batchConn) Close() error {
	if nc, ok := c.tlsConn.(interface{ NetConn() net.Conn }); ok {
		t := time.AfterFunc(250*time.Millisecond, func() { nc.NetConn().Close() })
		defer t.Stop()
	}
	err := c.tlsConn.Close()
	c.mu.Lock()
	c.timer.Stop()
	c.armed = false
	c.held = nil
	c.mu.Unlock()
	return err
}

// frameWindowUpdate is the HTTP/2 frame type of WINDOW_UPDATE (RFC 9113
// §6.9).
const frameWindowUpdate = 0x8

// onlyWindowUpdates reports whether p is one or more whole HTTP/2
// WINDOW_UPDATE frames and nothing else.
func onlyWindowUpdates(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	for len(p) > 0 {
		if len(p) < 9 || p[3] != frameWindowUpdate {
			return false
		}
		n := 9 + (int(p[0])<<16 | int(p[1])<<8 | int(p[2]))
		if n > len(p) {
			return false
		}
		p = p[n:]
	}
	return true
}
