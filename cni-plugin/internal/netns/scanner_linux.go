package netns

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
)

// Scanner finds a pod's network namespace by its IPs among the namespaces
// of the node's processes (/proc/<pid>/ns/net; the node agent runs with
// hostPID). It caches what it saw, by namespace key, and rescans only when
// the cache has no (or no longer a) match. A cached match is re-verified
// through its process (still in that namespace, which still holds the IP),
// so a namespace that lost its processes or its address is never returned;
// an IP held by two namespaces is detected by the scan. Safe for
// concurrent use.
type Scanner struct {
	log      *slog.Logger
	procRoot string

	mu    sync.Mutex
	cache map[Key]Candidate
	scans int
}

// NewScanner returns a Scanner of the processes under /proc.
func NewScanner(log *slog.Logger) *Scanner {
	return &Scanner{log: log, procRoot: "/proc", cache: map[Key]Candidate{}}
}

// Scans returns how many full scans of /proc ran (for metrics and tests).
func (s *Scanner) Scans() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scans
}

// Find opens the network namespace that holds ips. The namespace of the
// agent itself (the node's) is never returned. Errors wrap ErrNotFound or
// ErrAmbiguous when that is the reason.
func (s *Scanner) Find(ips []netip.Addr) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ips) == 0 {
		return nil, fmt.Errorf("%w: the pod has no IPs yet", ErrNotFound)
	}
	if k, err := Match(s.cache, ips); err == nil {
		if f, err := s.openVerified(k, ips); err == nil {
			return f, nil
		}
	}
	if err := s.rescan(); err != nil {
		return nil, err
	}
	k, err := Match(s.cache, ips)
	if err != nil {
		return nil, err
	}
	f, err := s.openVerified(k, ips)
	if err != nil {
		return nil, fmt.Errorf("%w: netns %s changed while it was opened: %v", ErrNotFound, k, err)
	}
	return f, nil
}

// openVerified opens the cached namespace k and checks it still is k and
// still holds one of ips.
func (s *Scanner) openVerified(k Key, ips []netip.Addr) (*os.File, error) {
	c := s.cache[k]
	f, err := Open(pidNetnsPath(s.procRoot, c.PID))
	if err != nil {
		delete(s.cache, k)
		return nil, err
	}
	got, err := KeyOf(f)
	if err == nil && got != k {
		err = fmt.Errorf("pid %d moved to netns %s", c.PID, got)
	}
	var addrs []netip.Addr
	if err == nil {
		addrs, err = Addrs(f)
	}
	if err == nil && !slices.ContainsFunc(ips, func(ip netip.Addr) bool { return slices.Contains(addrs, ip.Unmap()) }) {
		err = fmt.Errorf("netns %s no longer holds %s", k, joinAddrs(ips))
	}
	if err != nil {
		f.Close()
		delete(s.cache, k)
		return nil, err
	}
	return f, nil
}

// rescan rebuilds the cache from every process's namespace.
func (s *Scanner) rescan() error {
	self, err := os.Stat(pidNetnsPath(s.procRoot, os.Getpid()))
	if err != nil {
		return fmt.Errorf("stat the agent's own netns: %w (is %s mounted?)", err, s.procRoot)
	}
	selfKey := keyOfInfo(self)
	entries, err := os.ReadDir(s.procRoot)
	if err != nil {
		return fmt.Errorf("list processes in %s: %w (does the node agent run with hostPID?)", s.procRoot, err)
	}
	next := map[Key]Candidate{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		path := pidNetnsPath(s.procRoot, pid)
		fi, err := os.Stat(path)
		if err != nil {
			continue // the process exited, or is a kernel thread without one
		}
		k := keyOfInfo(fi)
		if k == selfKey {
			continue
		}
		if _, seen := next[k]; seen {
			continue
		}
		c, err := s.inspect(path, pid, k)
		if err != nil {
			s.log.Debug("skipping netns", "pid", pid, "netns", k.String(), "error", err)
			continue
		}
		next[k] = c
	}
	s.cache = next
	s.scans++
	s.log.Debug("scanned network namespaces", "count", len(next))
	return nil
}

func (s *Scanner) inspect(path string, pid int, k Key) (Candidate, error) {
	f, err := Open(path)
	if err != nil {
		return Candidate{}, err
	}
	defer f.Close()
	got, err := KeyOf(f)
	if err != nil {
		return Candidate{}, err
	}
	if got != k {
		return Candidate{}, errors.New("the process changed netns during the scan")
	}
	addrs, err := Addrs(f)
	if err != nil {
		return Candidate{}, err
	}
	return Candidate{PID: pid, Addrs: addrs}, nil
}

// Gateways returns the default gateways inside f's namespace (see
// DefaultGateways).
func (s *Scanner) Gateways(f *os.File) ([]netip.Addr, error) { return DefaultGateways(f) }
