// Package adminapi is the JSON served by ztunnel's admin port
// (127.0.0.1:15000): the types of /config_dump and of its slices /workloads,
// /services, /policies, /certs and /connections. The ztunnel admin server
// writes them; ztunnel-admin and ambitctl read them. It has no dependencies
// beyond the standard library so any module may import it.
package adminapi

import "time"

// Paths of the admin endpoints that serve these types.
const (
	PathConfigDump  = "/config_dump" // ConfigDump
	PathWorkloads   = "/workloads"   // []WorkloadDump
	PathServices    = "/services"    // []ServiceDump
	PathPolicies    = "/policies"    // []PolicyDump
	PathCerts       = "/certs"       // []CertDump
	PathConnections = "/connections" // []ConnDump
)

// DefaultAdminAddr is where ztunnel's admin port listens (loopback only).
const DefaultAdminAddr = "127.0.0.1:15000"

// ConfigDump is what /config_dump serves: ztunnel's whole view of the node.
// The other admin endpoints serve one of its slices. It never holds key
// material.
type ConfigDump struct {
	Node         string         `json:"node"`
	Workloads    []WorkloadDump `json:"workloads"`
	Services     []ServiceDump  `json:"services"`
	Policies     []PolicyDump   `json:"policies"`
	Certificates []CertDump     `json:"certificates"`
	Connections  []ConnDump     `json:"connections"`
}

// WorkloadDump is one workload (pod) of the state.
type WorkloadDump struct {
	UID            string   `json:"uid"`
	Name           string   `json:"name"`
	Namespace      string   `json:"namespace"`
	ServiceAccount string   `json:"serviceAccount"`
	Node           string   `json:"node"`
	Protocol       string   `json:"protocol"` // HBONE | NONE
	MTLSMode       string   `json:"mtlsMode"` // STRICT | PERMISSIVE
	Status         string   `json:"status"`   // HEALTHY | UNHEALTHY
	Addresses      []string `json:"addresses"`
	// Services maps a service key (namespace/hostname) to its port ->
	// target port map.
	Services map[string]map[string]uint32 `json:"services,omitempty"`
	Waypoint string                       `json:"waypoint,omitempty"` // address:port
	// Captured says whether this ztunnel has listeners open in the pod.
	Captured bool `json:"captured"`
	// AuthorizationPolicies are the keys ("namespace/name") of the
	// selector-scoped policies the control plane lists for this workload
	// (namespace and mesh-wide policies apply by scope and are not listed).
	AuthorizationPolicies []string `json:"authorizationPolicies,omitempty"`
}

// ServiceDump is one service of the state.
type ServiceDump struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Hostname  string            `json:"hostname"`
	VIPs      []string          `json:"vips"`
	Ports     map[string]uint32 `json:"ports"` // service port -> target port
	Waypoint  string            `json:"waypoint,omitempty"`
}

// PolicyDump is one authorization policy of the state.
type PolicyDump struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Scope     string `json:"scope"`
	Action    string `json:"action"`
	// Rules is the number of rules (OR'ed) of an access policy.
	Rules int `json:"rules"`
}

// States of a certificate (CertDump.State).
const (
	CertValid       = "Valid"
	CertExpired     = "Expired"
	CertNotYetValid = "NotYetValid"
	// CertPending: no certificate has been issued for the identity yet
	// (LastError says why, if a request failed).
	CertPending = "Pending"
)

// Types of a certificate in a chain (CertInfo.Type).
const (
	CertLeaf         = "Leaf"
	CertIntermediate = "Intermediate"
	CertRoot         = "Root"
)

// CertDump is the certificate ztunnel holds for one identity.
type CertDump struct {
	Identity string `json:"identity"`
	// State is the leaf's state when the dump was taken:
	// Valid | Expired | NotYetValid (| Pending when none was issued yet).
	State string `json:"state"`
	// Chain lists the leaf, then intermediates, then the roots.
	Chain []CertInfo `json:"chain"`
	// LastError is the last failed certificate request, if any.
	LastError string `json:"lastError,omitempty"`
}

// CertInfo is one certificate of a chain. It holds public data only.
type CertInfo struct {
	Type      string    `json:"type"`    // Leaf | Intermediate | Root
	Serial    string    `json:"serial"`  // lower-case hex
	Subject   string    `json:"subject"` // URI SAN of a leaf, subject DN otherwise
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	PEM       string    `json:"pem,omitempty"` // the certificate, never a key
}

// ConnDump is one connection ztunnel is proxying.
type ConnDump struct {
	ID            uint64    `json:"id"`
	Direction     string    `json:"direction"` // inbound | outbound
	Protocol      string    `json:"protocol"`  // HBONE | TCP
	Src           string    `json:"src"`
	Dst           string    `json:"dst"`
	SrcWorkload   string    `json:"srcWorkload,omitempty"` // namespace/name
	DstWorkload   string    `json:"dstWorkload,omitempty"`
	SrcPrincipal  string    `json:"srcPrincipal,omitempty"`
	DstPrincipal  string    `json:"dstPrincipal,omitempty"`
	Opened        time.Time `json:"opened"`
	BytesSent     int64     `json:"bytesSent"`     // source -> destination
	BytesReceived int64     `json:"bytesReceived"` // destination -> source
}

// CertState says whether now lies in [notBefore, notAfter]: CertValid,
// CertNotYetValid or CertExpired.
func CertState(notBefore, notAfter, now time.Time) string {
	switch {
	case now.Before(notBefore):
		return CertNotYetValid
	case now.After(notAfter):
		return CertExpired
	default:
		return CertValid
	}
}
