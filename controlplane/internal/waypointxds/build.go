package waypointxds

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	fsvaluev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	setfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/set_filter_state/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	iupv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/internal_upstream/v3"
	rawbufv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpupv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"ambit.dev/pkg/identity"
)

const (
	defaultDomain = "cluster.local"
	// BlackHoleCluster is the cluster of main_internal's default filter
	// chain: no endpoints, so a CONNECT to an unbound destination is closed.
	BlackHoleCluster = "BlackHoleCluster"
	// DefaultFilterChain is the name of main_internal's default chain.
	DefaultFilterChain = "blackhole"

	connectTimeout = 10 * time.Second
	// The default retry budget of an outbound cluster (XDS.md §5.2).
	retryBudgetPercent = 20
	retryBudgetMin     = 3
	httpOptionsKey     = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	internalUpstream   = "envoy.transport_sockets.internal_upstream"
	setFilterState     = "envoy.filters.http.set_filter_state"
	filterStateString  = "envoy.string"
	originalDstLocal   = "envoy.filters.listener.original_dst.local_ip"
	originalDstRemote  = "envoy.filters.listener.original_dst.remote_ip"
)

// Resources is a waypoint's configuration: type URL → resource name →
// resource (a go-control-plane proto).
type Resources map[string]map[string]types.Resource

// The type URLs served to waypoints.
var servedTypes = []string{resource.ListenerType, resource.ClusterType, resource.EndpointType, resource.RouteType}

// Build builds the Envoy resources of one waypoint from in, as XDS.md
// specifies. It fails, saying which service or endpoint to fix, on input
// that would give Envoy an invalid or ambiguous configuration (missing
// names, a port or VIP:port bound twice, an endpoint without a valid
// identity of the mesh's trust domain), or on a route that cannot be
// served as XDS.md §7.1 says (a backend without a cluster, zero or several
// actions, a bad regex, ...). Services without VIPs are skipped unless a
// route names them; Backends get clusters and endpoints only; an endpoint
// without a target port for a service port is left out of that port's
// endpoints.
func Build(in Input) (Resources, error) {
	b, err := newBuilder(in)
	if err != nil {
		return nil, err
	}
	return b.build(), nil
}

type builder struct {
	wp       Waypoint
	services []service
	// backends get clusters and endpoints only (XDS.md §5.2).
	backends []service
}

// service is a validated Service with its bound ports.
type service struct {
	Service
	vips  []netip.Addr
	ports []Port
	eps   []endpoint
	// routes are the Envoy routes of each HTTP port (bound services).
	routes map[uint16][]*routev3.Route
}

type endpoint struct {
	Endpoint
	addr netip.Addr
	id   identity.ID
}

