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

// ErrWaypointUnavailable is wrapped, with ErrDenied, when the destination
// has a waypoint but no usable waypoint pod: unknown waypoint Service, no
// healthy HBONE pod behind it, or an unverifiable fixed waypoint address.
var ErrWaypointUnavailable = errors.New("waypoint unavailable")

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
//   - dst is a service VIP: via the service's waypoint if it has one (see
//     below);
//     otherwise a healthy endpoint (in the mesh or not) is picked, the
//     service port mapped to its target port, and the connection goes over
//     HBONE (mesh endpoint; :authority endpoint ip:targetPort, Forwarded
//     host = the service host name) or passthrough (endpoint not in the
//     mesh). A VIP port the service does not define, or no healthy
//     endpoint, is a Deny.
//   - dst is a workload with a waypoint: via the waypoint. The control
//     plane sets Workload.Waypoint only when the waypoint serves workloads.
//   - dst is a pod ip:port that backs a service behind a waypoint on that
//     (target) port: via the service's waypoint, with :authority the
//     service's VIP and port, as if the service had been dialled (the
//     waypoint then picks the endpoint). Dialling pod IPs never bypasses a
//     service's waypoint; the destination ztunnel refuses such connections
//     that do not come from the waypoint anyway (inbound.CheckWaypoint).
//
// Via a waypoint means: one healthy HBONE pod of the waypoint's Service is
// picked (as for service endpoints), and the connection is tunnelled to
// pod-ip:hbone-port expecting that pod's identity, with :authority = dst
// (the service VIP:port or pod ip:port dialled). No such pod is a Deny
// wrapping ErrWaypointUnavailable, never a bypass.
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
	if w.Waypoint != nil && !isSelf(snap, src, *w.Waypoint) {
		return p.viaWaypoint(snap, *w.Waypoint, dst, nil, "workload "+w.String())
	}
	for _, g := range snap.Guards(w, dst.Port()) {
		if g.Service == nil || isSelf(snap, src, g.Waypoint) {
			continue
		}
		// The pod IP of a Service behind a waypoint: the connection goes
		// through the waypoint as one to the Service (which the waypoint
		// routes on), never around it.
		vip, ok := vipLike(*g.Service, dst.Addr())
		if !ok {
			return denyWaypoint(fmt.Sprintf("pod %s backs service %s, which is behind waypoint %s, but the service has no %s VIP to address it through the waypoint",
				dst, g.Service.Key(), g.Waypoint, family(dst.Addr())))
		}
		return p.viaWaypoint(snap, g.Waypoint, netip.AddrPortFrom(vip, g.ServicePort), g.Service,
			fmt.Sprintf("pod %s of service %s (port %d)", dst, g.Service.Key(), g.ServicePort))
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
	if svc.Waypoint != nil && !isSelf(snap, src, *svc.Waypoint) {
		return p.viaWaypoint(snap, *svc.Waypoint, dst, &svc, "service "+svc.Key())
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

// viaWaypoint routes to one healthy pod of the waypoint wp, chosen like an
// ordinary service endpoint, over HBONE to pod-ip:wp.Port expecting the
// pod's identity; :authority stays dst, the original destination, which is
// what the waypoint routes on. Without a usable waypoint pod the
// connection is refused: traffic never bypasses its waypoint.
func (p *Planner) viaWaypoint(snap *state.Snapshot, wp model.Waypoint, dst netip.AddrPort, svc *model.Service, of string) (Route, error) {
	pods, fixed, err := waypointPods(snap, wp, of)
	if err != nil {
		return denyWaypoint(err.Error())
	}
	w := pods[p.pick(len(pods))]
	ip, _ := w.AddressIn(dst.Addr())
	if fixed {
		ip = wp.Address
	}
	r := Route{
		Kind:         Waypoint,
		HBONEAddr:    netip.AddrPortFrom(ip, wp.Port),
		Authority:    dst,
		DestID:       w.Identity(),
		DestWorkload: &w,
		Service:      svc,
		Reason:       fmt.Sprintf("%s uses waypoint %s (pod %s)", of, wp, w.String()),
	}
	if svc != nil {
		r.ForwardedHost = svc.Hostname
	}
	return r, nil
}

// waypointPods returns the workloads that may serve as the waypoint wp:
// the healthy mesh workloads backing its Service (given by key, or by a
// fixed address that is the Service's VIP), or the single workload owning
// the fixed address, in which case fixed is true and that address is dialled.
// The error, the reason for refusing, names what to check.
func waypointPods(snap *state.Snapshot, wp model.Waypoint, of string) (pods []model.Workload, fixed bool, err error) {
	key := wp.Service
	if key == "" {
		if s, ok := snap.ServiceByVIP(wp.Address); ok {
			key = s.Key()
		} else {
			w, ok := snap.WorkloadByIP(wp.Address)
			if !ok || !w.InMesh() {
				return nil, false, fmt.Errorf("waypoint %s of %s is not a known mesh workload, so its identity cannot be verified (is the waypoint deployed and in the workload state?)", wp, of)
			}
			if !w.Healthy() {
				return nil, false, fmt.Errorf("waypoint %s of %s (pod %s) is not healthy (is the waypoint pod ready?)", wp, of, w.String())
			}
			return []model.Workload{w}, true, nil
		}
	}
	if _, ok := snap.ServiceByKey(key); !ok {
		return nil, false, fmt.Errorf("waypoint service %s of %s is not in the workload state (is the waypoint Gateway deployed and its Service published?)", key, of)
	}
	eps := snap.Endpoints(key)
	for _, e := range eps {
		if e.Healthy() && e.InMesh() && len(e.Addresses) > 0 {
			pods = append(pods, e)
		}
	}
	if len(pods) == 0 {
		return nil, false, fmt.Errorf("waypoint service %s of %s has no healthy HBONE workload (%d backing workloads; are the waypoint pods running and ready?)", key, of, len(eps))
	}
	return pods, false, nil
}

// vipLike returns a VIP of svc of the same family as like.
func vipLike(svc model.Service, like netip.Addr) (netip.Addr, bool) {
	for _, v := range svc.VIPs {
		if v.Is4() == like.Is4() {
			return v, true
		}
	}
	return netip.Addr{}, false
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func deny(reason string) (Route, error) {
	return Route{Kind: Deny, Reason: reason}, fmt.Errorf("%w: %s", ErrDenied, reason)
}

func denyWaypoint(reason string) (Route, error) {
	return Route{Kind: Deny, Reason: reason}, fmt.Errorf("%w: %w: %s", ErrDenied, ErrWaypointUnavailable, reason)
}

// isSelf reports whether src is (one of the pods of) the waypoint wp, so
// that the waypoint's own traffic is never sent back to a waypoint.
func isSelf(snap *state.Snapshot, src model.Workload, wp model.Waypoint) bool {
	if wp.Service != "" {
		_, backs := src.Services[wp.Service]
		return backs
	}
	if slices.Contains(src.Addresses, wp.Address) {
		return true
	}
	if s, ok := snap.ServiceByVIP(wp.Address); ok {
		_, backs := src.Services[s.Key()]
		return backs
	}
	return false
}

func sortedPorts(pm model.PortMap) []uint16 {
	out := make([]uint16, 0, len(pm))
	for p := range pm {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
