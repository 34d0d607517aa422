package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted (ip netns,
// vishvananda/netns; containerd's /var/run/netns is the same directory).
const netnsDir = "/run/netns"

// nsPrefix starts the name of every netns the bench creates:
// <nsPrefix><pid>-<what>, so that a leftover of a killed run is recognised
// by its dead pid (removeStale).
const nsPrefix = "ambitbench"

// nsName is the name of this process's netns called what.
func nsName(what string) string { return fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), what) }

// nsPath is the bind-mount path of a named netns.
func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// createNetns creates the named netns, as a container runtime does for a
// sandbox, with lo up. The thread that creates it is moved into it and is
// never unlocked, so it exits with its goroutine and nothing else ever runs
// there; the bench's own netns is never changed.
func createNetns(name string) (err error) {
	path := nsPath(name)
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("netns %s already exists (a leftover? delete it with: ip netns del %s)", name, name)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		// NewNamed may have left the (unmounted) file it created.
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return fmt.Errorf("create netns %s: %w (needs root: CAP_SYS_ADMIN)", name, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, deleteNetns(name))
		}
	}()
	h, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in netns %s: %w", name, err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("set lo up in netns %s: %w", name, err)
	}
	return nil
}

// deleteNetns unmounts and removes a named netns; the kernel frees it (and
// every interface in it) once nothing holds it any more.
func deleteNetns(name string) error {
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w (remove it with: ip netns del %s)", name, err, name)
	}
	return nil
}

// removeStale deletes the netns of earlier runs whose process is gone
// (killed before its cleanup ran).
func removeStale() error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var errs []error
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // that run is still going
		}
		errs = append(errs, deleteNetns(e.Name()))
	}
	return errors.Join(errs...)
}

// ownNetns lists the netns of this process still mounted.
func ownNetns() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("%s%d-", nsPrefix, os.Getpid())) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// goInNetns runs f on a goroutine whose thread joined the netns at path
// and stays locked there until the goroutine ends (the runtime then
// discards the thread). Processes f starts and sockets it creates belong to
// that netns. It returns once the thread is in the netns (or failed to
// enter it).
func goInNetns(path string, f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		h, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		err = netns.Set(h)
		h.Close()
		if err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		errc <- nil
		f()
	}()
	return <-errc
}

// nsThread runs functions, one at a time, on one thread in a netns: the
// container runtime's view of the node, from which it execs CNI plugins.
type nsThread struct {
	work chan func()
	done chan struct{}
}

// startNSThread starts the thread in the netns at path.
func startNSThread(path string) (*nsThread, error) {
	t := &nsThread{work: make(chan func()), done: make(chan struct{})}
	err := goInNetns(path, func() {
		defer close(t.done)
		for f := range t.work {
			f()
		}
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// do runs f on the thread and returns its error.
func (t *nsThread) do(f func() error) error {
	errc := make(chan error, 1)
	t.work <- func() { errc <- f() }
	return <-errc
}

// stop ends the thread.
func (t *nsThread) stop() {
	close(t.work)
	<-t.done
}