func newBuilder(in Input) (*builder, error) {
	wp := in.Waypoint
	if wp.Namespace == "" || wp.Name == "" {
		return nil, errors.New("waypointxds: the waypoint's namespace and name are required")
	}
	if wp.ClusterDomain == "" {
		wp.ClusterDomain = defaultDomain
	}
	if wp.TrustDomain == "" {
		wp.TrustDomain = identity.DefaultTrustDomain
	}
	b := &builder{wp: wp}
	var errs []error
	hosts := map[string]string{}
	bound := map[netip.AddrPort]string{}
	// headless are bound services without a VIP: they get nothing unless
	// a route names them; then they are backends.
	var headless []service
	for _, s := range in.Services {
		svc, err := b.service(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(svc.vips) == 0 {
			headless = append(headless, svc)
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		if other, dup := hosts[svc.Hostname]; dup {
			errs = append(errs, fmt.Errorf("waypointxds: services %s and %s both have hostname %s", other, key, svc.Hostname))
			continue
		}
		hosts[svc.Hostname] = key
		clash := false
		for _, v := range svc.vips {
			for _, p := range svc.ports {
				ap := netip.AddrPortFrom(v, p.Port)
				if other, dup := bound[ap]; dup {
					errs = append(errs, fmt.Errorf("waypointxds: services %s and %s both bind %s: a VIP:port can lead to one service only", other, key, ap))
					clash = true
				}
				bound[ap] = key
			}
		}
		if !clash {
			b.services = append(b.services, svc)
		}
	}
	// Backends: services routes send to that are not bound (by hostname).
	pool := map[string]service{}
	for _, s := range in.Backends {
		svc, err := b.service(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("backend: %w", err))
			continue
		}
		key := svc.Namespace + "/" + svc.Name
		if _, isBound := hosts[svc.Hostname]; isBound {
			continue // bound: its own clusters serve
		}
		if other, dup := pool[svc.Hostname]; dup {
			errs = append(errs, fmt.Errorf("waypointxds: backends %s/%s and %s both have hostname %s", other.Namespace, other.Name, key, svc.Hostname))
			continue
		}
		pool[svc.Hostname] = svc
		b.backends = append(b.backends, svc)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, svc := range headless {
		_, isBound := hosts[svc.Hostname]
		if _, dup := pool[svc.Hostname]; !dup && !isBound {
			pool[svc.Hostname] = svc
		}
	}
	// Routes, and which headless services they name.
	ports := map[Backend]bool{}
	for _, s := range b.services {
		for _, p := range s.ports {
			ports[Backend{Hostname: s.Hostname, Port: p.Port}] = true
		}
	}
	for _, s := range pool {
		for _, p := range s.ports {
			ports[Backend{Hostname: s.Hostname, Port: p.Port}] = true
		}
	}
	used := map[string]bool{}
	known := func(be Backend) bool {
		used[be.Hostname] = true
		return ports[Backend{Hostname: be.Hostname, Port: be.Port}]
	}
	for i := range b.services {
		s := &b.services[i]
		s.routes = map[uint16][]*routev3.Route{}
		for _, p := range s.ports {
			if len(p.Routes) == 0 {
				if p.protocol().IsHTTP() {
					s.routes[p.Port] = []*routev3.Route{defaultRoute(ClusterName(s.Hostname, p.Port))}
				}
				continue
			}
			rs, err := routes(*s, p, known)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			s.routes[p.Port] = rs
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, svc := range headless {
		if used[svc.Hostname] && pool[svc.Hostname].Name == svc.Name && pool[svc.Hostname].Namespace == svc.Namespace {
			b.backends = append(b.backends, svc)
		}
	}
	slices.SortFunc(b.services, func(a, c service) int { return strings.Compare(a.Hostname, c.Hostname) })
	slices.SortFunc(b.backends, func(a, c service) int { return strings.Compare(a.Hostname, c.Hostname) })
	return b, nil
}

// service validates s.
func (b *builder) service(s Service) (service, error) {
	key := s.Namespace + "/" + s.Name
	if s.Namespace == "" || s.Name == "" {
		return service{}, fmt.Errorf("waypointxds: service %q: namespace and name are required", key)
	}
	if s.Hostname == "" {
		s.Hostname = s.Name + "." + s.Namespace + ".svc." + b.wp.ClusterDomain
	}
	out := service{Service: s}
	for _, v := range s.VIPs {
		if !v.IsValid() {
			return service{}, fmt.Errorf("waypointxds: service %s: a VIP is not a valid IP address", key)
		}
		v = v.Unmap()
		if !slices.Contains(out.vips, v) {
			out.vips = append(out.vips, v)
		}
	}
	slices.SortFunc(out.vips, netip.Addr.Compare)
	for _, p := range s.Ports {
		if p.Port == 0 {
			return service{}, fmt.Errorf("waypointxds: service %s: port %q has number 0", key, p.Name)
		}
		if !p.protocol().valid() {
			return service{}, fmt.Errorf("waypointxds: service %s port %d: unknown protocol %q (use tcp, http, http2 or grpc)", key, p.Port, p.Protocol)
		}
		if slices.ContainsFunc(out.ports, func(q Port) bool { return q.Port == p.Port }) {
			return service{}, fmt.Errorf("waypointxds: service %s: port %d is listed twice", key, p.Port)
		}
		if err := p.Backend.validate(); err != nil {
			return service{}, fmt.Errorf("waypointxds: service %s port %d: backend policy: %w", key, p.Port, err)
		}
		out.ports = append(out.ports, p)
	}
	slices.SortFunc(out.ports, func(a, c Port) int { return cmp.Compare(a.Port, c.Port) })
	for _, pol := range s.Policies {
		if probs := ValidatePolicy(pol); len(probs) > 0 {
			return service{}, fmt.Errorf("waypointxds: service %s: AuthorizationPolicy %s/%s: %s", key, pol.Namespace, pol.Name, strings.Join(probs, "; "))
		}
	}
	out.Policies = slices.Clone(s.Policies)
	slices.SortFunc(out.Policies, func(a, c Policy) int {
		return cmp.Or(strings.Compare(a.Namespace, c.Namespace), strings.Compare(a.Name, c.Name))
	})
	seen := map[netip.Addr]bool{}
	for i, e := range s.Endpoints {
		if len(e.Addresses) == 0 || !e.Addresses[0].IsValid() {
			return service{}, fmt.Errorf("waypointxds: service %s endpoint %d (%s/%s): no valid pod IP", key, i, e.Namespace, e.Name)
		}
		var id identity.ID
		if !e.Plaintext {
			var err error
			if id, err = identity.Parse(e.Identity); err != nil {
				return service{}, fmt.Errorf("waypointxds: service %s endpoint %s: its identity is needed to verify its ztunnel: %w", key, e.Addresses[0], err)
			}
			if id.TrustDomain != b.wp.TrustDomain {
				return service{}, fmt.Errorf("waypointxds: service %s endpoint %s: identity %s is not in the mesh trust domain %q", key, e.Addresses[0], e.Identity, b.wp.TrustDomain)
			}
		}
		a := e.Addresses[0].Unmap()
		if seen[a] {
			continue
		}
		seen[a] = true
		out.eps = append(out.eps, endpoint{Endpoint: e, addr: a, id: id})
	}
	slices.SortFunc(out.eps, func(a, c endpoint) int { return a.addr.Compare(c.addr) })
	return out, nil
}

func (b *builder) build() Resources {
	r := Resources{}
	for _, t := range servedTypes {
		r[t] = map[string]types.Resource{}
	}
	add := func(t string, name string, m types.Resource) { r[t][name] = m }

	add(resource.ListenerType, ListenerConnectTerminate, b.connectTerminate())
	add(resource.ListenerType, ListenerMainInternal, b.mainInternal())
	add(resource.ListenerType, ListenerConnectOriginate, connectOriginate())
	add(resource.ClusterType, ListenerMainInternal, mainInternalCluster())
	add(resource.ClusterType, ListenerConnectOriginate, b.connectOriginateCluster())
	add(resource.ClusterType, BlackHoleCluster, blackHoleCluster())
	for _, s := range b.services {
		for _, p := range s.ports {
			name := ClusterName(s.Hostname, p.Port)
			add(resource.ClusterType, name, outboundCluster(s, p))
			add(resource.EndpointType, name, loadAssignment(s, p))
			if p.protocol().IsHTTP() {
				add(resource.RouteType, RouteName(s.Hostname, p.Port), routeConfig(s, p))
			}
		}
	}
	for _, s := range b.backends {
		for _, p := range s.ports {
			name := ClusterName(s.Hostname, p.Port)
			add(resource.ClusterType, name, outboundCluster(s, p))
			add(resource.EndpointType, name, loadAssignment(s, p))
		}
	}
	return r
}

// --- listeners ---

func (b *builder) connectTerminate() *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:    ListenerConnectTerminate,
		Address: socketAddress("0.0.0.0", HBONEPort),
		FilterChains: []*listenerv3.FilterChain{{
			TransportSocket: transportSocket(wellknown.TransportSocketTLS, &tlsv3.DownstreamTlsContext{
				CommonTlsContext:         commonTLS(b.wp.TrustDomain),
				RequireClientCertificate: wrapperspb.Bool(true),
			}),
			Filters: []*listenerv3.Filter{networkFilter(wellknown.HTTPConnectionManager, &hcmv3.HttpConnectionManager{
				StatPrefix:           ListenerConnectTerminate,
				CodecType:            hcmv3.HttpConnectionManager_HTTP2,
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{AllowConnect: true},
				UpgradeConfigs:       []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}},
				// Tunnels live as long as their connection: no idle cut.
				StreamIdleTimeout: durationpb.New(0),
				RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
					Name: ListenerConnectTerminate,
					VirtualHosts: []*routev3.VirtualHost{{
						Name:    "connect",
						Domains: []string{"*"},
						Routes: []*routev3.Route{{
							Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}},
							Action: &routev3.Route_Route{Route: &routev3.RouteAction{
								ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ListenerMainInternal},
								UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{
									UpgradeType:   "CONNECT",
									ConnectConfig: &routev3.RouteAction_UpgradeConfig_ConnectConfig{},
								}},
							}},
						}},
					}},
				}},
				HttpFilters: []*hcmv3.HttpFilter{
					httpFilter(setFilterState, &setfsv3.Config{OnRequestHeaders: []*fsvaluev3.FilterStateValue{
						filterState(originalDstLocal, "", "%REQ(:AUTHORITY)%", fsvaluev3.FilterStateValue_ONCE),
						filterState(originalDstRemote, "", "%DOWNSTREAM_REMOTE_ADDRESS%", fsvaluev3.FilterStateValue_TRANSITIVE),
						filterState(FilterStatePeerPrincipal, filterStateString, "%DOWNSTREAM_PEER_URI_SAN%", fsvaluev3.FilterStateValue_TRANSITIVE),
						filterState(FilterStateLocalPrincipal, filterStateString, "%DOWNSTREAM_LOCAL_URI_SAN%", fsvaluev3.FilterStateValue_TRANSITIVE),
					}}),
					httpFilter(wellknown.Router, &routerv3.Router{}),
				},
			})},
		}},
	}
	if slices.ContainsFunc(b.wp.Addresses, func(a netip.Addr) bool { return a.Unmap().Is6() }) {
		l.AdditionalAddresses = []*listenerv3.AdditionalAddress{{Address: socketAddress("::", HBONEPort)}}
	}
	return l
}

