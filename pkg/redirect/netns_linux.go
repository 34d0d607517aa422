package redirect

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on an OS thread switched into the network namespace at
// path. Commands fn executes (iptables) inherit that namespace. The thread
// is switched back afterwards; if that fails the thread is left locked and
// the runtime discards it when the goroutine exits, so no other goroutine
// ever runs in the pod's namespace by accident.
func inNetns(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w (is the pod still running?)", path, err)
	}
	defer target.Close()

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
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w (needs CAP_SYS_ADMIN)", path, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			// Keep the thread locked: it dies with this goroutine.
			errc <- errors.Join(fnErr, fmt.Errorf("restore netns after working in %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}
