package zds

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"ambit.dev/ztunnel/internal/socket"
)

// netnsFromFile returns a Netns holding its own duplicate of f's
// descriptor (an *os.File closes its descriptor when collected, so the
// Netns cannot share it). The caller still owns, and closes, f.
func netnsFromFile(f *os.File) (*socket.Netns, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate the received descriptor: %w", err)
	}
	ns, err := socket.NetnsFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return ns, nil
}
