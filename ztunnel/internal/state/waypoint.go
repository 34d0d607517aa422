package state

import (
	"maps"
	"slices"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/model"
)

// Guard is a waypoint that traffic to a workload's port must pass: the
// workload's own waypoint, or that of a Service it backs on that port.
type Guard struct {
	Waypoint model.Waypoint
	// Service is the Service whose waypoint it is (nil: the workload's
	// own). ServicePort is the Service port that targets the port.
	Service     *model.Service
	ServicePort uint16
}

// Guards returns the waypoints in front of target port port of w: w's own
// Waypoint (every port), and the Waypoint of each Service w backs with a
// service port whose target port on w (w's own port map, else the
// Service's) is port, sorted by Service key, then service port. Service
// waypoints guard the port only when every Service exposing it has one: a
// port that a Service without a waypoint also exposes is reachable without
// one, as that Service is. Empty: the port is reached without a waypoint.
func (s *Snapshot) Guards(w model.Workload, port uint16) []Guard {
	var own, bySvc []Guard
	if w.Waypoint != nil {
		own = append(own, Guard{Waypoint: *w.Waypoint})
	}
	for _, key := range slices.Sorted(maps.Keys(w.Services)) {
		svc, ok := s.ServiceByKey(key)
		if !ok {
			continue
		}
		pm := w.Services[key]
		for _, sp := range slices.Sorted(maps.Keys(svc.Ports)) {
			target, ok := pm[sp] // the workload's own mapping wins
			if !ok {
				target = svc.Ports[sp]
			}
			if target != port {
				continue
			}
			if svc.Waypoint == nil {
				return own
			}
			bySvc = append(bySvc, Guard{Waypoint: *svc.Waypoint, Service: &svc, ServicePort: sp})
		}
	}
	return append(own, bySvc...)
}

// IsWaypointIdentity reports whether id is the identity of a pod of the
// waypoint wp: a workload backing its Service (healthy or not: a pod being
// replaced still finishes its requests), or the workload owning its fixed
// address (or backing the Service of that VIP).
func (s *Snapshot) IsWaypointIdentity(wp model.Waypoint, id identity.ID) bool {
	if id == (identity.ID{}) {
		return false
	}
	key := wp.Service
	if key == "" {
		if svc, ok := s.ServiceByVIP(wp.Address); ok {
			key = svc.Key()
		} else if w, ok := s.WorkloadByIP(wp.Address); ok {
			return w.InMesh() && w.Identity() == id
		} else {
			return false
		}
	}
	for _, e := range s.Endpoints(key) {
		if e.InMesh() && e.Identity() == id {
			return true
		}
	}
	return false
}
