// Package netcopy copies one direction of a proxied connection with buffers
// from a shared pool that are held only while data is in flight: a copy
// waits until its source is readable before it borrows a buffer, and gives
// the buffer back after writing what it read, so idle connections hold none.
// ztunnel's splice and the HBONE server both copy with it.
package netcopy

import (
	"io"
	"net"
	"sync"
	"syscall"
)

// BufSize is the size of the pooled copy buffers.
const BufSize = 64 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, BufSize); return &b }}

// ReadWaiter is a source that can wait until a Read would not block without
// consuming anything (*hbone.Conn is one).
type ReadWaiter interface{ WaitRead() error }

// Waiter returns how to wait until src is readable: its WaitRead, a
// non-consuming poll of its socket (syscall.Conn, Linux), or nil when src
// offers neither (then a copy holds its buffer while blocked).
func Waiter(src any) func() error {
	if w, ok := src.(ReadWaiter); ok {
		return w.WaitRead
	}
	if sc, ok := src.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return readableWaiter(rc)
		}
	}
	return nil
}

// TCPSource is a conn (such as a wrapper counting bytes) whose reads come
// from a TCP connection: Copy reads that connection through the poller
// directly, as it does a *net.TCPConn, and reports each read's size to
// count (which may be nil).
type TCPSource interface {
	ReadSource() (tc *net.TCPConn, count func(n int64))
}

func readSource(src io.Reader) (*net.TCPConn, func(int64)) {
	switch c := src.(type) {
	case *net.TCPConn:
		return c, nil
	case TCPSource:
		return c.ReadSource()
	}
	return nil, nil
}

// Copy copies src to dst until src ends. It waits with wait (if not nil)
// before borrowing a buffer; a *net.TCPConn source is read through the
// runtime poller directly, which needs no separate wait. count (if not nil)
// receives the size of every chunk written, as it is written. It returns
// the read error (nil at EOF) or the write error.
func Copy(dst io.Writer, src io.Reader, wait func() error, count func(int64)) (rerr, werr error) {
	read := reader(src, wait)
	for {
		bp, n, err := read()
		if n > 0 {
			w, err := dst.Write((*bp)[:n])
			if w > 0 && count != nil {
				count(int64(w))
			}
			if err != nil {
				bufs.Put(bp)
				return nil, err
			}
		}
		if bp != nil {
			bufs.Put(bp)
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// reader returns a function reading src into a pooled buffer taken once src
// has data: the buffer (the caller puts a non-nil one back), the bytes read
// and the read error (io.EOF at the end).
func reader(src io.Reader, wait func() error) func() (*[]byte, int, error) {
	tc, count := readSource(src)
	if tc != nil {
		if rc, err := tc.SyscallConn(); err == nil {
			if r := rawReader(rc); r != nil {
				if count == nil {
					return r
				}
				return func() (*[]byte, int, error) {
					bp, n, err := r()
					if n > 0 {
						count(int64(n))
					}
					return bp, n, err
				}
			}
		}
	}
	full := false
	return func() (*[]byte, int, error) {
		if wait != nil && !full {
			if err := wait(); err != nil {
				return nil, 0, err
			}
		}
		bp := bufs.Get().(*[]byte)
		n, err := src.Read(*bp)
		full = n == len(*bp) // more is likely waiting: read again at once
		return bp, n, err
	}
}
