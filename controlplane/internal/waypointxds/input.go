package waypointxds

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Input is everything Build needs for one waypoint: the waypoint itself and
// the services bound to it, each with its endpoints. It holds plain values
// (no Kubernetes types); the caller resolves labels, named target ports and
// readiness.
type Input struct {
	Waypoint Waypoint
	// Services are the services bound to the waypoint: each gets filter
	// chains, clusters, endpoints and (HTTP ports) a route configuration.
	Services []Service
	// Backends are services that routes of Services name as backends and
	// that are not bound themselves: each gets clusters and endpoints
	// only (XDS.md §5.2). Routes and Rules set on them are ignored.
	Backends []Service
}

// Waypoint is the waypoint (a Gateway of class ambit-waypoint).
type Waypoint struct {
	// Namespace and Name of the Gateway.
	Namespace, Name string
	// ClusterDomain is the cluster's DNS domain (empty: "cluster.local").
	ClusterDomain string
	// TrustDomain is the mesh trust domain (empty: "cluster.local").
	TrustDomain string
	// Addresses are the waypoint pods' IPs, only used to decide whether
	// connect_terminate also listens on [::] (when one is IPv6). Optional.
	Addresses []netip.Addr
	// AccessLogPercent is the percentage (0-100) of requests logged
	// (XDS.md §13; responses >= 400 are always logged); nil:
	// DefaultAccessLogPercent.
	AccessLogPercent *uint32
}

// Key returns "<namespace>/<name>", the key configuration is served under
// (node metadata GATEWAY).
func (w Waypoint) Key() string { return w.Namespace + "/" + w.Name }

// Service is a Kubernetes Service bound to the waypoint.
type Service struct {
	Namespace, Name string
	// Hostname is the service's DNS name (empty:
	// <name>.<namespace>.svc.<cluster domain>).
	Hostname string
	// VIPs are the service's cluster IPs (IPv4 and/or IPv6). A service
	// without a VIP (headless) gets no configuration.
	VIPs []netip.Addr
	// Ports are the service ports.
	Ports []Port
	// Endpoints are the pods backing the service.
	Endpoints []Endpoint
	// Policies are the AuthorizationPolicies that apply to the service
	// (XDS.md §12), each valid (ValidatePolicy), in any order.
	Policies []Policy
}

// Port is one service port.
type Port struct {
	// Name and AppProtocol of the port as in the Service; they decide the
	// protocol when Protocol is empty (see ProtocolOf).
	Name        string
	AppProtocol string
	// Protocol overrides the protocol derived from Name and AppProtocol.
	Protocol Protocol
	// Port is the service port (required, non-zero).
	Port uint16
	// TargetPort is the numeric target port, used for endpoints that do not
	// list this port in Endpoint.TargetPorts. Zero: only per-endpoint
	// target ports (a named targetPort).
	TargetPort uint16
	// Routes are the HTTPRoute rules attached to this port, one per (rule,
	// match), already in precedence order (XDS.md §7.1). Nil: the
	// default route. Only used on HTTP ports.
	Routes []Route
	// Backend holds the settings of the BackendPolicy that applies to
	// this port, for its cluster (XDS.md §14). Nil: the defaults.
	Backend *BackendSettings
}

// BackendSettings are the cluster settings of a BackendPolicy for one
// service port (XDS.md §14). A zero field keeps Envoy's (and the Go
// waypoint's) default.
type BackendSettings struct {
	// MaxConnections, MaxPendingRequests and MaxRequests are the circuit
	// breaker thresholds of the cluster; 0: Envoy's default, 1024.
	MaxConnections, MaxPendingRequests, MaxRequests uint32
	// MaxRequestsPerConnection closes an upstream connection after that
	// many requests (HTTP ports); 0: no limit.
	MaxRequestsPerConnection uint32
	// ConnectTimeout bounds connecting to an endpoint; 0: 10s.
	ConnectTimeout time.Duration
	// Outlier enables outlier detection; nil: none.
	Outlier *OutlierDetection
	// LB is the load-balancing algorithm; empty: round robin.
	LB LBAlgorithm
	// ChoiceCount is the number of endpoints least request (and EWMA)
	// compares; 0: Envoy's default, 2.
	ChoiceCount uint32
}

