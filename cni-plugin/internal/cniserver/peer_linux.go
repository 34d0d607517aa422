package cniserver

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"ambit.dev/cni-plugin/internal/netns"
)

// peerPID returns the pid of the process at the other end of a Unix
// socket connection (SO_PEERCRED).
func peerPID(c net.Conn) (int, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, fmt.Errorf("connection of type %T is not a Unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	if cred.Pid <= 0 {
		return 0, errors.New("SO_PEERCRED: no pid (is the caller in another pid namespace? the node agent needs hostPID)")
	}
	return int(cred.Pid), nil
}

func openInRootOf(pid int, path string) (*os.File, error) { return netns.OpenInRootOf(pid, path) }