func (b *builder) mainInternal() *listenerv3.Listener {
	l := internalListener(ListenerMainInternal, corev3.TrafficDirection_INBOUND)
	for _, s := range b.services {
		for _, p := range s.ports {
			l.FilterChains = append(l.FilterChains, vipChain(s, p, b.accessLogPercent()))
		}
	}
	l.DefaultFilterChain = &listenerv3.FilterChain{
		Name:    DefaultFilterChain,
		Filters: []*listenerv3.Filter{tcpProxy(DefaultFilterChain, BlackHoleCluster, nil)},
	}
	return l
}

// accessLogPercent is the waypoint's access log sampling, 0-100.
func (b *builder) accessLogPercent() uint32 {
	if b.wp.AccessLogPercent == nil {
		return DefaultAccessLogPercent
	}
	return min(*b.wp.AccessLogPercent, 100)
}

func vipChain(s service, p Port, logPercent uint32) *listenerv3.FilterChain {
	proto := p.protocol()
	name := FilterChainName(s.Hostname, p.Port, proto)
	m := &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(p.Port))}
	for _, v := range s.vips {
		m.PrefixRanges = append(m.PrefixRanges, &corev3.CidrRange{AddressPrefix: v.String(), PrefixLen: wrapperspb.UInt32(uint32(v.BitLen()))})
	}
	fc := &listenerv3.FilterChain{Name: name, FilterChainMatch: m}
	if !proto.IsHTTP() {
		for _, r := range networkRBACFilters(name, s.Policies) {
			fc.Filters = append(fc.Filters, networkFilter(FilterNetworkRBAC, r))
		}
		fc.Filters = append(fc.Filters, tcpProxy(name, ClusterName(s.Hostname, p.Port), nil))
		return fc
	}
	fc.Filters = []*listenerv3.Filter{networkFilter(wellknown.HTTPConnectionManager, &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: RouteName(s.Hostname, p.Port),
			ConfigSource:    adsConfig(),
		}},
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE,
		UseRemoteAddress:         wrapperspb.Bool(false),
		// x-request-id: kept when the request has one, else generated;
		// trace headers per the tracing provider (XDS.md §16).
		GenerateRequestId:         wrapperspb.Bool(true),
		PreserveExternalRequestId: true,
		Tracing:                   tracing(),
		// RBAC first (XDS.md §12), then fault injection: the routes say
		// what (XDS.md §15); the router last.
		HttpFilters: append(httpRBACFilters(s.Policies),
			httpFilter(FaultFilter, &faultv3.HTTPFault{}),
			httpFilter(wellknown.Router, &routerv3.Router{}),
		),
		AccessLog: accessLog(s.Hostname, logPercent),
	})}
	return fc
}

