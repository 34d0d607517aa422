// Package outbound handles connections a mesh pod opens: the pure Plan
// decides, from the workload state alone, whether a connection goes
// through unchanged (passthrough), over HBONE to the destination's ztunnel,
// over HBONE to a waypoint, or is refused; Handler carries the decision out
// on connections accepted on the pod's outbound listener (15001).
package outbound

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

// Kind is what Plan decided.
type Kind int

// Route kinds.
const (
	// Passthrough connects to Route.Dst as plain TCP.
	Passthrough Kind = iota + 1
	// HBONE tunnels to the destination workload's ztunnel.
	HBONE
	// Waypoint tunnels to the waypoint in front of the destination.
	Waypoint
	// Deny refuses the connection; Route.Reason says why.
	Deny
)

// String returns the kind's name as used in logs and metrics.
func (k Kind) String() string {
	switch k {
	case Passthrough:
		return "passthrough"
	case HBONE:
		return "hbone"
	case Waypoint:
		return "waypoint"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Route is the decision for one outbound connection.
type Route struct {
	Kind Kind
	// Dst is where a Passthrough connects: the original destination, or
	// the chosen endpoint ip:targetPort of a service without mesh.
	Dst netip.AddrPort
	// HBONEAddr is the HBONE server (ip:15008) for HBONE and Waypoint.
	HBONEAddr netip.AddrPort
	// Authority is the :authority of the CONNECT: the final destination.
	Authority netip.AddrPort
	// DestID is the identity the HBONE server must present.
	DestID identity.ID
	// DestWorkload is the destination workload when known (the chosen
	// endpoint for a service); for Waypoint it is the waypoint.
	DestWorkload *model.Workload
	// Service is the service addressed by VIP, if any.
	Service *model.Service
	// ForwardedHost is the service host name for the Forwarded header when
	// the connection was addressed to a service.
	ForwardedHost string
	// Reason explains the decision (always set for Deny and Passthrough).
	Reason string
}

// ErrDenied is wrapped by the error Plan returns for a Deny route.
var ErrDenied = errors.New("outbound connection denied")

// Picker chooses one of n (> 0) candidate endpoints and returns its index.
type Picker func(n int) int

// Random picks uniformly at random.
func Random() Picker { return rand.IntN }

// RoundRobin cycles through the candidates.
func RoundRobin() Picker {
	var next atomic.Uint64
	return func(n int) int { return int((next.Add(1) - 1) % uint64(n)) }
}

// Planner decides routes; its Picker chooses among ready endpoints.
type Planner struct{ pick Picker }

// NewPlanner returns a Planner choosing endpoints with pick (nil: Random).
func NewPlanner(pick Picker) *Planner {
	if pick == nil {
		pick = Random()
	}
	return &Planner{pick: pick}
}

var defaultPlanner = NewPlanner(nil)

// Plan decides with random endpoint choice; see Planner.Plan.
func Plan(snap *state.Snapshot, src model.Workload, dst netip.AddrPort) (Route, error) {
	return defaultPlanner.Plan(snap, src, dst)
}

// Plan decides how the connection from src to dst (its original
// destination) is carried:
//
//   - dst is a service VIP: via the service's waypoint if it has one;
//     otherwise a healthy endpoint (in the mesh or not) is picked, the
//     service port mapped to its target port, and the connection goes over
//     HBONE (mesh endpoint; :authority endpoint ip:targetPort, Forwarded
//     host = the service host name) or passthrough (endpoint not in the
//     mesh). A VIP port the service does not define, or no healthy
//     endpoint, is a Deny.
//   - dst is a workload with a waypoint: HBONE to the waypoint,
//     :authority = dst.
//   - dst is a mesh workload: HBONE to dst-ip:15008, :authority = dst,
//     expecting the workload's identity.
//   - dst is unknown or not in the mesh: Passthrough to dst.
//
// A source that is itself the waypoint is never sent to it again. The
// error is non-nil (wrapping ErrDenied) exactly when the route is a Deny.
func (p *Planner) Plan(snap *state.Snapshot, src model.Workload, dst netip.AddrPort) (Route, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if svc, target, ok, portOK := snap.ServiceByAddr(dst); ok {
		return p.planService(snap, src, dst, svc, target, portOK)
	}
	w, ok := snap.WorkloadByIP(dst.Addr())
	if !ok {
		return Route{Kind: Passthrough, Dst: dst, Reason: "destination is not a known workload or service"}, nil
	}
	if w.Waypoint != nil && !isSelf(src, *w.Waypoint) {
		return viaWaypoint(snap, *w.Waypoint, dst, nil, "workload "+w.String())
	}
	if !w.InMesh() {
		return Route{Kind: Passthrough, Dst: dst, DestWorkload: &w, Reason: "destination workload is not in the mesh"}, nil
	}
	return Route{
		Kind:         HBONE,
		HBONEAddr:    netip.AddrPortFrom(dst.Addr(), hbone.Port),
		Authority:    dst,
		DestID:       w.Identity(),
		DestWorkload: &w,
		Reason:       "destination workload is in the mesh",
	}, nil
}

func (p *Planner) planService(snap *state.Snapshot, src model.Workload, dst netip.AddrPort, svc model.Service, target uint16, portOK bool) (Route, error) {
	if !portOK {
		return deny(fmt.Sprintf("service %s has no port %d (ports: %v)", svc.Key(), dst.Port(), sortedPorts(svc.Ports)))
	}
	if svc.Waypoint != nil && !isSelf(src, *svc.Waypoint) {
		return viaWaypoint(snap, *svc.Waypoint, dst, &svc, "service "+svc.Key())
	}
	var ready []model.Workload
	for _, e := range snap.Endpoints(svc.Key()) {
		if e.Healthy() && len(e.Addresses) > 0 {
			ready = append(ready, e)
		}
	}
	if len(ready) == 0 {
		return deny(fmt.Sprintf("service %s (VIP %s) has no healthy endpoint", svc.Key(), dst))
	}
	e := ready[p.pick(len(ready))]
	if t, ok := e.Services[svc.Key()][dst.Port()]; ok {
		target = t
	}
	ip, _ := e.AddressIn(dst.Addr())
	to := netip.AddrPortFrom(ip, target)
	if !e.InMesh() {
		return Route{Kind: Passthrough, Dst: to, DestWorkload: &e, Service: &svc,
			Reason: fmt.Sprintf("service %s endpoint %s is not in the mesh", svc.Key(), e.String())}, nil
	}
	return Route{
		Kind:          HBONE,
		HBONEAddr:     netip.AddrPortFrom(ip, hbone.Port),
		Authority:     to,
		DestID:        e.Identity(),
		DestWorkload:  &e,
		Service:       &svc,
		ForwardedHost: svc.Hostname,
		Reason:        fmt.Sprintf("service %s endpoint %s", svc.Key(), e.String()),
	}, nil
}

// viaWaypoint routes to wp; the waypoint must be a known mesh workload so
// that its identity can be verified.
func viaWaypoint(snap *state.Snapshot, wp model.Waypoint, dst netip.AddrPort, svc *model.Service, of string) (Route, error) {
	w, ok := snap.WorkloadByIP(wp.Address)
	if !ok || !w.InMesh() {
		return deny(fmt.Sprintf("waypoint %s of %s is not a known mesh workload, so its identity cannot be verified (is the waypoint deployed and in the workload state?)", wp, of))
	}
	r := Route{
		Kind:         Waypoint,
		HBONEAddr:    wp.AddrPort(),
		Authority:    dst,
		DestID:       w.Identity(),
		DestWorkload: &w,
		Service:      svc,
		Reason:       fmt.Sprintf("%s uses waypoint %s", of, wp),
	}
	if svc != nil {
		r.ForwardedHost = svc.Hostname
	}
	return r, nil
}

func deny(reason string) (Route, error) {
	return Route{Kind: Deny, Reason: reason}, fmt.Errorf("%w: %s", ErrDenied, reason)
}

func isSelf(src model.Workload, wp model.Waypoint) bool {
	return slices.Contains(src.Addresses, wp.Address)
}

func sortedPorts(pm model.PortMap) []uint16 {
	out := make([]uint16, 0, len(pm))
	for p := range pm {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
