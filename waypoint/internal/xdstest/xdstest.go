// Package xdstest builds, for tests, the Envoy resources the control plane
// serves a waypoint, shaped exactly as waypoint/XDS.md §4–§7 and §10
// describe them. It stands in for controlplane/internal/waypointxds (another
// module) and is imported only by tests.
package xdstest

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	commonsfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/set_filter_state/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	sfsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/set_filter_state/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	internalv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/internal_upstream/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Service is one service port bound to the waypoint.
type Service struct {
	Name, Namespace string
	// Hostname defaults to <name>.<namespace>.svc.cluster.local.
	Hostname string
	VIPs     []netip.Addr
	Port     uint16
	// Protocol is http, http2, grpc or tcp.
	Protocol  string
	Endpoints []Endpoint
	// HTTPFilters go before the router (RBAC filters, XDS.md §12).
	HTTPFilters []*hcmv3.HttpFilter
	// LogPercent, when set, samples the access log (XDS.md §13).
	LogPercent *uint32
}

// Endpoint is one backing pod.
type Endpoint struct {
	// Tunnel is the ztunnel's HBONE address (podIP:15008 in a cluster).
	Tunnel netip.AddrPort
	// Destination is podIP:targetPort.
	Destination netip.AddrPort
	Identity    string
	Workload    string
	Namespace   string
	Node        string
	Unhealthy   bool
}

// Host returns the service hostname.
func (s Service) Host() string {
	if s.Hostname != "" {
		return s.Hostname
	}
	return s.Name + "." + s.Namespace + ".svc.cluster.local"
}

// ClusterName is outbound|<port>||<hostname>.
func (s Service) ClusterName() string { return fmt.Sprintf("outbound|%d||%s", s.Port, s.Host()) }

// RouteName is <hostname>:<port>.
func (s Service) RouteName() string { return s.Host() + ":" + strconv.Itoa(int(s.Port)) }

// ChainName is inbound-vip|<port>|<protocol>|<hostname>.
func (s Service) ChainName() string {
	return fmt.Sprintf("inbound-vip|%d|%s|%s", s.Port, s.Protocol, s.Host())
}

// IsHTTP reports whether the service is an HTTP kind.
func (s Service) IsHTTP() bool { return s.Protocol != "tcp" }

// Any marshals m into an Any, deterministically (map fields such as a
// json_format or RBAC policies in a stable order, as protojson and the
// control plane write them); it panics on error (test fixtures).
func Any(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return a
}

var sdsConfig = &corev3.ConfigSource{
	ResourceApiVersion: corev3.ApiVersion_V3,
	ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
		ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
		GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"}}}},
	}},
}

var adsConfig = &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
	ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}

// CommonTLS is the TLS context of connect_terminate and connect_originate
// (XDS.md §3).
func CommonTLS(td string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		AlpnProtocols:                  []string{"h2"},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default", SdsConfig: sdsConfig}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://" + td + "/"}},
			}}},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: sdsConfig},
		}},
	}
}

func typed(name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: Any(m)}}
}

func netFilter(name string, m proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: Any(m)}}
}

func sock(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func internalAddr(listener, id string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
		AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: listener}, EndpointId: id}}}
}

func router() *hcmv3.HttpFilter { return typed("envoy.filters.http.router", &routerv3.Router{}) }

func origDst() []*listenerv3.ListenerFilter {
	return []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.original_dst",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: Any(&origdstv3.OriginalDst{})}}}
}

func filterState(key, factory, format string, shared commonsfsv3.FilterStateValue_SharedWithUpstream) *commonsfsv3.FilterStateValue {
	return &commonsfsv3.FilterStateValue{
		Key:        &commonsfsv3.FilterStateValue_ObjectKey{ObjectKey: key},
		FactoryKey: factory,
		Value: &commonsfsv3.FilterStateValue_FormatString{FormatString: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: format}}}}},
		SharedWithUpstream: shared,
	}
}

