package netns

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Candidate is one network namespace seen on the node and the addresses
// assigned in it.
type Candidate struct {
	// PID is a process in the namespace (its /proc/<pid>/ns/net opens it).
	PID   int
	Addrs []netip.Addr
}

// Match picks the one namespace among cands that holds any of ips. It is
// ErrNotFound when none does, and ErrAmbiguous when more than one does
// (a pod's IP is unique on a node; seeing it twice means the agent cannot
// tell which namespace is the pod's).
func Match(cands map[Key]Candidate, ips []netip.Addr) (Key, error) {
	if len(ips) == 0 {
		return Key{}, fmt.Errorf("%w: the pod has no IPs yet", ErrNotFound)
	}
	want := make(map[netip.Addr]bool, len(ips))
	for _, ip := range ips {
		want[ip.Unmap()] = true
	}
	var found []Key
	for _, k := range slices.SortedFunc(maps.Keys(cands), func(a, b Key) int {
		return cmp.Or(cmp.Compare(a.Dev, b.Dev), cmp.Compare(a.Ino, b.Ino))
	}) {
		for _, a := range cands[k].Addrs {
			if want[a.Unmap()] {
				found = append(found, k)
				break
			}
		}
	}
	switch len(found) {
	case 0:
		return Key{}, fmt.Errorf("%w (looked for %s in %d namespaces)", ErrNotFound, joinAddrs(ips), len(cands))
	case 1:
		return found[0], nil
	default:
		var parts []string
		for _, k := range found {
			parts = append(parts, fmt.Sprintf("netns %s (pid %d)", k, cands[k].PID))
		}
		return Key{}, fmt.Errorf("%w: %s found in %s", ErrAmbiguous, joinAddrs(ips), strings.Join(parts, " and "))
	}
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}
