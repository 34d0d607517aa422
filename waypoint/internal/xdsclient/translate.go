package xdsclient

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/model"
)

// Fixed names of the contract (XDS.md).
const (
	ListenerConnectTerminate = "connect_terminate"
	ListenerMainInternal     = "main_internal"
	ListenerConnectOriginate = "connect_originate"
	// ClusterBlackHole is the cluster of main_internal's default chain: a
	// CONNECT to an address no chain matches is refused.
	ClusterBlackHole = "BlackHoleCluster"

	// MetadataTunnel, MetadataAmbit: endpoint and cluster metadata
	// namespaces (XDS.md §5.2, §6).
	MetadataTunnel = "tunnel"
	MetadataAmbit  = "ambit"
	// MetadataOriginalDst is the endpoint metadata the internal listener's
	// original_dst filter reads (XDS.md §6).
	MetadataOriginalDst = "envoy.filters.listener.original_dst"

	// DefaultConnectTimeout is Envoy's default connect_timeout.
	DefaultConnectTimeout = 5 * time.Second
)

// Filter and extension names the waypoint understands.
const (
	filterHCM            = "envoy.filters.network.http_connection_manager"
	filterTCPProxy       = "envoy.filters.network.tcp_proxy"
	filterRouter         = "envoy.filters.http.router"
	filterSetFilterState = "envoy.filters.http.set_filter_state"
	socketTLS            = "envoy.transport_sockets.tls"
	socketInternal       = "envoy.transport_sockets.internal_upstream"
	httpProtocolOptions  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// Listener is what the waypoint takes from one accepted Listener.
type Listener struct {
	Name string
	// Chains are main_internal's filter chains (nil for the others).
	Chains []*model.Chain
	// DefaultCluster is the cluster of main_internal's default chain
	// (BlackHoleCluster), empty without one.
	DefaultCluster string
}

// RouteNames returns the RDS names the listener references, sorted.
func (l Listener) RouteNames() []string {
	var out []string
	for _, c := range l.Chains {
		if c.RouteName != "" && !slices.Contains(out, c.RouteName) {
			out = append(out, c.RouteName)
		}
	}
	slices.Sort(out)
	return out
}

// Cluster is what the waypoint takes from one accepted Cluster.
type Cluster struct {
	// Fixed is true for main_internal and connect_originate, which the Go
	// waypoint does not route through (it checks them, then ignores them).
	Fixed bool
	// EDSName is the ClusterLoadAssignment name (eds service_name, or the
	// cluster name), empty for fixed clusters.
	EDSName string
	// Cluster is the model cluster without endpoints (nil when Fixed).
	Cluster *model.Cluster
}

// ParseListener checks one Listener against XDS.md §4 and returns what the
// waypoint uses of it. Its error says why the resource is unusable.
func ParseListener(l *listenerv3.Listener, trustDomain string) (Listener, error) {
	if err := l.Validate(); err != nil {
		return Listener{}, fmt.Errorf("invalid Envoy listener: %w", err)
	}
	for field, set := range map[string]bool{
		"filter_chain_matcher": l.GetFilterChainMatcher() != nil,
		"api_listener":         l.GetApiListener() != nil,
		"udp_listener_config":  l.GetUdpListenerConfig() != nil,
		"fcds_config":          l.GetFcdsConfig() != nil,
		"use_original_dst":     l.GetUseOriginalDst().GetValue(),
	} {
		if set {
			return Listener{}, fmt.Errorf("listener %q sets %s, which the Go waypoint does not support", l.GetName(), field)
		}
	}
	if l.GetDefaultFilterChain() != nil && l.GetName() != ListenerMainInternal {
		return Listener{}, fmt.Errorf("listener %q sets default_filter_chain, which the Go waypoint does not support", l.GetName())
	}
	switch l.GetName() {
	case ListenerConnectTerminate:
		return Listener{Name: l.GetName()}, checkConnectTerminate(l, trustDomain)
	case ListenerMainInternal:
		chains, err := parseMainInternal(l)
		if err != nil {
			return Listener{}, err
		}
		def, err := parseDefaultChain(l.GetDefaultFilterChain())
		return Listener{Name: l.GetName(), Chains: chains, DefaultCluster: def}, err
	case ListenerConnectOriginate:
		return Listener{Name: l.GetName()}, checkConnectOriginate(l)
	}
	return Listener{}, fmt.Errorf("listener %q is not one of %s, %s, %s (XDS.md §4: always exactly these three)",
		l.GetName(), ListenerConnectTerminate, ListenerMainInternal, ListenerConnectOriginate)
}

// checkConnectTerminate checks the HBONE server listener: the Go waypoint
// serves HBONE itself on --hbone-addr, so this only verifies that the
// resource says what the waypoint does (mTLS with required client
// certificates of this trust domain, CONNECT to main_internal).
func checkConnectTerminate(l *listenerv3.Listener, td string) error {
	if l.GetAddress().GetSocketAddress() == nil {
		return errors.New("listener connect_terminate has no socket address")
	}
	if len(l.GetFilterChains()) != 1 {
		return fmt.Errorf("listener connect_terminate has %d filter chains, want 1", len(l.GetFilterChains()))
	}
	fc := l.GetFilterChains()[0]
	ts := fc.GetTransportSocket()
	if ts == nil || ts.GetName() != socketTLS {
		return fmt.Errorf("listener connect_terminate: transport_socket must be %s (HBONE is mTLS)", socketTLS)
	}
	var dtc tlsv3.DownstreamTlsContext
	if err := unmarshalAny(ts.GetTypedConfig(), &dtc); err != nil {
		return fmt.Errorf("listener connect_terminate: %w", err)
	}
	if !dtc.GetRequireClientCertificate().GetValue() {
		return errors.New("listener connect_terminate: require_client_certificate must be true (the source principal is the client certificate)")
	}
	if err := checkTLS(dtc.GetCommonTlsContext(), td); err != nil {
		return fmt.Errorf("listener connect_terminate: %w", err)
	}
	if len(fc.GetFilters()) != 1 || fc.GetFilters()[0].GetName() != filterHCM {
		return fmt.Errorf("listener connect_terminate: want exactly one filter %s", filterHCM)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := unmarshalAny(fc.GetFilters()[0].GetTypedConfig(), &hcm); err != nil {
		return fmt.Errorf("listener connect_terminate: %w", err)
	}
	if err := checkFields(&hcm, "listener connect_terminate: http_connection_manager"); err != nil {
		return err
	}
	if err := checkIdleTimeout(&hcm); err != nil {
		return fmt.Errorf("listener connect_terminate: %w", err)
	}
	if err := checkHTTPFilters(hcm.GetHttpFilters(), filterSetFilterState); err != nil {
		return fmt.Errorf("listener connect_terminate: %w", err)
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetMatch().GetConnectMatcher() != nil && r.GetRoute().GetCluster() == ListenerMainInternal {
				return nil
			}
		}
	}
	return errors.New("listener connect_terminate: its inline route_config has no CONNECT route to cluster main_internal")
}

// checkTLS checks a common TLS context: TLS 1.3 if versions are set, ALPN
// h2 if set, and a SAN prefix (if any) equal to spiffe://<td>/.
func checkTLS(c *tlsv3.CommonTlsContext, td string) error {
	p := c.GetTlsParams()
	for _, v := range []tlsv3.TlsParameters_TlsProtocol{p.GetTlsMinimumProtocolVersion(), p.GetTlsMaximumProtocolVersion()} {
		if v != tlsv3.TlsParameters_TLS_AUTO && v != tlsv3.TlsParameters_TLSv1_3 {
			return fmt.Errorf("TLS version %s: HBONE is TLS 1.3 only", v)
		}
	}
	if a := c.GetAlpnProtocols(); len(a) > 0 && !slices.Contains(a, "h2") {
		return fmt.Errorf("ALPN %q lacks h2", a)
	}
	want := "spiffe://" + td + "/"
	for _, m := range c.GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
		if p := m.GetMatcher().GetPrefix(); p != "" && p != want {
			return fmt.Errorf("peer SAN prefix %q: this waypoint's trust domain is %q (is --trust-domain the control plane's?)", p, td)
		}
	}
	return nil
}