// OutlierDetection is the outlier detection of a cluster (XDS.md §14).
type OutlierDetection struct {
	// Consecutive5xx and ConsecutiveGatewayErrors eject an endpoint after
	// that many consecutive 5xx (gateway: 502, 503, 504) responses; 0:
	// not on that kind of error. At least one is non-zero.
	Consecutive5xx, ConsecutiveGatewayErrors uint32
	// Interval between ejection sweeps and the base ejection time; 0:
	// Envoy's defaults, 10s and 30s.
	Interval, BaseEjectionTime time.Duration
	// MaxEjectionPercent caps the ejected endpoints (0-100); nil: Envoy's
	// default, 10.
	MaxEjectionPercent *uint32
}

// LBAlgorithm is the load-balancing algorithm of a cluster.
type LBAlgorithm string

// The load-balancing algorithms of a BackendPolicy.
const (
	LBRoundRobin   LBAlgorithm = "RoundRobin"
	LBLeastRequest LBAlgorithm = "LeastRequest"
	// LBEWMA is least request in Envoy terms, marked in the cluster
	// metadata (ambit.lb_algorithm) for Ambit's waypoint (XDS.md §14).
	LBEWMA LBAlgorithm = "EWMA"
)

// Route is one (HTTPRoute rule, match) of a service port: one Envoy route.
type Route struct {
	// Name is "<routeNamespace>.<routeName>.<ruleIndex>.<matchIndex>".
	Name  string
	Match RouteMatch
	// Exactly one action: Backends (a route action), Redirect, or
	// DirectStatus (a direct response, e.g. 500 when no backend is
	// usable).
	Backends     []Backend
	Redirect     *Redirect
	DirectStatus int
	// RequestHeaders and ResponseHeaders are header modifications.
	RequestHeaders, ResponseHeaders HeaderModifier
	// Rewrite rewrites the request sent to the backend (route actions).
	Rewrite *Rewrite
	// Timeout bounds the whole request, retries included; 0: none.
	Timeout time.Duration
	// Retry is the rule's retry policy; nil: the default (XDS.md §7.1).
	Retry *Retry
	// Fault is the rule's fault injection (an HTTPFault ExtensionRef
	// filter); nil: none (XDS.md §15).
	Fault *Fault
}

// Fault is an HTTPFault: a fixed delay and/or an abort, each applied to a
// percentage of the route's requests. At least one of Delay and Abort is
// set.
type Fault struct {
	Delay *FaultDelay
	Abort *FaultAbort
}

// FaultDelay holds a request Fixed long before it is forwarded.
type FaultDelay struct {
	Fixed time.Duration
	// Percent of requests delayed, 0 to 100.
	Percent uint32
}

// FaultAbort answers a request itself: HTTPStatus (200-599), or, when
// GRPC is set, HTTP 200 with grpc-status GRPCStatus (0-16).
type FaultAbort struct {
	HTTPStatus int
	GRPC       bool
	GRPCStatus int
	// Percent of requests aborted, 0 to 100.
	Percent uint32
}

// PathMatchType is how a route matches the request path.
type PathMatchType string

// The path match types of HTTPRoute.
const (
	PathPrefix PathMatchType = "PathPrefix"
	PathExact  PathMatchType = "Exact"
	PathRegex  PathMatchType = "RegularExpression"
)

// RouteMatch is one HTTPRoute match. The zero value matches every request
// (prefix "/").
type RouteMatch struct {
	// PathType and Path; empty PathType is PathPrefix, empty Path "/".
	PathType PathMatchType
	Path     string
	// Method, if set, must equal the request method.
	Method string
	// Headers and QueryParams must all match. Header names are matched
	// case-insensitively.
	Headers     []ValueMatch
	QueryParams []ValueMatch
}

// ValueMatch matches a header or query parameter value, exactly or (Regex)
// by an RE2 regular expression that must match the whole value.
type ValueMatch struct {
	Name  string
	Value string
	Regex bool
}

// Backend is one weighted backend of a route: a port of a service in
// Input.Services or Input.Backends, by hostname.
type Backend struct {
	Hostname string
	Port     uint16
	Weight   uint32
}

// HeaderModifier is a RequestHeaderModifier or ResponseHeaderModifier:
// Set overwrites, Add appends, Remove deletes (removes apply first).
type HeaderModifier struct {
	Set, Add []Header
	Remove   []string
}

// Header is a header name and value.
type Header struct{ Name, Value string }

