package hbone

import (
	"io"
	"sync"
	"syscall"
)

// copyBufSize is the size of the pooled copy buffers the server splices
// streams with.
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// readWaiter is a source that can wait until it is readable without
// taking a buffer (*Conn does).
type readWaiter interface{ WaitRead() error }

// waitFor returns a function that blocks until src is readable, or nil if
// src offers no way to wait (then the copy holds a buffer while blocked).
func waitFor(src any) func() error {
	if w, ok := src.(readWaiter); ok {
		return w.WaitRead
	}
	if sc, ok := src.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return readableWaiter(rc)
		}
	}
	return nil
}

// copyPooled copies src to dst until src ends. It waits (wait, if not nil)
// until src is readable before it takes a buffer from the pool, and gives
// the buffer back after writing what it read, so an idle copy holds no
// buffer. It returns the read error (nil at EOF) or the write error.
func copyPooled(dst io.Writer, src io.Reader, wait func() error) (rerr, werr error) {
	full := false
	for {
		if wait != nil && !full {
			if err := wait(); err != nil {
				return err, nil
			}
		}
		bp := copyBufs.Get().(*[]byte)
		n, err := src.Read(*bp)
		full = n == len(*bp) // more is likely waiting: read again at once
		if n > 0 {
			if _, werr := dst.Write((*bp)[:n]); werr != nil {
				copyBufs.Put(bp)
				return nil, werr
			}
		}
		copyBufs.Put(bp)
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}