func checkConnectOriginate(l *listenerv3.Listener) error {
	if l.GetInternalListener() == nil {
		return errors.New("listener connect_originate must be an internal_listener")
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() != filterTCPProxy {
				return fmt.Errorf("listener connect_originate: filter %q is not supported (want %s with tunneling_config)", f.GetName(), filterTCPProxy)
			}
			var tp tcpproxyv3.TcpProxy
			if err := unmarshalAny(f.GetTypedConfig(), &tp); err != nil {
				return fmt.Errorf("listener connect_originate: %w", err)
			}
			if tp.GetTunnelingConfig() == nil {
				return errors.New("listener connect_originate: tcp_proxy has no tunneling_config (HBONE CONNECT)")
			}
		}
	}
	return nil
}

// parseMainInternal turns main_internal's filter chains into model chains
// (XDS.md §4.2).
func parseMainInternal(l *listenerv3.Listener) ([]*model.Chain, error) {
	if l.GetInternalListener() == nil {
		return nil, errors.New("listener main_internal must be an internal_listener")
	}
	var out []*model.Chain
	seen := map[string]string{} // "<prefix>|<port>" -> chain name
	for i, fc := range l.GetFilterChains() {
		ch, err := parseChain(fc)
		if err != nil {
			return nil, fmt.Errorf("listener main_internal: filter chain %d %q: %w", i, fc.GetName(), err)
		}
		for _, p := range ch.Prefixes {
			k := p.String() + "|" + strconv.Itoa(int(ch.Port))
			if other, dup := seen[k]; dup {
				return nil, fmt.Errorf("listener main_internal: filter chains %q and %q both match %s port %d", other, ch.Name, p, ch.Port)
			}
			seen[k] = ch.Name
		}
		out = append(out, ch)
	}
	slices.SortFunc(out, func(a, b *model.Chain) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, fmt.Errorf("listener main_internal: two filter chains are named %q", out[i].Name)
		}
	}
	return out, nil
}

