package netcopy

import (
	"io"
	"os"
	"syscall"
)

// rawSupported: Pump and the raw read path work here.
const rawSupported = true

// rawReader reads a socket through the runtime's poller with a pooled
// buffer that is taken only when the socket has data: a read that would
// block gives the buffer back before waiting. Same results as
// (*net.TCPConn).Read without the buffer held while idle, and without an
// extra syscall.
func rawReader(rc syscall.RawConn) func() (*[]byte, int, error) {
	var r rawRead
	try := r.try
	return func() (*[]byte, int, error) {
		r.n, r.err = 0, nil
		if err := rc.Read(try); err != nil { // closed, or deadline
			if r.bp != nil {
				bufs.Put(r.bp)
				r.bp = nil
			}
			return nil, 0, err
		}
		got := r.bp
		r.bp = nil
		switch {
		case r.err != nil:
			return got, 0, readError(r.err)
		case r.n <= 0:
			return got, 0, io.EOF
		}
		return got, r.n, nil
	}
}

// readableWaiter returns a function that blocks until the socket behind rc
// has data, has reached EOF or has failed (a non-consuming MSG_PEEK), using
// the runtime's poller. It fails when the socket is closed or its read
// deadline passes, and with the socket's error (e.g. ECONNRESET), which the
// peek consumes, so a read after it would not see it.
func readableWaiter(rc syscall.RawConn) func() error {
	var b [1]byte
	var perr error
	peek := func(fd uintptr) bool {
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			case nil:
			default:
				perr = os.NewSyscallError("recvfrom", err)
			}
			return true
		}
	}
	return func() error {
		perr = nil
		if err := rc.Read(peek); err != nil {
			return err
		}
		return perr
	}
}
