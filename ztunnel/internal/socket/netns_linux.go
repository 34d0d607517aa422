package socket

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsGetNstype is NS_GET_NSTYPE from linux/nsfs.h (_IO(0xb7, 0x3)); not in
// x/sys. It returns the CLONE_NEW* type of a namespace fd.
const nsGetNstype = 0xb703

// Netns is an open handle on a network namespace: a pod's, opened from its
// path or received from the node agent as a file descriptor. The handle
// keeps the namespace alive until Close.
type Netns struct {
	h    netns.NsHandle
	desc string
}

// OpenNetns opens the network namespace at path, e.g. /var/run/netns/<name>
// or /proc/<pid>/ns/net.
func OpenNetns(path string) (*Netns, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w (does the pod still exist?)", path, err)
	}
	n := &Netns{h: h, desc: path}
	if err := n.verify(); err != nil {
		h.Close()
		return nil, err
	}
	return n, nil
}

// NetnsFromFD wraps a network namespace file descriptor, such as the one
// the node agent sends over SCM_RIGHTS. The Netns takes ownership of fd:
// Close closes it. It fails (leaving fd open) if fd is not a network
// namespace.
func NetnsFromFD(fd int) (*Netns, error) {
	n := &Netns{h: netns.NsHandle(fd), desc: fmt.Sprintf("fd %d", fd)}
	if err := n.verify(); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Netns) verify() error {
	typ, err := unix.IoctlRetInt(int(n.h), nsGetNstype)
	if err != nil {
		return fmt.Errorf("netns %s: NS_GET_NSTYPE: %w (not a namespace file descriptor?)", n.desc, err)
	}
	if typ != unix.CLONE_NEWNET {
		return fmt.Errorf("netns %s: namespace type %#x is not a network namespace", n.desc, typ)
	}
	return nil
}

// Fd returns the namespace file descriptor; valid until Close.
func (n *Netns) Fd() int { return int(n.h) }

// String describes the namespace (its path or fd) for logs and errors.
func (n *Netns) String() string { return "netns " + n.desc }

// Close releases the handle. Sockets already created in the namespace keep
// working. Close must not run concurrently with Do.
func (n *Netns) Close() error {
	if !n.h.IsOpen() {
		return nil
	}
	return n.h.Close()
}

// Do runs fn on an OS thread switched into the namespace, then switches the
// thread back. Sockets fn creates belong to the namespace. fn must create
// sockets synchronously: goroutines it starts run on other threads, in the
// process's own namespace. If switching back fails the thread is retired
// (left locked; the runtime destroys it when the goroutine exits), so no
// other goroutine ever runs in the pod's namespace by accident.
func (n *Netns) Do(fn func() error) error {
	if n == nil || !n.h.IsOpen() {
		return errors.New("netns handle is nil or closed")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %v: %w (ztunnel needs CAP_SYS_ADMIN)", n, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("return from %v: %w", n, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}
