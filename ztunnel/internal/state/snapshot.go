// Package state holds ztunnel's workload state: an immutable Snapshot of
// workloads and services with the lookups the data path needs, a Store that
// swaps snapshots atomically and notifies subscribers, and a FileWatcher
// that loads the workloads file and reloads it when it changes (keeping the
// last good snapshot when the new file is bad).
package state

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"ambit.dev/ztunnel/internal/model"
)

// Snapshot is one consistent view of the mesh. It is immutable: the
// workloads and services it returns share its maps and slices, which
// callers must not modify.
type Snapshot struct {
	workloads []model.Workload // sorted by UID
	services  []model.Service  // sorted by key
	byUID     map[string]int
	byIP      map[netip.Addr]int
	byKey     map[string]int
	byVIP     map[netip.Addr]int
	endpoints map[string][]int // service key -> workload indices, by UID
	policies  []model.Policy   // sorted by key
	byPolicy  map[string]int   // policy key -> index
	global    []int            // GLOBAL policies, by key
	byNS      map[string][]int // namespace -> NAMESPACE policies, by key
}

// NewSnapshot indexes workloads and services, checking that UIDs, workload
// addresses, service keys and VIPs are unique, that no VIP is also a
// workload address, and that every service a workload backs exists.
func NewSnapshot(workloads []model.Workload, services []model.Service) (*Snapshot, error) {
	return NewSnapshotWithPolicies(workloads, services, nil)
}

