package hbone

import (
	"os"
	"syscall"
)

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