// parseDefaultChain accepts main_internal's default chain only as the
// black hole of XDS.md §4.2 (the Go waypoint answers 400 to a CONNECT no
// chain matches) and returns its cluster.
func parseDefaultChain(fc *listenerv3.FilterChain) (string, error) {
	if fc == nil {
		return "", nil
	}
	bad := fmt.Errorf("listener main_internal: default_filter_chain %q must be a tcp_proxy to %s (the Go waypoint refuses unmatched destinations)", fc.GetName(), ClusterBlackHole)
	if fc.GetFilterChainMatch() != nil || fc.GetTransportSocket() != nil || len(fc.GetFilters()) != 1 || fc.GetFilters()[0].GetName() != filterTCPProxy {
		return "", bad
	}
	var tp tcpproxyv3.TcpProxy
	if err := unmarshalAny(fc.GetFilters()[0].GetTypedConfig(), &tp); err != nil {
		return "", fmt.Errorf("listener main_internal: default_filter_chain: %w", err)
	}
	if err := checkFields(&tp, "listener main_internal: default_filter_chain tcp_proxy"); err != nil {
		return "", err
	}
	if tp.GetCluster() != ClusterBlackHole || tp.GetTunnelingConfig() != nil {
		return "", bad
	}
	return ClusterBlackHole, nil
}

// parseChainName splits inbound-vip|<port>|<proto>|<host> (or
// inbound-pod|<port>|<proto>|<podIP>).
func parseChainName(name string) (port uint16, p model.Protocol, host string, err error) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 || (parts[0] != "inbound-vip" && parts[0] != "inbound-pod") || parts[3] == "" {
		return 0, "", "", fmt.Errorf("name must be inbound-vip|<port>|<protocol>|<hostname> (XDS.md §4.2)")
	}
	n, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil || n == 0 {
		return 0, "", "", fmt.Errorf("name: bad port %q", parts[1])
	}
	p = model.Protocol(parts[2])
	if !p.Valid() {
		return 0, "", "", fmt.Errorf("name: protocol %q is not http, http2, grpc or tcp", parts[2])
	}
	return uint16(n), p, parts[3], nil
}