// ConnectTerminate is the HBONE server listener (§4.1).
func ConnectTerminate(td string, ipv6 bool) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:           "connect_terminate",
		CodecType:            hcmv3.HttpConnectionManager_HTTP2,
		Http2ProtocolOptions: &corev3.Http2ProtocolOptions{AllowConnect: true},
		UpgradeConfigs:       []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}},
		StreamIdleTimeout:    durationpb.New(0),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "connect_terminate",
			VirtualHosts: []*routev3.VirtualHost{{Name: "connect", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "main_internal"},
					UpgradeConfigs:   []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "CONNECT", ConnectConfig: &routev3.RouteAction_UpgradeConfig_ConnectConfig{}}},
				}},
			}}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			typed("envoy.filters.http.set_filter_state", &sfsv3.Config{OnRequestHeaders: []*commonsfsv3.FilterStateValue{
				filterState("envoy.filters.listener.original_dst.local_ip", "", "%REQ(:AUTHORITY)%", commonsfsv3.FilterStateValue_ONCE),
				filterState("envoy.filters.listener.original_dst.remote_ip", "", "%DOWNSTREAM_REMOTE_ADDRESS%", commonsfsv3.FilterStateValue_TRANSITIVE),
				filterState("io.istio.peer_principal", "envoy.string", "%DOWNSTREAM_PEER_URI_SAN%", commonsfsv3.FilterStateValue_TRANSITIVE),
				filterState("io.istio.local_principal", "envoy.string", "%DOWNSTREAM_LOCAL_URI_SAN%", commonsfsv3.FilterStateValue_TRANSITIVE),
			}}),
			router(),
		},
	}
	l := &listenerv3.Listener{
		Name:    "connect_terminate",
		Address: sock("0.0.0.0", 15008),
		FilterChains: []*listenerv3.FilterChain{{
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: Any(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: CommonTLS(td)})}},
			Filters: []*listenerv3.Filter{netFilter("envoy.filters.network.http_connection_manager", hcm)},
		}},
	}
	if ipv6 {
		l.AdditionalAddresses = []*listenerv3.AdditionalAddress{{Address: sock("::", 15008)}}
	}
	return l
}

// MainInternal is the L7 internal listener with one chain per service
// (§4.2).
func MainInternal(svcs []Service) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:              "main_internal",
		ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}},
		ListenerFilters:   origDst(),
		TrafficDirection:  corev3.TrafficDirection_INBOUND,
	}
	for _, s := range svcs {
		l.FilterChains = append(l.FilterChains, Chain(s))
	}
	l.DefaultFilterChain = &listenerv3.FilterChain{Name: "blackhole", Filters: []*listenerv3.Filter{netFilter("envoy.filters.network.tcp_proxy",
		&tcpproxyv3.TcpProxy{StatPrefix: "blackhole", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "BlackHoleCluster"}})}}
	return l
}

// Chain is the main_internal filter chain of one service port.
func Chain(s Service) *listenerv3.FilterChain {
	m := &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(s.Port))}
	for _, v := range s.VIPs {
		m.PrefixRanges = append(m.PrefixRanges, &corev3.CidrRange{AddressPrefix: v.String(), PrefixLen: wrapperspb.UInt32(uint32(v.BitLen()))})
	}
	fc := &listenerv3.FilterChain{Name: s.ChainName(), FilterChainMatch: m}
	if s.IsHTTP() {
		fc.Filters = []*listenerv3.Filter{netFilter("envoy.filters.network.http_connection_manager", &hcmv3.HttpConnectionManager{
			StatPrefix:               s.ChainName(),
			CodecType:                hcmv3.HttpConnectionManager_AUTO,
			ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE,
			UseRemoteAddress:         wrapperspb.Bool(false),
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
				RouteConfigName: s.RouteName(), ConfigSource: adsConfig}},
			GenerateRequestId:         wrapperspb.Bool(true),
			PreserveExternalRequestId: true,
			Tracing:                   Tracing(),
			HttpFilters:               append(append([]*hcmv3.HttpFilter{}, s.HTTPFilters...), typed("envoy.filters.http.fault", &faultv3.HTTPFault{}), router()),
			AccessLog:                 AccessLog(s.Host(), s.LogPercent),
		})}
	} else {
		fc.Filters = []*listenerv3.Filter{netFilter("envoy.filters.network.tcp_proxy", &tcpproxyv3.TcpProxy{
			StatPrefix: s.ChainName(), ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: s.ClusterName()}})}
	}
	return fc
}

// AccessLogFields are the JSON access log fields of XDS.md §13 (name →
// command operator), besides the literal destination_service.
var AccessLogFields = map[string]string{
	"start_time":            "%START_TIME%",
	"method":                "%REQ(:METHOD)%",
	"path":                  "%REQ(:PATH)%",
	"authority":             "%REQ(:AUTHORITY)%",
	"protocol":              "%PROTOCOL%",
	"response_code":         "%RESPONSE_CODE%",
	"response_flags":        "%RESPONSE_FLAGS%",
	"response_code_details": "%RESPONSE_CODE_DETAILS%",
	"duration":              "%DURATION%",
	"bytes_received":        "%BYTES_RECEIVED%",
	"bytes_sent":            "%BYTES_SENT%",
	"upstream_host":         "%UPSTREAM_HOST%",
	"downstream_peer":       "%DOWNSTREAM_REMOTE_ADDRESS%",
	"source_principal":      "%FILTER_STATE(io.istio.peer_principal:PLAIN)%",
	"request_id":            "%REQ(X-REQUEST-ID)%",
	"traceparent":           "%REQ(TRACEPARENT)%",
}