func connectOriginate() *listenerv3.Listener {
	l := internalListener(ListenerConnectOriginate, corev3.TrafficDirection_OUTBOUND)
	l.FilterChains = []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{tcpProxy(ListenerConnectOriginate, ListenerConnectOriginate, &tcpproxyv3.TcpProxy_TunnelingConfig{
			Hostname: "%DOWNSTREAM_LOCAL_ADDRESS%",
			HeadersToAdd: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "Forwarded", Value: `for="%DOWNSTREAM_REMOTE_ADDRESS%"`},
			}},
		})},
	}}
	return l
}

func internalListener(name string, dir corev3.TrafficDirection) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:              name,
		ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}},
		TrafficDirection:  dir,
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       wellknown.OriginalDestination,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&origdstv3.OriginalDst{})},
		}},
	}
}

func tcpProxy(stat, cluster string, tunnel *tcpproxyv3.TcpProxy_TunnelingConfig) *listenerv3.Filter {
	return networkFilter(wellknown.TCPProxy, &tcpproxyv3.TcpProxy{
		StatPrefix:       stat,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		TunnelingConfig:  tunnel,
	})
}

// --- clusters ---

func mainInternalCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 ListenerMainInternal,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: ListenerMainInternal,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: internalAddress(ListenerMainInternal, "")}},
			}}}},
		},
		TransportSocket: internalUpstreamSocket(),
	}
}