// IsZero reports whether m changes nothing.
func (m HeaderModifier) IsZero() bool {
	return len(m.Set) == 0 && len(m.Add) == 0 && len(m.Remove) == 0
}

// Redirect is a RequestRedirect filter. Empty fields keep the request's
// value; StatusCode 0 is 302.
type Redirect struct {
	Scheme   string
	Hostname string
	Port     uint16
	Path     *PathModifier
	// StatusCode is one of 301, 302, 303, 307, 308.
	StatusCode int
}

// PathModifier replaces the whole path (FullPath) or the matched prefix
// (PrefixMatch, with a PathPrefix match only).
type PathModifier struct {
	FullPath    *string
	PrefixMatch *string
}

// Rewrite is a URLRewrite filter.
type Rewrite struct {
	Hostname string
	Path     *PathModifier
}

// Retry is an HTTPRoute retry stanza with the rule's backend request
// timeout.
type Retry struct {
	// Attempts is the number of retries (not counting the first try).
	Attempts int
	// Codes are the retriable status codes; empty: any 5xx.
	Codes []int
	// Backoff is the minimum wait between attempts; 0: the default.
	Backoff time.Duration
	// PerTryTimeout bounds each attempt (timeouts.backendRequest); 0: none.
	PerTryTimeout time.Duration
}

// Endpoint is one pod backing a service.
type Endpoint struct {
	// Name and Namespace of the pod (telemetry; optional).
	Name, Namespace string
	// Addresses are the pod IPs; the first one is used.
	Addresses []netip.Addr
	// Node is the node the pod runs on (telemetry; optional).
	Node string
	// Identity is the pod's SPIFFE ID (spiffe://<td>/ns/<ns>/sa/<sa>),
	// the identity its ztunnel presents for it. Required unless
	// Plaintext.
	Identity string
	// Plaintext is set for a pod outside the mesh (no ztunnel captures
	// it: a sidecar-era pod during a migration, or one opted out): the
	// waypoint connects to podIP:targetPort directly, without HBONE
	// (XDS.md §6), as ztunnel does for a destination outside the mesh.
	Plaintext bool
	// Healthy is false for a pod that is not ready: it is sent with
	// health_status UNHEALTHY and never picked.
	Healthy bool
	// TargetPorts maps a service port to this pod's target port (resolved
	// named ports); it overrides Port.TargetPort.
	TargetPorts map[uint16]uint16
}

// Protocol is the protocol of a service port as the waypoint handles it.
type Protocol string

// The protocols of a service port.
const (
	// ProtocolTCP: opaque bytes, tcp_proxy.
	ProtocolTCP Protocol = "tcp"
	// ProtocolHTTP: HTTP/1.1 (or h2c from the client) to an HTTP/1.1 app.
	ProtocolHTTP Protocol = "http"
	// ProtocolHTTP2: HTTP to an app that speaks HTTP/2 (h2c).
	ProtocolHTTP2 Protocol = "http2"
	// ProtocolGRPC: gRPC (HTTP/2 to the app).
	ProtocolGRPC Protocol = "grpc"
)

// IsHTTP reports whether the waypoint parses the port's traffic as HTTP.
func (p Protocol) IsHTTP() bool { return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC }

// valid reports whether p is one of the defined protocols.
func (p Protocol) valid() bool { return p == ProtocolTCP || p.IsHTTP() }

// ProtocolOf decides the protocol of a service port from its appProtocol
// (when set) or else its name, case-insensitively (XDS.md §8):
// appProtocol http → http; http2, kubernetes.io/h2c → http2; grpc,
// grpc-web → grpc; any other appProtocol → tcp. Without appProtocol, the
// name "http"/"http-*" → http, "http2"/"http2-*" → http2, "grpc"/"grpc-*"
// → grpc; anything else → tcp.
func ProtocolOf(name, appProtocol string) Protocol {
	if ap := strings.ToLower(strings.TrimSpace(appProtocol)); ap != "" {
		switch ap {
		case "http":
			return ProtocolHTTP
		case "http2", "kubernetes.io/h2c":
			return ProtocolHTTP2
		case "grpc", "grpc-web":
			return ProtocolGRPC
		default:
			return ProtocolTCP
		}
	}
	n := strings.ToLower(name)
	for _, c := range []struct {
		prefix string
		p      Protocol
	}{{"http2", ProtocolHTTP2}, {"http", ProtocolHTTP}, {"grpc", ProtocolGRPC}} {
		if n == c.prefix || strings.HasPrefix(n, c.prefix+"-") {
			return c.p
		}
	}
	return ProtocolTCP
}

