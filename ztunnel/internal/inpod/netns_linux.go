package inpod

import (
	"fmt"

	"golang.org/x/sys/unix"

	"ambit.dev/ztunnel/internal/socket"
)

// nsKey identifies a network namespace: the device and inode of its nsfs
// file, the same whichever path or descriptor it was opened through.
type nsKey struct {
	dev, ino uint64
}

// netnsKey returns the identity of the namespace ns refers to.
func netnsKey(ns *socket.Netns) (nsKey, error) {
	var st unix.Stat_t
	if err := unix.Fstat(ns.Fd(), &st); err != nil {
		return nsKey{}, fmt.Errorf("fstat %v: %w (is the handle open?)", ns, err)
	}
	return nsKey{dev: uint64(st.Dev), ino: st.Ino}, nil
}