func (b *builder) connectOriginateCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 ListenerConnectOriginate,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
			UpstreamPortOverride: wrapperspb.UInt32(HBONEPort),
		}},
		TypedExtensionProtocolOptions: httpOptions(ProtocolHTTP2, 0),
		TransportSocket: transportSocket(wellknown.TransportSocketTLS, &tlsv3.UpstreamTlsContext{
			CommonTlsContext: commonTLS(b.wp.TrustDomain),
		}),
	}
}

func blackHoleCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 BlackHoleCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: BlackHoleCluster},
	}
}

func outboundCluster(s service, p Port) *clusterv3.Cluster {
	name := ClusterName(s.Hostname, p.Port)
	thresholds := &clusterv3.CircuitBreakers_Thresholds{
		Priority: corev3.RoutingPriority_DEFAULT,
		// The retry budget (XDS.md §5.2): retries in flight at most
		// max(3, 20% of the requests in flight).
		RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: retryBudgetPercent},
			MinRetryConcurrency: wrapperspb.UInt32(retryBudgetMin),
		},
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig(), ServiceName: name},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		// Never send to unhealthy endpoints, even when most are unhealthy
		// (Envoy's default panic threshold, 50%, would): the Go waypoint
		// behaves this way, and an Envoy must behave the same. With
		// outlier detection this also keeps ejected endpoints out (as
		// Istio does).
		CommonLbConfig:  &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
		TransportSocket: internalUpstreamSocket(MetadataOriginalDst, MetadataTunnel),
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{thresholds}},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataAmbit: {Fields: map[string]*structpb.Value{
			"service":   structpb.NewStringValue(s.Hostname),
			"name":      structpb.NewStringValue(s.Name),
			"namespace": structpb.NewStringValue(s.Namespace),
			"port":      structpb.NewNumberValue(float64(p.Port)),
		}}}},
	}
	if b := p.Backend; b != nil {
		applyBackendSettings(c, thresholds, b)
	}
	if p.protocol().IsHTTP() {
		var perConn uint32
		if p.Backend != nil {
			perConn = p.Backend.MaxRequestsPerConnection
		}
		c.TypedExtensionProtocolOptions = httpOptions(p.protocol(), perConn)
	}
	return c
}