func parseChain(fc *listenerv3.FilterChain) (*model.Chain, error) {
	port, proto, host, err := parseChainName(fc.GetName())
	if err != nil {
		return nil, err
	}
	ch := &model.Chain{Name: fc.GetName(), Service: host, Protocol: proto}
	m := fc.GetFilterChainMatch()
	if err := checkFields(m, "filter_chain_match"); err != nil {
		return nil, err
	}
	if m.GetDestinationPort() == nil || m.GetDestinationPort().GetValue() != uint32(port) {
		return nil, fmt.Errorf("filter_chain_match.destination_port %d differs from the port %d in the name", m.GetDestinationPort().GetValue(), port)
	}
	ch.Port = port
	if len(m.GetPrefixRanges()) == 0 {
		return nil, errors.New("filter_chain_match has no prefix_ranges (the service VIPs)")
	}
	for _, r := range m.GetPrefixRanges() {
		p, err := cidr(r)
		if err != nil {
			return nil, err
		}
		ch.Prefixes = append(ch.Prefixes, p)
	}
	if fc.GetTransportSocket() != nil {
		return nil, errors.New("a transport_socket on an internal chain is not supported")
	}
	fs := fc.GetFilters()
	if len(fs) == 0 {
		return nil, fmt.Errorf("has no network filters, want %s or %s last", filterHCM, filterTCPProxy)
	}
	// TCP chains: network RBAC filters before tcp_proxy (XDS.md §12).
	for i, nf := range fs[:len(fs)-1] {
		if proto.IsHTTP() || nf.GetName() != filterNetworkRBAC {
			return nil, fmt.Errorf("network filter %d %q: only %s filters may come before %s (XDS.md §12)", i, nf.GetName(), filterNetworkRBAC, filterTCPProxy)
		}
		var rb netrbacv3.RBAC
		if err := unmarshalAny(nf.GetTypedConfig(), &rb); err != nil {
			return nil, fmt.Errorf("network filter %d: %w", i, err)
		}
		rs, err := parseNetworkRBAC(&rb)
		if err != nil {
			return nil, fmt.Errorf("network filter %d (%s): %w", i, filterNetworkRBAC, err)
		}
		ch.RBAC = append(ch.RBAC, rs...)
	}
	f := fs[len(fs)-1]
	switch {
	case proto.IsHTTP():
		if f.GetName() != filterHCM {
			return nil, fmt.Errorf("protocol %s needs filter %s, not %q", proto, filterHCM, f.GetName())
		}
		var hcm hcmv3.HttpConnectionManager
		if err := unmarshalAny(f.GetTypedConfig(), &hcm); err != nil {
			return nil, err
		}
		if ch.RouteName, ch.Fault, ch.Trace, err = parseHCM(&hcm); err != nil {
			return nil, err
		}
		if ch.RBAC, err = parseHTTPFilters(hcm.GetHttpFilters()); err != nil {
			return nil, err
		}
		if ch.AccessLog, err = parseAccessLogs(hcm.GetAccessLog()); err != nil {
			return nil, err
		}
	default:
		if f.GetName() != filterTCPProxy {
			return nil, fmt.Errorf("protocol tcp needs filter %s, not %q", filterTCPProxy, f.GetName())
		}
		var tp tcpproxyv3.TcpProxy
		if err := unmarshalAny(f.GetTypedConfig(), &tp); err != nil {
			return nil, err
		}
		if err := checkFields(&tp, "tcp_proxy"); err != nil {
			return nil, err
		}
		if tp.GetTunnelingConfig() != nil {
			return nil, errors.New("tcp_proxy.tunneling_config is only valid on connect_originate")
		}
		if ch.Cluster = tp.GetCluster(); ch.Cluster == "" {
			return nil, errors.New("tcp_proxy has no cluster (weighted_clusters are not supported yet)")
		}
	}
	return ch, nil
}

// parseHCM checks an L7 chain's connection manager and returns its RDS
// name, whether it injects faults and its trace handling.
func parseHCM(hcm *hcmv3.HttpConnectionManager) (name string, fault bool, trace *model.TraceConfig, err error) {
	if err := checkFields(hcm, "http_connection_manager"); err != nil {
		return "", false, nil, err
	}
	switch hcm.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1, hcmv3.HttpConnectionManager_HTTP2:
	default:
		return "", false, nil, fmt.Errorf("codec_type %s is not supported (AUTO, HTTP1 or HTTP2)", hcm.GetCodecType())
	}
	if d := hcm.GetForwardClientCertDetails(); d != hcmv3.HttpConnectionManager_SANITIZE {
		return "", false, nil, fmt.Errorf("forward_client_cert_details %s: the Go waypoint only sanitizes (XDS.md §4.1: the source principal is never taken from or put in a header)", d)
	}
	if err := checkIdleTimeout(hcm); err != nil {
		return "", false, nil, err
	}
	if hcm.GetUseRemoteAddress().GetValue() {
		return "", false, nil, errors.New("use_remote_address: true is not supported (the Go waypoint passes X-Forwarded-For through unchanged)")
	}
	if hcm.GetRouteConfig() != nil || hcm.GetRds() == nil {
		return "", false, nil, errors.New("an L7 chain must use rds (inline route_config is not supported)")
	}
	name = hcm.GetRds().GetRouteConfigName()
	if name == "" {
		return "", false, nil, errors.New("rds.route_config_name is empty")
	}
	if fault, err = parseHCMFilters(hcm.GetHttpFilters()); err != nil {
		return "", false, nil, err
	}
	if trace, err = parseTracing(hcm); err != nil {
		return "", false, nil, err
	}
	return name, fault, trace, nil
}

