package inbound

import (
	"errors"
	"fmt"

	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

// ErrWaypointBypass is wrapped by the error CheckWaypoint returns for a
// connection that did not come through the destination's waypoint.
var ErrWaypointBypass = errors.New("connection bypasses the destination's waypoint")

// CheckWaypoint decides whether a connection may reach target port port
// of workload w (no bypass): when a waypoint guards that port
// (state.Snapshot.Guards: w's own waypoint, or that of a Service w backs
// on the port), only HBONE from a pod of one of those waypoints is
// accepted. Plaintext never is — it cannot have come through a waypoint,
// which always re-originates HBONE — nor is HBONE from any other identity
// (a mesh client that dialled the pod IP is sent through the waypoint by
// its own ztunnel, so this refuses only clients that try to get around
// it). Ports no waypoint guards are not affected.
func CheckWaypoint(snap *state.Snapshot, w model.Workload, port uint16, src identity.ID, plaintext bool) error {
	guards := snap.Guards(w, port)
	if len(guards) == 0 {
		return nil
	}
	if !plaintext {
		for _, g := range guards {
			if snap.IsWaypointIdentity(g.Waypoint, src) {
				return nil
			}
		}
	}
	g := guards[0]
	what := "workload " + w.String()
	if g.Service != nil {
		what = fmt.Sprintf("service %s (port %d)", g.Service.Key(), g.ServicePort)
	}
	from := "plaintext (a client outside the mesh)"
	if !plaintext {
		from = "from " + orNone(principalOf(src))
	}
	return fmt.Errorf("%w: port %d of %s is behind waypoint %s for %s, and this connection is %s, not from the waypoint (enrol the client's namespace so its ztunnel sends it through the waypoint)",
		ErrWaypointBypass, port, w.String(), g.Waypoint, what, from)
}

func principalOf(id identity.ID) string {
	if id == (identity.ID{}) {
		return ""
	}
	return Principal(id)
}