// NewSnapshotWithPolicies is NewSnapshot with the Authorization policies
// too (keys must be unique). A workload may list a policy key that is not
// among policies: the proto says such a name is ignored until it arrives.
func NewSnapshotWithPolicies(workloads []model.Workload, services []model.Service, policies []model.Policy) (*Snapshot, error) {
	s := &Snapshot{
		policies:  slices.Clone(policies),
		byPolicy:  map[string]int{},
		byNS:      map[string][]int{},
		workloads: slices.Clone(workloads),
		services:  slices.Clone(services),
		byUID:     map[string]int{},
		byIP:      map[netip.Addr]int{},
		byKey:     map[string]int{},
		byVIP:     map[netip.Addr]int{},
		endpoints: map[string][]int{},
	}
	slices.SortFunc(s.workloads, func(a, b model.Workload) int { return cmp.Compare(a.UID, b.UID) })
	slices.SortFunc(s.services, func(a, b model.Service) int { return cmp.Compare(a.Key(), b.Key()) })
	var errs []error
	for i, svc := range s.services {
		if _, dup := s.byKey[svc.Key()]; dup {
			errs = append(errs, fmt.Errorf("service %s is defined twice", svc.Key()))
			continue
		}
		s.byKey[svc.Key()] = i
		for _, vip := range svc.VIPs {
			if j, dup := s.byVIP[vip]; dup {
				errs = append(errs, fmt.Errorf("VIP %s belongs to both service %s and %s", vip, s.services[j].Key(), svc.Key()))
				continue
			}
			s.byVIP[vip] = i
		}
	}
	for i, w := range s.workloads {
		if _, dup := s.byUID[w.UID]; dup {
			errs = append(errs, fmt.Errorf("workload uid %q is used twice", w.UID))
			continue
		}
		s.byUID[w.UID] = i
		for _, ip := range w.Addresses {
			if j, dup := s.byIP[ip]; dup {
				errs = append(errs, fmt.Errorf("address %s belongs to both workload %s and %s", ip, s.workloads[j].UID, w.UID))
				continue
			}
			if j, vip := s.byVIP[ip]; vip {
				errs = append(errs, fmt.Errorf("address %s of workload %s is also a VIP of service %s", ip, w.UID, s.services[j].Key()))
				continue
			}
			s.byIP[ip] = i
		}
		for key := range w.Services {
			if _, ok := s.byKey[key]; !ok {
				errs = append(errs, fmt.Errorf("workload %s backs service %q, which is not defined under services", w.UID, key))
				continue
			}
			s.endpoints[key] = append(s.endpoints[key], i)
		}
	}
	slices.SortFunc(s.policies, func(a, b model.Policy) int { return cmp.Compare(a.Key(), b.Key()) })
	for i, p := range s.policies {
		if _, dup := s.byPolicy[p.Key()]; dup {
			errs = append(errs, fmt.Errorf("policy %s is defined twice", p.Key()))
			continue
		}
		s.byPolicy[p.Key()] = i
		switch p.Scope {
		case model.ScopeGlobal:
			s.global = append(s.global, i)
		case model.ScopeNamespace:
			s.byNS[p.Namespace] = append(s.byNS[p.Namespace], i)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// Policies returns every Authorization policy, sorted by key.
func (s *Snapshot) Policies() []model.Policy { return s.policies }

// PoliciesFor returns the policies that apply to the destination workload
// w (authorization.proto): GLOBAL ones, NAMESPACE ones of w's namespace and
// the WORKLOAD_SELECTOR ones w lists, sorted by key. Access and
// peer-authentication policies are both returned.
func (s *Snapshot) PoliciesFor(w model.Workload) []model.Policy {
	idx := slices.Concat(s.global, s.byNS[w.Namespace])
	for _, key := range w.AuthorizationPolicies {
		if i, ok := s.byPolicy[key]; ok && s.policies[i].Scope == model.ScopeWorkloadSelector && !slices.Contains(idx, i) {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx) // indices follow key order
	out := make([]model.Policy, len(idx))
	for i, j := range idx {
		out[i] = s.policies[j]
	}
	return out
}

// Empty returns a snapshot with nothing in it.
func Empty() *Snapshot {
	s, _ := NewSnapshot(nil, nil)
	return s
}

// Workloads returns every workload, sorted by UID.
func (s *Snapshot) Workloads() []model.Workload { return s.workloads }

// Services returns every service, sorted by key.
func (s *Snapshot) Services() []model.Service { return s.services }

// WorkloadByUID finds a workload by UID.
func (s *Snapshot) WorkloadByUID(uid string) (model.Workload, bool) {
	i, ok := s.byUID[uid]
	if !ok {
		return model.Workload{}, false
	}
	return s.workloads[i], true
}

// WorkloadByIP finds the workload that owns ip (IPv4-mapped addresses are
// unmapped first).
func (s *Snapshot) WorkloadByIP(ip netip.Addr) (model.Workload, bool) {
	i, ok := s.byIP[ip.Unmap()]
	if !ok {
		return model.Workload{}, false
	}
	return s.workloads[i], true
}

// ServiceByVIP finds the service that owns the virtual IP ip.
func (s *Snapshot) ServiceByVIP(ip netip.Addr) (model.Service, bool) {
	i, ok := s.byVIP[ip.Unmap()]
	if !ok {
		return model.Service{}, false
	}
	return s.services[i], true
}

// ServiceByAddr finds the service addressed by VIP:port and returns the
// service's target port for that port. ok is false when the IP is not a
// VIP; portOK is false when it is but the service has no such port.
func (s *Snapshot) ServiceByAddr(ap netip.AddrPort) (svc model.Service, target uint16, ok, portOK bool) {
	svc, ok = s.ServiceByVIP(ap.Addr())
	if !ok {
		return model.Service{}, 0, false, false
	}
	target, portOK = svc.Ports[ap.Port()]
	return svc, target, true, portOK
}

// ServiceByKey finds a service by namespace/hostname.
func (s *Snapshot) ServiceByKey(key string) (model.Service, bool) {
	i, ok := s.byKey[key]
	if !ok {
		return model.Service{}, false
	}
	return s.services[i], true
}

// Endpoints returns the workloads backing the service key, sorted by UID,
// healthy or not.
func (s *Snapshot) Endpoints(key string) []model.Workload {
	idx := s.endpoints[key]
	out := make([]model.Workload, len(idx))
	for i, j := range idx {
		out[i] = s.workloads[j]
	}
	return out
}

// LocalWorkloads returns the workloads ztunnel on node must capture: mesh
// (HBONE) workloads on node with a netns path, sorted by UID.
func (s *Snapshot) LocalWorkloads(node string) []model.Workload {
	var out []model.Workload
	for _, w := range s.workloads {
		if w.Node == node && w.Netns != "" && w.InMesh() {
			out = append(out, w)
		}
	}
	return out
}