// parseHTTPFilters translates the RBAC filters (parseHCMFilters checked
// the list), in order. They must come before every other filter: the Go
// waypoint authorizes a request before anything else acts on it (XDS.md
// §12).
func parseHTTPFilters(fs []*hcmv3.HttpFilter) ([]model.RBAC, error) {
	var out []model.RBAC
	other := ""
	for i, f := range fs[:len(fs)-1] {
		if f.GetName() != filterHTTPRBAC {
			other = f.GetName()
			continue
		}
		if other != "" {
			return nil, fmt.Errorf("http filter %d: %s after %s: RBAC filters must come first (XDS.md §12)", i, filterHTTPRBAC, other)
		}
		if f.GetIsOptional() || f.GetDisabled() {
			return nil, fmt.Errorf("http filter %d %q: is_optional and disabled are not supported", i, f.GetName())
		}
		var rb httprbacv3.RBAC
		if err := unmarshalAny(f.GetTypedConfig(), &rb); err != nil {
			return nil, fmt.Errorf("http filter %d: %w", i, err)
		}
		rs, err := parseHTTPRBAC(&rb)
		if err != nil {
			return nil, fmt.Errorf("http filter %d (%s): %w", i, filterHTTPRBAC, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// checkIdleTimeout accepts an unset or zero stream_idle_timeout: the Go
// waypoint has no stream idle timeout (a tunnel lives as long as its
// connection). An unset one is Envoy's 5 minutes, a known difference.
func checkIdleTimeout(hcm *hcmv3.HttpConnectionManager) error {
	if t := hcm.GetStreamIdleTimeout(); t != nil && t.AsDuration() != 0 {
		return fmt.Errorf("stream_idle_timeout %s: the Go waypoint has no stream idle timeout (0s only)", t.AsDuration())
	}
	return nil
}

// checkHTTPFilters accepts filter lists ending with the router, with only
// the named extra filters before it.
func checkHTTPFilters(fs []*hcmv3.HttpFilter, extra ...string) error {
	if len(fs) == 0 || fs[len(fs)-1].GetName() != filterRouter {
		return fmt.Errorf("http_filters must end with %s", filterRouter)
	}
	for _, f := range fs[:len(fs)-1] {
		if !slices.Contains(extra, f.GetName()) {
			return fmt.Errorf("HTTP filter %q is not supported by the Go waypoint yet", f.GetName())
		}
	}
	return nil
}

func cidr(r *corev3.CidrRange) (netip.Prefix, error) {
	ip, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("prefix_ranges: %q is not an IP address", r.GetAddressPrefix())
	}
	ip = ip.Unmap()
	bits := ip.BitLen()
	if r.GetPrefixLen() != nil {
		bits = int(r.GetPrefixLen().GetValue())
	}
	p, err := ip.Prefix(bits)
	if err != nil || bits > ip.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_ranges: bad prefix %s/%d", ip, bits)
	}
	return p, nil
}

// ParseCluster checks one Cluster against XDS.md §5.
func ParseCluster(c *clusterv3.Cluster) (Cluster, error) {
	if err := c.Validate(); err != nil {
		return Cluster{}, fmt.Errorf("invalid Envoy cluster: %w", err)
	}
	switch c.GetName() {
	case ListenerMainInternal, ListenerConnectOriginate:
		// Envoy plumbing between the internal listeners; the Go waypoint
		// does the same in process.
		return Cluster{Fixed: true}, nil
	case ClusterBlackHole:
		if c.GetType() != clusterv3.Cluster_STATIC || len(c.GetLoadAssignment().GetEndpoints()) > 0 {
			return Cluster{}, fmt.Errorf("cluster %s must be STATIC without endpoints (XDS.md §5.1)", ClusterBlackHole)
		}
		return Cluster{Fixed: true}, nil
	}
	where := fmt.Sprintf("cluster %q", c.GetName())
	if !strings.HasPrefix(c.GetName(), "outbound|") {
		return Cluster{}, fmt.Errorf("%s: the Go waypoint only uses outbound|<port>||<hostname> clusters besides main_internal and connect_originate", where)
	}
	if err := checkFields(c, where); err != nil {
		return Cluster{}, err
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		return Cluster{}, fmt.Errorf("%s: type %s, want EDS", where, c.GetType())
	}
	lb, err := parseLoadBalancing(c, where)
	if err != nil {
		return Cluster{}, err
	}
	if src := c.GetEdsClusterConfig().GetEdsConfig(); src.GetAds() == nil {
		return Cluster{}, fmt.Errorf("%s: eds_config must be {ads: {}} (delta ADS, XDS.md §5.2)", where)
	}
	if ts := c.GetTransportSocket(); ts != nil && ts.GetName() != socketInternal {
		return Cluster{}, fmt.Errorf("%s: transport_socket %q: the waypoint reaches endpoints through connect_originate (%s)", where, ts.GetName(), socketInternal)
	}
	mc := &model.Cluster{Name: c.GetName(), Upstream: model.UpstreamHTTP1, ConnectTimeout: DefaultConnectTimeout, LB: lb}
	if cb := c.GetCircuitBreakers(); cb != nil {
		b, err := parseCircuitBreakers(cb, where)
		if err != nil {
			return Cluster{}, err
		}
		mc.RetryBudget, mc.Limits = b, parseThresholds(cb)
	}
	if od := c.GetOutlierDetection(); od != nil {
		if mc.Outlier, err = parseOutlierDetection(od, where); err != nil {
			return Cluster{}, err
		}
	}
	if t := c.GetConnectTimeout(); t != nil {
		mc.ConnectTimeout = t.AsDuration()
	}
	for key, opts := range c.GetTypedExtensionProtocolOptions() {
		if key != httpProtocolOptions {
			return Cluster{}, fmt.Errorf("%s: typed_extension_protocol_options %q is not supported", where, key)
		}
		var hpo httpv3.HttpProtocolOptions
		if err := unmarshalAny(opts, &hpo); err != nil {
			return Cluster{}, fmt.Errorf("%s: %w", where, err)
		}
		if mc.MaxRequestsPerConnection, err = parseCommonHTTPOptions(&hpo, where); err != nil {
			return Cluster{}, err
		}
		ex := hpo.GetExplicitHttpConfig()
		switch {
		case ex.GetHttpProtocolOptions() != nil:
			mc.Upstream = model.UpstreamHTTP1
		case ex.GetHttp2ProtocolOptions() != nil:
			mc.Upstream = model.UpstreamHTTP2
		default:
			return Cluster{}, fmt.Errorf("%s: HttpProtocolOptions must be explicit_http_config with http_protocol_options or http2_protocol_options", where)
		}
	}
	host, port, err := parseClusterName(c.GetName())
	if err != nil {
		return Cluster{}, fmt.Errorf("%s: %w", where, err)
	}
	mc.Service = model.Service{Hostname: host, Port: port}
	if md := c.GetMetadata().GetFilterMetadata()[MetadataAmbit]; md != nil {
		if s := str(md, "service"); s != "" {
			mc.Service.Hostname = s
		}
		mc.Service.Namespace, mc.Service.Name = str(md, "namespace"), str(md, "name")
	}
	eds := c.GetEdsClusterConfig().GetServiceName()
	if eds == "" {
		eds = c.GetName()
	}
	return Cluster{EDSName: eds, Cluster: mc}, nil
}

// parseClusterName splits outbound|<port>|<subset>|<hostname>.
func parseClusterName(name string) (string, uint16, error) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 || parts[0] != "outbound" || parts[3] == "" {
		return "", 0, errors.New("name must be outbound|<port>||<hostname>")
	}
	n, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("name: bad port %q", parts[1])
	}
	return parts[3], uint16(n), nil
}

