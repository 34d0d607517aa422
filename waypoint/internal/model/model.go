// Package model is the waypoint's configuration as the data path uses it:
// an immutable, validated view of the Envoy resources the control plane
// serves (waypoint/XDS.md), built by internal/xdsclient. It holds no
// protobuf and no Kubernetes types, and its lookups are pure functions:
//
//   - Config.Chain: original destination ip:port → the main_internal filter
//     chain (service hostname, protocol, cluster or route table);
//   - RouteTable.Select: a request (Host, method, path, headers, query) →
//     virtual host and first matching route (RouteMatch.Matches);
//   - PickWeighted: a weighted cluster for a random number;
//   - Pick, PickOther: the n-th healthy endpoint of a cluster (round
//     robin), avoiding the endpoints a request already tried;
//   - LoadBalancing.Candidates (panic mode), Avoid, PickRoundRobin,
//     PickLeast, PeakEWMA: the load balancers (lb.go);
//   - OutlierDetector: passive health checking (outlier.go);
//   - Thresholds: the circuit breakers (limits.go);
//   - Route.RewritePath, Redirect.Location, HeaderMutation.Apply: what a
//     route changes in the request and response;
//   - RetryPolicy.Retriable, Backoff, RetryBudget.MaxRetries: whether and
//     when an attempt is retried.
package model

import (
	"net/netip"
	"strings"
	"time"

	"ambit.dev/pkg/identity"
)

// Protocol is the protocol of a service port (XDS.md §8), from the filter
// chain name inbound-vip|<port>|<protocol>|<hostname>.
type Protocol string

// The protocols of a service port.
const (
	ProtocolHTTP  Protocol = "http"
	ProtocolHTTP2 Protocol = "http2"
	ProtocolGRPC  Protocol = "grpc"
	ProtocolTCP   Protocol = "tcp"
)

// IsHTTP reports whether traffic of p is parsed as HTTP.
func (p Protocol) IsHTTP() bool { return p == ProtocolHTTP || p == ProtocolHTTP2 || p == ProtocolGRPC }

// Valid reports whether p is one of the defined protocols.
func (p Protocol) Valid() bool { return p == ProtocolTCP || p.IsHTTP() }

// UpstreamProtocol is what the waypoint speaks inside the tunnel to the
// application (the cluster's HttpProtocolOptions).
type UpstreamProtocol string

// The upstream protocols.
const (
	// UpstreamHTTP1 is HTTP/1.1 (also the default of an HTTP cluster).
	UpstreamHTTP1 UpstreamProtocol = "http/1.1"
	// UpstreamHTTP2 is HTTP/2 with prior knowledge (h2c).
	UpstreamHTTP2 UpstreamProtocol = "h2c"
)

// Config is one complete view of the waypoint's configuration. It is never
// modified after Build; a change produces a new Config.
type Config struct {
	// Versions of the resources it was built from, "<type>/<name>" →
	// version (admin output).
	Versions map[string]string
	// Chains are main_internal's filter chains, sorted by name.
	Chains []*Chain
	// Clusters by name (outbound|<port>||<hostname>).
	Clusters map[string]*Cluster
	// Routes by RDS name (<hostname>:<port>).
	Routes map[string]*RouteTable
	// Missing lists the references that have no resource yet ("EDS
	// outbound|80||web...", "RDS web...:80", "CDS ..."), sorted. A
	// Config with Missing is served (the affected requests fail with 503)
	// but not Complete.
	Missing []string

	exact map[netip.AddrPort]*Chain // chains matched by a full-length prefix
}

// Complete reports whether every reference resolves.
func (c *Config) Complete() bool { return c != nil && len(c.Missing) == 0 }

// Chain is one main_internal filter chain: the traffic to one service port.
type Chain struct {
	// Name is the chain name, inbound-vip|<port>|<protocol>|<hostname>.
	Name string
	// Service is the hostname from the name.
	Service string
	// Protocol is from the name; TCP chains have Cluster, HTTP chains
	// RouteName.
	Protocol Protocol
	// Prefixes and Port are the filter_chain_match: prefix_ranges and
	// destination_port.
	Prefixes []netip.Prefix
	Port     uint16
	// Cluster is the tcp_proxy cluster (TCP chains).
	Cluster string
	// RouteName is the HCM's RDS name (HTTP chains).
	RouteName string
	// RBAC are the chain's RBAC filters in order (XDS.md §12): HTTP
	// filters on HTTP chains, network filters on TCP chains.
	RBAC []RBAC
	// AccessLog is the HCM's access log (HTTP chains; nil: none).
	AccessLog *AccessLog
	// Fault is true when the HCM has envoy.filters.http.fault: the
	// routes' faults are injected.
	Fault bool
	// Trace is the HCM's request id and trace context handling (HTTP
	// chains); nil: headers pass through unchanged.
	Trace *TraceConfig
}

// Cluster is one outbound|<port>||<hostname> cluster with its endpoints.
type Cluster struct {
	Name string
	// Service is the ambit cluster metadata (destination_service labels).
	Service Service
	// Upstream is the protocol spoken to the app for HTTP services.
	Upstream UpstreamProtocol
	// ConnectTimeout bounds opening the HBONE stream to an endpoint.
	ConnectTimeout time.Duration
	// RetryBudget limits the retries in flight to the cluster
	// (circuit_breakers retry_budget); nil is Envoy's default threshold
	// (max_retries 3).
	RetryBudget *RetryBudget
	// Limits are the other circuit_breakers thresholds of priority
	// DEFAULT; nil is Envoy's defaults (Cluster.Limit).
	Limits *Thresholds
	// MaxRequestsPerConnection is HttpProtocolOptions'
	// common_http_protocol_options.max_requests_per_connection: an
	// upstream connection takes no new request after this many; 0 is
	// unlimited.
	MaxRequestsPerConnection uint32
	// LB is lb_policy, least_request_lb_config and common_lb_config.
	LB LoadBalancing
	// Outlier is outlier_detection; nil: none.
	Outlier *OutlierDetection
	// Endpoints from EDS, in the order received; nil with HasEndpoints
	// false before the ClusterLoadAssignment arrived.
	Endpoints    []Endpoint
	HasEndpoints bool
}

