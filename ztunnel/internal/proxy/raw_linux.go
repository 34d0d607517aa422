package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
)

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