// ParseAssignment checks one ClusterLoadAssignment against XDS.md §6 and
// returns its endpoints. Identities must be in trustDomain.
func ParseAssignment(cla *endpointv3.ClusterLoadAssignment, trustDomain string) ([]model.Endpoint, error) {
	if err := cla.Validate(); err != nil {
		return nil, fmt.Errorf("invalid Envoy ClusterLoadAssignment: %w", err)
	}
	where := fmt.Sprintf("ClusterLoadAssignment %q", cla.GetClusterName())
	if err := checkFields(cla, where); err != nil {
		return nil, err
	}
	if p := cla.GetPolicy(); p != nil && (len(p.GetDropOverloads()) > 0 || p.GetWeightedPriorityHealth()) {
		return nil, fmt.Errorf("%s: policy (drop_overloads, weighted_priority_health) is not supported", where)
	}
	out := []model.Endpoint{}
	weight := uint32(0)
	seen := map[netip.AddrPort]bool{}
	for _, loc := range cla.GetEndpoints() {
		if err := checkFields(loc, where+": locality_lb_endpoints"); err != nil {
			return nil, err
		}
		if loc.GetPriority() != 0 {
			return nil, fmt.Errorf("%s: priority %d: priorities are not supported", where, loc.GetPriority())
		}
		for _, lb := range loc.GetLbEndpoints() {
			ep, err := parseEndpoint(lb, trustDomain)
			if err != nil {
				return nil, fmt.Errorf("%s: endpoint %q: %w", where, lb.GetEndpoint().GetAddress().GetEnvoyInternalAddress().GetEndpointId(), err)
			}
			if seen[ep.Destination] {
				return nil, fmt.Errorf("%s: endpoint %s listed twice", where, ep.Destination)
			}
			seen[ep.Destination] = true
			w := lb.GetLoadBalancingWeight().GetValue()
			if w == 0 {
				w = 1
			}
			if weight != 0 && w != weight {
				return nil, fmt.Errorf("%s: endpoints have different load_balancing_weight; weighted round robin is not supported yet", where)
			}
			weight = w
			out = append(out, ep)
		}
	}
	return out, nil
}

