package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// execCounter records when this process and its descendants (CNI plugins,
// the IPAM plugin they run, iptables) exec a program, from the kernel's
// process events connector, so that each ADD can be told how many programs
// it ran. Events are stamped with CLOCK_MONOTONIC (monotonicNow).
type execCounter struct {
	done    chan struct{}
	stopped chan struct{}

	mu     sync.Mutex
	execs  []uint64
	latest uint64
	err    error
}

// startExecCounter subscribes to process events (needs root and a kernel
// with CONFIG_PROC_EVENTS).
func startExecCounter() (*execCounter, error) {
	c := &execCounter{done: make(chan struct{}), stopped: make(chan struct{})}
	ch := make(chan netlink.ProcEvent, 4096)
	errc := make(chan error, 1)
	if err := netlink.ProcEventMonitor(ch, c.done, errc); err != nil {
		return nil, fmt.Errorf("process events connector: %w", err)
	}
	go c.collect(ch, errc)
	return c, nil
}

func (c *execCounter) collect(ch <-chan netlink.ProcEvent, errc <-chan error) {
	defer close(c.stopped)
	self := uint32(os.Getpid())
	ours := map[uint32]bool{self: true}
	for ev := range ch {
		switch m := ev.Msg.(type) {
		case *netlink.ForkProcEvent:
			if m.ChildPid == m.ChildTgid && ours[m.ParentTgid] {
				ours[m.ChildTgid] = true
			}
		case *netlink.ExecProcEvent:
			if ours[m.ProcessTgid] {
				c.mu.Lock()
				c.execs = append(c.execs, ev.Timestamp)
				c.latest = max(c.latest, ev.Timestamp)
				c.mu.Unlock()
			}
		case *netlink.ExitProcEvent:
			if m.ProcessPid == m.ProcessTgid && m.ProcessTgid != self {
				delete(ours, m.ProcessTgid)
			}
		}
	}
	// ch is closed: the monitor stopped, on stop or on an error (a full
	// socket buffer loses events).
	select {
	case err := <-errc:
		select {
		case <-c.done:
		default:
			c.mu.Lock()
			c.err = fmt.Errorf("process events connector stopped: %w", err)
			c.mu.Unlock()
		}
	default:
	}
}

// stop ends the subscription; it returns why counting stopped early, if it
// did (the counts are then incomplete).
func (c *execCounter) stop() error {
	close(c.done)
	<-c.stopped
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// sync execs a marker program and waits (up to timeout) until its event
// arrived, so that every earlier exec has been recorded.
func (c *execCounter) sync(timeout time.Duration) error {
	after := monotonicNow()
	if out, err := exec.Command("true").CombinedOutput(); err != nil {
		return fmt.Errorf("run true (exec-count marker): %w\n%s", err, out)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		seen := c.latest > after
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if seen {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("the process events connector did not report an exec within %s", timeout)
}

// counts returns how many execs fell in each [from, to] window.
func (c *execCounter) counts(windows [][2]uint64) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return countInWindows(c.execs, windows)
}

// monotonicNow is CLOCK_MONOTONIC in nanoseconds, the clock of the
// process events' timestamps.
func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(errors.Join(errors.New("clock_gettime(CLOCK_MONOTONIC)"), err))
	}
	return uint64(ts.Nano())
}
