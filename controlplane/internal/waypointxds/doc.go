// Package waypointxds builds and serves the Envoy configuration of
// waypoints: the listeners, clusters, endpoints and routes that
// waypoint/XDS.md specifies (the contract with the Go waypoint, kept
// Envoy-valid so an Envoy-based waypoint is a drop-in).
//
// Build is a pure function from plain input structs (no Kubernetes types)
// to go-control-plane resources; Resources.Validate runs the envoy protos'
// validation, including typed configs packed in Any fields, and the
// snapshot consistency check. Server serves the resources per waypoint over
// delta ADS (go-control-plane's SnapshotCache keyed by the Gateway), and
// Dispatcher lets it share the control plane's one AggregatedDiscoveryService
// with ztunnel's workload discovery (internal/xds), choosing the backend by
// the node id prefix "waypoint~" of each stream's first request.
//
// authz.go adds L7 authorization (XDS.md §12: the RBAC filters built from
// the AuthorizationPolicies of Service.Policies, ValidatePolicy) and the
// JSON access log of every HTTP connection manager (§13).
package waypointxds