func parseEndpoint(lb *endpointv3.LbEndpoint, td string) (model.Endpoint, error) {
	if err := checkFields(lb, "lb_endpoint"); err != nil {
		return model.Endpoint{}, err
	}
	if lb.GetEndpoint() == nil {
		return model.Endpoint{}, errors.New("has no endpoint (endpoint_name is not supported)")
	}
	md := lb.GetMetadata().GetFilterMetadata()
	tun, amb := md[MetadataTunnel], md[MetadataAmbit]
	var ep model.Endpoint
	var err error
	if sa := lb.GetEndpoint().GetAddress().GetSocketAddress(); sa != nil {
		// Outside the mesh: the pod itself, in plaintext.
		if tun != nil || md[MetadataOriginalDst] != nil || str(amb, "identity") != "" {
			return model.Endpoint{}, errors.New("a socket_address endpoint (outside the mesh) takes no tunnel, original_dst or identity metadata")
		}
		if sa.GetProtocol() != corev3.SocketAddress_TCP || sa.GetResolverName() != "" || sa.GetNamedPort() != "" || sa.GetIpv4Compat() {
			return model.Endpoint{}, errors.New("socket_address: only a TCP ip and port_value are supported")
		}
		ip, perr := netip.ParseAddr(sa.GetAddress())
		if perr != nil || ip.Zone() != "" || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
			return model.Endpoint{}, fmt.Errorf("socket_address %s:%d is not an IP and port", sa.GetAddress(), sa.GetPortValue())
		}
		ep.Destination, ep.Plaintext = netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), true
	} else {
		if ep, err = tunnelEndpoint(tun, amb, td); err != nil {
			return model.Endpoint{}, err
		}
	}
	switch lb.GetHealthStatus() {
	case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
		ep.Healthy = true
	}
	ep.Workload, ep.Namespace, ep.Node = str(amb, "workload"), str(amb, "namespace"), str(amb, "node")
	return ep, nil
}

// tunnelEndpoint reads the HBONE target of an endpoint in the mesh from
// its metadata.
func tunnelEndpoint(tun, amb *structpb.Struct, td string) (model.Endpoint, error) {
	var ep model.Endpoint
	var err error
	if ep.Tunnel, err = addrPort(str(tun, "address")); err != nil {
		return model.Endpoint{}, fmt.Errorf("metadata tunnel.address: %w", err)
	}
	if ep.Destination, err = addrPort(str(tun, "destination")); err != nil {
		return model.Endpoint{}, fmt.Errorf("metadata tunnel.destination: %w", err)
	}
	if ep.Tunnel.Addr() != ep.Destination.Addr() {
		return model.Endpoint{}, fmt.Errorf("tunnel.address %s and tunnel.destination %s have different IPs (the destination ztunnel only accepts its own pod IP as :authority)", ep.Tunnel, ep.Destination)
	}
	if ep.Identity, err = identity.Parse(str(amb, "identity")); err != nil {
		return model.Endpoint{}, fmt.Errorf("metadata ambit.identity: %w", err)
	}
	if ep.Identity.TrustDomain != td {
		return model.Endpoint{}, fmt.Errorf("identity %s is not in this waypoint's trust domain %q", ep.Identity, td)
	}
	return ep, nil
}