// applyBackendSettings sets the fields of cluster c (and its circuit
// breaker thresholds t) a BackendPolicy decides (XDS.md §14), except max
// requests per connection (httpOptions).
func applyBackendSettings(c *clusterv3.Cluster, t *clusterv3.CircuitBreakers_Thresholds, b *BackendSettings) {
	optional := func(v uint32) *wrapperspb.UInt32Value {
		if v == 0 {
			return nil
		}
		return wrapperspb.UInt32(v)
	}
	t.MaxConnections = optional(b.MaxConnections)
	t.MaxPendingRequests = optional(b.MaxPendingRequests)
	t.MaxRequests = optional(b.MaxRequests)
	if b.ConnectTimeout > 0 {
		c.ConnectTimeout = durationpb.New(b.ConnectTimeout)
	}
	if o := b.Outlier; o != nil {
		od := &clusterv3.OutlierDetection{
			// Ejection on consecutive errors only, never on success rate.
			EnforcingSuccessRate: wrapperspb.UInt32(0),
			// Envoy counts consecutive 5xx by default (5, enforced): off
			// unless asked for.
			EnforcingConsecutive_5Xx: wrapperspb.UInt32(0),
		}
		if o.Consecutive5xx > 0 {
			od.Consecutive_5Xx = wrapperspb.UInt32(o.Consecutive5xx)
			od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(100)
		}
		if o.ConsecutiveGatewayErrors > 0 {
			od.ConsecutiveGatewayFailure = wrapperspb.UInt32(o.ConsecutiveGatewayErrors)
			od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
		}
		if o.Interval > 0 {
			od.Interval = durationpb.New(o.Interval)
		}
		if o.BaseEjectionTime > 0 {
			od.BaseEjectionTime = durationpb.New(o.BaseEjectionTime)
		}
		if o.MaxEjectionPercent != nil {
			od.MaxEjectionPercent = wrapperspb.UInt32(*o.MaxEjectionPercent)
		}
		c.OutlierDetection = od
		c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: 0}
	}
	switch b.LB {
	case LBLeastRequest, LBEWMA:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		if b.ChoiceCount > 0 {
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				ChoiceCount: wrapperspb.UInt32(b.ChoiceCount),
			}}
		}
		if b.LB == LBEWMA {
			c.Metadata.FilterMetadata[MetadataAmbit].Fields[MetadataLBAlgorithm] = structpb.NewStringValue(string(LBEWMA))
		}
	}
}

// validate reports settings Envoy would refuse or that mean nothing (nil
// is valid).
func (b *BackendSettings) validate() error {
	if b == nil {
		return nil
	}
	switch b.LB {
	case "", LBRoundRobin, LBLeastRequest, LBEWMA:
	default:
		return fmt.Errorf("unknown load-balancing algorithm %q (use RoundRobin, LeastRequest or EWMA)", b.LB)
	}
	if b.ChoiceCount > 0 && (b.LB != LBLeastRequest && b.LB != LBEWMA || b.ChoiceCount < 2) {
		return fmt.Errorf("choice count %d needs LeastRequest or EWMA and at least 2", b.ChoiceCount)
	}
	if b.ConnectTimeout < 0 {
		return errors.New("negative connect timeout")
	}
	if o := b.Outlier; o != nil {
		if o.Consecutive5xx == 0 && o.ConsecutiveGatewayErrors == 0 {
			return errors.New("outlier detection needs consecutive 5xx or gateway errors")
		}
		if o.Interval < 0 || o.BaseEjectionTime < 0 {
			return errors.New("negative outlier detection interval or base ejection time")
		}
		if o.MaxEjectionPercent != nil && *o.MaxEjectionPercent > 100 {
			return fmt.Errorf("max ejection percent %d is over 100", *o.MaxEjectionPercent)
		}
	}
	return nil
}

// httpOptions returns the upstream HTTP protocol options for protocol p:
// HTTP/1.1 for http, HTTP/2 otherwise; with maxPerConn > 0, at most that
// many requests per upstream connection.
func httpOptions(p Protocol, maxPerConn uint32) map[string]*anypb.Any {
	e := &httpupv3.HttpProtocolOptions_ExplicitHttpConfig{}
	if p == ProtocolHTTP {
		e.ProtocolConfig = &httpupv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}
	} else {
		e.ProtocolConfig = &httpupv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	}
	o := &httpupv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpupv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: e},
	}
	if maxPerConn > 0 {
		o.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(maxPerConn)}
	}
	return map[string]*anypb.Any{httpOptionsKey: mustAny(o)}
}

// --- endpoints ---

// targetPort returns e's target port for service port p (0: none).
func (e endpoint) targetPort(p Port) uint16 {
	if t, ok := e.TargetPorts[p.Port]; ok {
		return t
	}
	return p.TargetPort
}

func loadAssignment(s service, p Port) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: ClusterName(s.Hostname, p.Port)}
	var lbs []*endpointv3.LbEndpoint
	for _, e := range s.eps {
		tp := e.targetPort(p)
		if tp == 0 {
			continue
		}
		lbs = append(lbs, lbEndpoint(e, tp))
	}
	if len(lbs) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	}
	return cla
}

