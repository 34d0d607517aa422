// Package model is ztunnel's view of the mesh: workloads (pods), services
// and waypoints, as the state source (a workloads file today, xDS later)
// describes them. It has no Kubernetes imports and no behaviour beyond
// small accessors; decisions live in outbound, inbound and state.
package model

import (
	"fmt"
	"net/netip"
	"strconv"

	"ambit.dev/pkg/identity"
)

// Protocol is how a workload is reached: through the mesh or not.
type Protocol string

// Protocols.
const (
	// ProtocolHBONE: the workload is in the mesh; its ztunnel (or
	// waypoint) terminates HBONE on port 15008.
	ProtocolHBONE Protocol = "HBONE"
	// ProtocolNone: the workload is not in the mesh; plain TCP.
	ProtocolNone Protocol = "NONE"
)

// MTLSMode says whether a mesh workload accepts plaintext inbound.
type MTLSMode string

// mTLS modes.
const (
	// MTLSStrict refuses plaintext inbound connections.
	MTLSStrict MTLSMode = "STRICT"
	// MTLSPermissive accepts plaintext and HBONE.
	MTLSPermissive MTLSMode = "PERMISSIVE"
)

// Status is a workload's readiness.
type Status string

// Workload statuses.
const (
	StatusHealthy   Status = "HEALTHY"
	StatusUnhealthy Status = "UNHEALTHY"
)

// Waypoint says where the waypoint in front of a workload or service is.
// It is given either by its Service (the control plane's form: Service is
// the key "namespace/hostname" and ztunnel picks one of the Service's
// healthy workloads) or by a fixed Address (a waypoint pod IP, or the VIP of
// the waypoint's Service). Port is the port on which the waypoint terminates
// HBONE (normally 15008) in both forms.
type Waypoint struct {
	// Service is the waypoint Service's key; empty when Address is set.
	Service string
	// Address is the fixed waypoint address; invalid when Service is set.
	Address netip.Addr
	Port    uint16
}

// AddrPort returns the fixed waypoint address with its HBONE port; it is
// only meaningful when Service is empty.
func (w Waypoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(w.Address, w.Port) }

// String returns "ip:port", or "namespace/hostname:port" for the Service
// form.
func (w Waypoint) String() string {
	if w.Service != "" {
		return w.Service + ":" + strconv.Itoa(int(w.Port))
	}
	return w.AddrPort().String()
}

// PortMap maps a service port to the target port on the workload.
type PortMap map[uint16]uint16

// Workload is one pod (or VM) with its mesh attributes.
type Workload struct {
	UID            string
	Name           string
	Namespace      string
	ServiceAccount string
	TrustDomain    string
	// Node is the node the workload runs on.
	Node      string
	Addresses []netip.Addr
	Protocol  Protocol
	MTLSMode  MTLSMode
	// Netns is the path of the workload's network namespace, set in file
	// mode for workloads this ztunnel captures.
	Netns string
	// Services maps a service key (namespace/hostname) to the port map
	// through which this workload backs the service.
	Services map[string]PortMap
	// Waypoint, if set, receives all traffic addressed to the workload.
	Waypoint *Waypoint
	Status   Status
	// AuthorizationPolicies are the keys ("<namespace>/<name>") of the
	// WORKLOAD_SELECTOR policies whose selector matches this workload.
	AuthorizationPolicies []string
}

// Identity returns the workload's SPIFFE identity. It is valid when the
// workload passed state validation.
func (w Workload) Identity() identity.ID {
	return identity.ID{TrustDomain: w.TrustDomain, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}
}

// InMesh reports whether the workload speaks HBONE.
func (w Workload) InMesh() bool { return w.Protocol == ProtocolHBONE }

// Healthy reports whether the workload may receive new connections.
func (w Workload) Healthy() bool { return w.Status == StatusHealthy }

// AddressIn returns the workload's first address of the same family as
// like, or its first address when it has none of that family.
func (w Workload) AddressIn(like netip.Addr) (netip.Addr, bool) {
	for _, a := range w.Addresses {
		if a.Is4() == like.Unmap().Is4() {
			return a, true
		}
	}
	if len(w.Addresses) > 0 {
		return w.Addresses[0], true
	}
	return netip.Addr{}, false
}

// String names the workload for logs: namespace/name (uid).
func (w Workload) String() string { return w.Namespace + "/" + w.Name + " (" + w.UID + ")" }

// Service is a Kubernetes-style service: virtual IPs and ports in front of
// the workloads that back it.
type Service struct {
	Name      string
	Namespace string
	Hostname  string
	VIPs      []netip.Addr
	// Ports maps service port to target port.
	Ports    PortMap
	Waypoint *Waypoint
}

// Key is the service's key in Workload.Services: namespace/hostname.
func (s Service) Key() string { return ServiceKey(s.Namespace, s.Hostname) }

// ServiceKey builds the key of a service.
func ServiceKey(namespace, hostname string) string { return namespace + "/" + hostname }

// String names the service for logs.
func (s Service) String() string { return s.Key() }

// ParsePort parses a port number written as a string (YAML map key).
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number in 1..65535", s)
	}
	return uint16(n), nil
}
