package netcopy

import (
	"io"
	"net"
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
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	try := func(fd uintptr) bool {
		if bp == nil {
			bp = bufs.Get().(*[]byte)
		}
		for {
			var err error
			n, err = syscall.Read(int(fd), *bp)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				bufs.Put(bp)
				bp = nil
				return false
			}
			rerr = err
			return true
		}
	}
	return func() (*[]byte, int, error) {
		n, rerr = 0, nil
		if err := rc.Read(try); err != nil { // closed, or deadline
			if bp != nil {
				bufs.Put(bp)
				bp = nil
			}
			return nil, 0, err
		}
		got := bp
		bp = nil
		switch {
		case rerr != nil:
			return got, 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", rerr)}
		case n <= 0:
			return got, 0, io.EOF
		}
		return got, n, nil
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