// AccessLog is an HCM's access log (§13): JSON on /dev/stdout, sampled
// at *percent (nil: every request) or-ed with status >= 400.
func AccessLog(hostname string, percent *uint32) []*accesslogv3.AccessLog {
	fields := map[string]*structpb.Value{"destination_service": structpb.NewStringValue(hostname)}
	for k, v := range AccessLogFields {
		fields[k] = structpb.NewStringValue(v)
	}
	al := &accesslogv3.AccessLog{
		Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: Any(&filev3.FileAccessLog{
			Path: "/dev/stdout",
			AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: fields}},
			}},
		})},
	}
	if percent != nil && *percent < 100 {
		al.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
			Filters: []*accesslogv3.AccessLogFilter{
				{FilterSpecifier: &accesslogv3.AccessLogFilter_RuntimeFilter{RuntimeFilter: &accesslogv3.RuntimeFilter{
					RuntimeKey:               "ambit.access_log.sampling",
					PercentSampled:           &typev3.FractionalPercent{Numerator: *percent, Denominator: typev3.FractionalPercent_HUNDRED},
					UseIndependentRandomness: true,
				}}},
				{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
					Comparison: &accesslogv3.ComparisonFilter{
						Op:    accesslogv3.ComparisonFilter_GE,
						Value: &corev3.RuntimeUInt32{DefaultValue: 400, RuntimeKey: "ambit.access_log.min_status"},
					},
				}}},
			},
		}}}
	}
	return []*accesslogv3.AccessLog{al}
}

// Tracing is the HCM tracing of §16: every request traced by Zipkin in
// B3 + W3C mode, spans to BlackHoleCluster.
func Tracing() *hcmv3.HttpConnectionManager_Tracing {
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: 100},
		Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: Any(&tracev3.ZipkinConfig{
			CollectorCluster: "BlackHoleCluster", CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
			TraceId_128Bit: true, SharedSpanContext: wrapperspb.Bool(false), TraceContextOption: tracev3.ZipkinConfig_USE_B3_WITH_W3C_PROPAGATION,
		})}},
	}
}

// ConnectOriginate is the internal HBONE client listener (§4.3).
func ConnectOriginate() *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:              "connect_originate",
		ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}},
		ListenerFilters:   origDst(),
		TrafficDirection:  corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{netFilter("envoy.filters.network.tcp_proxy", &tcpproxyv3.TcpProxy{
			StatPrefix:       "connect_originate",
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "connect_originate"},
			TunnelingConfig: &tcpproxyv3.TcpProxy_TunnelingConfig{Hostname: "%DOWNSTREAM_LOCAL_ADDRESS%",
				HeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "Forwarded", Value: `for="%DOWNSTREAM_REMOTE_ADDRESS%"`}}}},
		})}}},
	}
}

// Listeners returns the three listeners.
func Listeners(td string, svcs []Service) []*listenerv3.Listener {
	return []*listenerv3.Listener{ConnectTerminate(td, false), MainInternal(svcs), ConnectOriginate()}
}

func rawBuffer() *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: Any(&rawv3.RawBuffer{})}}
}

func internalUpstream(passthrough bool) *corev3.TransportSocket {
	iu := &internalv3.InternalUpstreamTransport{TransportSocket: rawBuffer()}
	if passthrough {
		for _, name := range []string{"envoy.filters.listener.original_dst", "tunnel"} {
			iu.PassthroughMetadata = append(iu.PassthroughMetadata, &internalv3.InternalUpstreamTransport_MetadataValueSource{
				Kind: &metadatav3.MetadataKind{Kind: &metadatav3.MetadataKind_Host_{Host: &metadatav3.MetadataKind_Host{}}}, Name: name})
		}
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.internal_upstream",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: Any(iu)}}
}

func protocolOptions(h2 bool) map[string]*anypb.Any {
	ex := &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}
	if h2 {
		ex.ProtocolConfig = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: ex}})}
}

// FixedClusters are BlackHoleCluster, main_internal and connect_originate
// (§5.1).
func FixedClusters(td string) []*clusterv3.Cluster {
	return []*clusterv3.Cluster{
		{
			Name:                 "BlackHoleCluster",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(10 * time.Second),
			LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: "BlackHoleCluster"},
		},
		{
			Name:                 "main_internal",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(10 * time.Second),
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "main_internal", Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: internalAddr("main_internal", "")}}}}}}},
			TransportSocket: internalUpstream(false),
		},
		{
			Name:                          "connect_originate",
			ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:                      clusterv3.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:                durationpb.New(10 * time.Second),
			LbConfig:                      &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UpstreamPortOverride: wrapperspb.UInt32(15008)}},
			TypedExtensionProtocolOptions: protocolOptions(true),
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
				TypedConfig: Any(&tlsv3.UpstreamTlsContext{CommonTlsContext: CommonTLS(td)})}},
		},
	}
}