func lbEndpoint(e endpoint, targetPort uint16) *endpointv3.LbEndpoint {
	dst := netip.AddrPortFrom(e.addr, targetPort).String()
	tunnel := netip.AddrPortFrom(e.addr, HBONEPort).String()
	health := corev3.HealthStatus_HEALTHY
	if !e.Healthy {
		health = corev3.HealthStatus_UNHEALTHY
	}
	ambit := map[string]*structpb.Value{}
	for k, v := range map[string]string{"node": e.Node, "workload": e.Name, "namespace": e.Namespace} {
		if v != "" {
			ambit[k] = structpb.NewStringValue(v)
		}
	}
	if e.Plaintext {
		// Outside the mesh: the pod itself, over the cluster's transport
		// socket (internal_upstream around raw_buffer; nothing to pass
		// to an internal listener for a socket address).
		return &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: e.addr.String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(targetPort)}}}},
			}},
			HealthStatus: health,
			Metadata:     &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataAmbit: {Fields: ambit}}},
		}
	}
	ambit["identity"] = structpb.NewStringValue(e.id.String())
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: internalAddress(ListenerConnectOriginate, dst),
		}},
		HealthStatus: health,
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			MetadataOriginalDst: {Fields: map[string]*structpb.Value{"local": structpb.NewStringValue(dst)}},
			MetadataTunnel: {Fields: map[string]*structpb.Value{
				"address":     structpb.NewStringValue(tunnel),
				"destination": structpb.NewStringValue(dst),
			}},
			MetadataAmbit: {Fields: ambit},
		}},
	}
}

// --- routes ---

func routeConfig(s service, p Port) *routev3.RouteConfiguration {
	name := RouteName(s.Hostname, p.Port)
	return &routev3.RouteConfiguration{
		Name:             name,
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: Domains(s.Hostname, s.Name, s.Namespace, s.vips, p.Port),
			Routes:  s.routes[p.Port],
		}},
	}
}

// --- small pieces ---

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func internalAddress(listener, id string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
		AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: listener},
		EndpointId:           id,
	}}}
}

// internalUpstreamSocket wraps raw_buffer, passing the named host metadata
// namespaces to the internal listener.
func internalUpstreamSocket(hostMetadata ...string) *corev3.TransportSocket {
	t := &iupv3.InternalUpstreamTransport{
		TransportSocket: transportSocket(wellknown.TransportSocketRawBuffer, &rawbufv3.RawBuffer{}),
	}
	for _, n := range hostMetadata {
		t.PassthroughMetadata = append(t.PassthroughMetadata, &iupv3.InternalUpstreamTransport_MetadataValueSource{
			Kind: &metadatav3.MetadataKind{Kind: &metadatav3.MetadataKind_Host_{Host: &metadatav3.MetadataKind_Host{}}},
			Name: n,
		})
	}
	return transportSocket(internalUpstream, t)
}

func commonTLS(trustDomain string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
		AlpnProtocols:                  []string{"h2"},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: SecretDefault, SdsConfig: sdsConfig()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + trustDomain + "/"}},
				}},
			},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: SecretRootCA, SdsConfig: sdsConfig()},
		}},
	}
}

// sdsConfig is the (Envoy-valid) source of the SDS secrets; the Go
// waypoint resolves the names locally (XDS.md §3).
func sdsConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: SDSCluster},
			}}},
		}},
	}
}

func adsConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func filterState(key, factory, format string, share fsvaluev3.FilterStateValue_SharedWithUpstream) *fsvaluev3.FilterStateValue {
	return &fsvaluev3.FilterStateValue{
		Key:        &fsvaluev3.FilterStateValue_ObjectKey{ObjectKey: key},
		FactoryKey: factory,
		Value: &fsvaluev3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: format},
			}},
		}},
		SharedWithUpstream: share,
	}
}

func transportSocket(name string, m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: name, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(m)}}
}

func networkFilter(name string, m proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)}}
}

func httpFilter(name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(m)}}
}

// mustAny packs m. Packing only fails for a message that cannot be
// encoded, which the builder never constructs.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("waypointxds: packing %T: %v", m, err))
	}
	return a
}