// protocol returns the port's effective protocol.
func (p Port) protocol() Protocol {
	if p.Protocol != "" {
		return p.Protocol
	}
	return ProtocolOf(p.Name, p.AppProtocol)
}

// Fixed names of the contract (XDS.md).
const (
	// ListenerConnectTerminate is the HBONE server listener on :15008.
	ListenerConnectTerminate = "connect_terminate"
	// ListenerMainInternal is the internal L7 listener, and the cluster
	// that reaches it.
	ListenerMainInternal = "main_internal"
	// ListenerConnectOriginate is the internal HBONE client listener, and
	// the ORIGINAL_DST cluster behind it.
	ListenerConnectOriginate = "connect_originate"

	// SecretDefault is the SDS name of the waypoint's own certificate.
	SecretDefault = "default"
	// SecretRootCA is the SDS name of the mesh roots.
	SecretRootCA = "ROOTCA"
	// SDSCluster is the bootstrap cluster an Envoy fetches secrets from.
	SDSCluster = "sds-grpc"

	// HBONEPort is the HBONE port of ztunnels and waypoints.
	HBONEPort = 15008

	// MetadataGateway is the node metadata key holding the Gateway
	// "<namespace>/<name>" a waypoint serves.
	MetadataGateway = "GATEWAY"
	// MetadataNamespace is the node metadata key of the pod namespace.
	MetadataNamespace = "NAMESPACE"

	// FilterStatePeerPrincipal holds the source principal (client cert
	// URI SAN) on main_internal.
	FilterStatePeerPrincipal = "io.istio.peer_principal"
	// FilterStateLocalPrincipal holds the waypoint's own identity.
	FilterStateLocalPrincipal = "io.istio.local_principal"

	// MetadataTunnel is the endpoint metadata namespace with the HBONE
	// address and destination.
	MetadataTunnel = "tunnel"
	// MetadataOriginalDst is the endpoint metadata namespace read by the
	// original_dst listener filter of connect_originate.
	MetadataOriginalDst = "envoy.filters.listener.original_dst"
	// MetadataAmbit is the endpoint and cluster metadata namespace with
	// Ambit's own keys (identity, node, workload, service).
	MetadataAmbit = "ambit"
	// MetadataLBAlgorithm is the key of the cluster metadata namespace
	// MetadataAmbit naming an algorithm Envoy does not have ("EWMA"; XDS.md
	// §14).
	MetadataLBAlgorithm = "lb_algorithm"
)

// ClusterName is the name of the cluster (and of its EDS resource) for a
// service port: "outbound|<port>||<hostname>".
func ClusterName(hostname string, port uint16) string {
	return "outbound|" + strconv.Itoa(int(port)) + "||" + hostname
}

// RouteName is the RDS name of an HTTP service port: "<hostname>:<port>".
func RouteName(hostname string, port uint16) string {
	return hostname + ":" + strconv.Itoa(int(port))
}

// FilterChainName is the name of main_internal's filter chain for a
// service port: "inbound-vip|<port>|<protocol>|<hostname>".
func FilterChainName(hostname string, port uint16, p Protocol) string {
	return "inbound-vip|" + strconv.Itoa(int(port)) + "|" + string(p) + "|" + hostname
}

// Domains returns the virtual host domains of a service port, in the
// order of XDS.md §7, without duplicates, ending with "*": the filter
// chain has already chosen the service port (by the CONNECT's
// destination), so a request with any other Host — a pod IP dialled
// directly and sent through the waypoint as the service — is routed as
// the service rather than answered 404.
func Domains(hostname, name, namespace string, vips []netip.Addr, port uint16) []string {
	p := ":" + strconv.Itoa(int(port))
	var out []string
	seen := map[string]bool{}
	add := func(hosts ...string) {
		for _, h := range hosts {
			if h == "" || seen[h] {
				continue
			}
			seen[h] = true
			out = append(out, h, h+p)
		}
	}
	add(hostname)
	if name != "" && namespace != "" {
		add(name, name+"."+namespace, name+"."+namespace+".svc")
	}
	for _, v := range vips {
		h := v.String()
		if v.Is6() {
			h = "[" + h + "]"
		}
		add(h)
	}
	return append(out, "*")
}