// Service describes the Kubernetes service a cluster stands for.
type Service struct {
	Hostname  string
	Namespace string
	Name      string
	Port      uint16
}

// Endpoint is one backing pod, reached through its node's ztunnel, or
// directly when it is outside the mesh (Plaintext).
type Endpoint struct {
	// Tunnel is the HBONE address: podIP:15008 (unset when Plaintext).
	Tunnel netip.AddrPort
	// Destination is the CONNECT :authority: podIP:targetPort; for a
	// Plaintext endpoint, the address dialled.
	Destination netip.AddrPort
	// Identity is what the ztunnel's server certificate must name (zero
	// when Plaintext).
	Identity identity.ID
	// Plaintext is a pod outside the mesh (XDS.md §6): a plain TCP
	// connection to Destination, no identity to check.
	Plaintext bool
	// Healthy is false for a pod that is not ready; it is never picked.
	Healthy bool
	// Workload, Namespace and Node are telemetry metadata.
	Workload  string
	Namespace string
	Node      string
}

// RouteTable is one RDS RouteConfiguration.
type RouteTable struct {
	Name         string
	VirtualHosts []VirtualHost
}

// VirtualHost is a set of domains and their ordered routes.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []Route
}

// Index prepares the lookups of c; Build calls it.
func (c *Config) Index() {
	c.exact = map[netip.AddrPort]*Chain{}
	for _, ch := range c.Chains {
		for _, p := range ch.Prefixes {
			if p.IsSingleIP() {
				c.exact[netip.AddrPortFrom(p.Addr(), ch.Port)] = ch
			}
		}
	}
}

// Chain returns the filter chain for an original destination (the CONNECT
// :authority), Envoy's filter_chain_match order: the port must equal, and
// the most specific prefix containing the IP wins. IPv4-mapped IPv6
// addresses match as IPv4. It returns nil when none matches.
func (c *Config) Chain(dst netip.AddrPort) *Chain {
	if c == nil {
		return nil
	}
	ip := dst.Addr().Unmap()
	if ch := c.exact[netip.AddrPortFrom(ip, dst.Port())]; ch != nil {
		return ch
	}
	var best *Chain
	bits := -1
	for _, ch := range c.Chains {
		if ch.Port != dst.Port() {
			continue
		}
		for _, p := range ch.Prefixes {
			if p.Contains(ip) && p.Bits() > bits {
				best, bits = ch, p.Bits()
			}
		}
	}
	return best
}

// Select returns the virtual host for req.Host (a Host header or
// :authority, with or without port) and its first route matching req.
// Domains match as Envoy does: exact (case-insensitive) first, then the
// longest suffix wildcard ("*.example.com"), then the longest prefix
// wildcard ("example.*"), then "*". vh is nil when no domain matches;
// route is nil when no route of vh matches. Both mean 404.
func (rt *RouteTable) Select(req Request) (vh *VirtualHost, route *Route) {
	if rt == nil {
		return nil, nil
	}
	host := strings.ToLower(req.Host)
	var suffix, prefix, star *VirtualHost
	sLen, pLen := -1, -1
	for i := range rt.VirtualHosts {
		v := &rt.VirtualHosts[i]
		for _, d := range v.Domains {
			d = strings.ToLower(d)
			switch {
			case d == host:
				return v, v.firstMatch(req)
			case d == "*":
				if star == nil {
					star = v
				}
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(host) > len(d)-1:
				if len(d) > sLen {
					suffix, sLen = v, len(d)
				}
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]) && len(host) > len(d)-1:
				if len(d) > pLen {
					prefix, pLen = v, len(d)
				}
			}
		}
	}
	for _, v := range []*VirtualHost{suffix, prefix, star} {
		if v != nil {
			return v, v.firstMatch(req)
		}
	}
	return nil, nil
}

func (v *VirtualHost) firstMatch(req Request) *Route {
	for i := range v.Routes {
		if v.Routes[i].Match.Matches(req) {
			return &v.Routes[i]
		}
	}
	return nil
}

// Pick returns the n-th healthy endpoint, modulo their number: with a
// counter incremented per pick this is round robin over the healthy
// endpoints. ok is false when none is healthy.
func Pick(eps []Endpoint, n uint64) (ep Endpoint, ok bool) { return PickOther(eps, n, nil) }

// PickOther is Pick for a retry: it returns the n-th healthy endpoint that
// is not in tried (Avoid).
func PickOther(eps []Endpoint, n uint64, tried []netip.AddrPort) (ep Endpoint, ok bool) {
	hosts, _ := LoadBalancing{}.Candidates(eps, nil)
	return PickRoundRobin(Avoid(hosts, tried), n)
}

// PickRoundRobin returns hosts[n mod len(hosts)]; ok is false when hosts
// is empty.
func PickRoundRobin(hosts []Endpoint, n uint64) (ep Endpoint, ok bool) {
	if len(hosts) == 0 {
		return Endpoint{}, false
	}
	return hosts[n%uint64(len(hosts))], true
}