// Cluster is the outbound cluster of one service port (§5.2).
func Cluster(s Service) *clusterv3.Cluster {
	md, _ := structpb.NewStruct(map[string]any{"service": s.Host(), "namespace": s.Namespace, "name": s.Name, "port": float64(s.Port)})
	c := &clusterv3.Cluster{
		Name:                 s.ClusterName(),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{ServiceName: s.ClusterName(), EdsConfig: adsConfig},
		ConnectTimeout:       durationpb.New(10 * time.Second),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		CommonLbConfig:       &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
		TransportSocket:      internalUpstream(true),
		// The retry budget: max(3, 20% of the requests in flight).
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
				BudgetPercent:       &typev3.Percent{Value: 20},
				MinRetryConcurrency: wrapperspb.UInt32(3),
			},
		}}},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"ambit": md}},
	}
	if s.IsHTTP() {
		c.TypedExtensionProtocolOptions = protocolOptions(s.Protocol != "http")
	}
	return c
}

// Clusters returns the fixed clusters and one per service.
func Clusters(td string, svcs []Service) []*clusterv3.Cluster {
	out := FixedClusters(td)
	for _, s := range svcs {
		out = append(out, Cluster(s))
	}
	return out
}

// Assignment is the ClusterLoadAssignment of one service port (§6).
func Assignment(s Service) *endpointv3.ClusterLoadAssignment {
	loc := &endpointv3.LocalityLbEndpoints{}
	for _, e := range s.Endpoints {
		health := corev3.HealthStatus_HEALTHY
		if e.Unhealthy {
			health = corev3.HealthStatus_UNHEALTHY
		}
		od, _ := structpb.NewStruct(map[string]any{"local": e.Destination.String()})
		tun, _ := structpb.NewStruct(map[string]any{"address": e.Tunnel.String(), "destination": e.Destination.String()})
		amb, _ := structpb.NewStruct(map[string]any{"identity": e.Identity, "node": e.Node, "workload": e.Workload, "namespace": e.Namespace})
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: internalAddr("connect_originate", e.Destination.String())}},
			HealthStatus:   health,
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"envoy.filters.listener.original_dst": od, "tunnel": tun, "ambit": amb}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: s.ClusterName(), Endpoints: []*endpointv3.LocalityLbEndpoints{loc}}
}

// Domains are the virtual host domains of §7, in order, ending with
// "*" (the filter chain has already chosen the service port).
func Domains(s Service) []string {
	p := ":" + strconv.Itoa(int(s.Port))
	var out []string
	seen := map[string]bool{}
	for _, h := range []string{s.Host(), s.Name, s.Name + "." + s.Namespace, s.Name + "." + s.Namespace + ".svc"} {
		if !seen[h] {
			seen[h] = true
			out = append(out, h, h+p)
		}
	}
	for _, v := range s.VIPs {
		h := v.String()
		if v.Is6() {
			h = "[" + h + "]"
		}
		out = append(out, h, h+p)
	}
	return append(out, "*")
}

// Route is the RouteConfiguration of one HTTP service port (§7).
func Route(s Service) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:             s.RouteName(),
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    s.RouteName(),
			Domains: Domains(s),
			Routes: []*routev3.Route{{
				Name:  "default",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: s.ClusterName()},
					Timeout:          durationpb.New(0),
					RetryPolicy:      DefaultRetryPolicy(),
				}},
			}},
		}},
	}
}

// DefaultRetryPolicy is the retry policy of a route without an HTTPRoute
// retry (§7.1).
func DefaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:              "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		NumRetries:           wrapperspb.UInt32(2),
		RetriableStatusCodes: []uint32{503},
	}
}

// Example returns the service of XDS.md §10: web.demo, VIPs 10.96.0.10 and
// fd00:10:96::a, port 80 http → 8080, endpoints 10.244.1.5 and 10.244.2.7.
func Example() Service {
	ep := func(ip, node, wl string) Endpoint {
		a := netip.MustParseAddr(ip)
		return Endpoint{Tunnel: netip.AddrPortFrom(a, 15008), Destination: netip.AddrPortFrom(a, 8080),
			Identity: "spiffe://cluster.local/ns/demo/sa/web", Workload: wl, Namespace: "demo", Node: node}
	}
	return Service{
		Name: "web", Namespace: "demo", Port: 80, Protocol: "http",
		VIPs:      []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:10:96::a")},
		Endpoints: []Endpoint{ep("10.244.1.5", "node-1", "web-1"), ep("10.244.2.7", "node-2", "web-2")},
	}
}