func addrPort(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, errors.New("missing")
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q is not ip:port (IPv6 in brackets)", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// ParseRoute checks one RouteConfiguration against XDS.md §7.
func ParseRoute(rc *routev3.RouteConfiguration) (*model.RouteTable, error) {
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("invalid Envoy RouteConfiguration: %w", err)
	}
	where := fmt.Sprintf("route configuration %q", rc.GetName())
	if err := checkFields(rc, where); err != nil {
		return nil, err
	}
	rt := &model.RouteTable{Name: rc.GetName()}
	domains := map[string]string{}
	for _, vh := range rc.GetVirtualHosts() {
		vwhere := fmt.Sprintf("%s: virtual host %q", where, vh.GetName())
		if err := checkFields(vh, vwhere); err != nil {
			return nil, err
		}
		mv := model.VirtualHost{Name: vh.GetName()}
		for _, d := range vh.GetDomains() {
			ld := strings.ToLower(d)
			if other, dup := domains[ld]; dup {
				return nil, fmt.Errorf("%s: domain %q is also in virtual host %q", vwhere, d, other)
			}
			domains[ld] = vh.GetName()
			mv.Domains = append(mv.Domains, d)
		}
		for i, r := range vh.GetRoutes() {
			mr, err := parseRouteEntry(r)
			if err != nil {
				return nil, fmt.Errorf("%s: route %d %q: %w", vwhere, i, r.GetName(), err)
			}
			mv.Routes = append(mv.Routes, mr)
		}
		rt.VirtualHosts = append(rt.VirtualHosts, mv)
	}
	return rt, nil
}

// Resources are the accepted resources, parsed, by name.
type Resources struct {
	Listeners   map[string]Listener
	Clusters    map[string]Cluster
	Assignments map[string][]model.Endpoint
	Routes      map[string]*model.RouteTable
	// Versions are "<type>/<name>" → version, copied into the Config.
	Versions map[string]string
}

// Build assembles a Config from parsed resources: the chains of
// main_internal, the outbound clusters with the endpoints of their
// assignments, and the route tables. References without a resource are
// listed in Config.Missing. It is a pure function.
func Build(r Resources) *model.Config {
	c := &model.Config{
		Versions: maps.Clone(r.Versions),
		Clusters: map[string]*model.Cluster{},
		Routes:   map[string]*model.RouteTable{},
	}
	var missing []string
	miss := func(s string) {
		if !slices.Contains(missing, s) {
			missing = append(missing, s)
		}
	}
	for _, name := range []string{ListenerConnectTerminate, ListenerMainInternal, ListenerConnectOriginate} {
		if _, ok := r.Listeners[name]; !ok {
			miss("LDS " + name)
		}
	}
	for _, name := range []string{ListenerMainInternal, ListenerConnectOriginate} {
		if _, ok := r.Clusters[name]; !ok {
			miss("CDS " + name)
		}
	}
	for name, cl := range r.Clusters {
		if cl.Fixed {
			continue
		}
		mc := *cl.Cluster
		if eps, ok := r.Assignments[cl.EDSName]; ok {
			mc.Endpoints, mc.HasEndpoints = eps, true
		} else {
			miss("EDS " + cl.EDSName)
		}
		c.Clusters[name] = &mc
	}
	mi := r.Listeners[ListenerMainInternal]
	if mi.DefaultCluster != "" {
		if _, ok := r.Clusters[mi.DefaultCluster]; !ok {
			miss("CDS " + mi.DefaultCluster)
		}
	}
	c.Chains = slices.Clone(mi.Chains)
	for _, ch := range c.Chains {
		if ch.Cluster != "" && c.Clusters[ch.Cluster] == nil {
			miss("CDS " + ch.Cluster)
		}
		if ch.RouteName != "" {
			if rt := r.Routes[ch.RouteName]; rt != nil {
				c.Routes[ch.RouteName] = rt
			} else {
				miss("RDS " + ch.RouteName)
			}
		}
	}
	// Clusters named by routes (validate_clusters: false: a route to a
	// cluster not received yet answers 503 meanwhile).
	for _, rt := range c.Routes {
		for _, name := range rt.ClusterNames() {
			if c.Clusters[name] == nil {
				miss("CDS " + name)
			}
		}
	}
	slices.Sort(missing)
	c.Missing = missing
	c.Index()
	return c
}

func str(s *structpb.Struct, key string) string {
	v := s.GetFields()[key]
	switch v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return v.GetStringValue()
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(v.GetNumberValue(), 'f', -1, 64)
	}
	return ""
}

func unmarshalAny(a *anypb.Any, m proto.Message) error {
	if a == nil {
		return fmt.Errorf("missing typed_config (want %s)", m.ProtoReflect().Descriptor().FullName())
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config %s: want %s: %w", a.GetTypeUrl(), m.ProtoReflect().Descriptor().FullName(), err)
	}
	if v, ok := m.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("invalid %s: %w", m.ProtoReflect().Descriptor().Name(), err)
		}
	}
	return nil
}
