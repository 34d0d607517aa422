package xdsclient

import (
	cfgrbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"ambit.dev/pkg/identity"
	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/xdstest"
)

const td = "cluster.local"

// tcpService is a tcp service with an IPv6 VIP and IPv6 endpoints.
func tcpService() xdstest.Service {
	a := netip.MustParseAddr("fd00:10:244:2::7")
	return xdstest.Service{
		Name: "db", Namespace: "demo", Port: 5432, Protocol: "tcp",
		VIPs: []netip.Addr{netip.MustParseAddr("fd00:10:96::b")},
		Endpoints: []xdstest.Endpoint{{Tunnel: netip.AddrPortFrom(a, 15008), Destination: netip.AddrPortFrom(a, 5432),
			Identity: "spiffe://cluster.local/ns/demo/sa/db", Workload: "db-0", Namespace: "demo", Node: "node-2", Unhealthy: true}},
	}
}

// parseAll parses fixture resources the way the client does.
func parseAll(t *testing.T, svcs []xdstest.Service) Resources {
	t.Helper()
	r := Resources{Listeners: map[string]Listener{}, Clusters: map[string]Cluster{}, Assignments: map[string][]model.Endpoint{}, Routes: map[string]*model.RouteTable{}}
	for _, l := range xdstest.Listeners(td, svcs) {
		pl, err := ParseListener(roundTrip(t, l), td)
		if err != nil {
			t.Fatalf("listener %s: %v", l.GetName(), err)
		}
		r.Listeners[l.GetName()] = pl
	}
	for _, c := range xdstest.Clusters(td, svcs) {
		pc, err := ParseCluster(roundTrip(t, c))
		if err != nil {
			t.Fatalf("cluster %s: %v", c.GetName(), err)
		}
		r.Clusters[c.GetName()] = pc
	}
	for _, s := range svcs {
		eps, err := ParseAssignment(roundTrip(t, xdstest.Assignment(s)), td)
		if err != nil {
			t.Fatalf("assignment %s: %v", s.ClusterName(), err)
		}
		r.Assignments[s.ClusterName()] = eps
		if s.IsHTTP() {
			rt, err := ParseRoute(roundTrip(t, xdstest.Route(s)))
			if err != nil {
				t.Fatalf("route %s: %v", s.RouteName(), err)
			}
			r.Routes[s.RouteName()] = rt
		}
	}
	return r
}

// roundTrip marshals and unmarshals m, as the wire does.
func roundTrip[M proto.Message](t *testing.T, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBuildExample(t *testing.T) {
	web, db := xdstest.Example(), tcpService()
	cfg := Build(parseAll(t, []xdstest.Service{web, db}))
	if !cfg.Complete() {
		t.Fatalf("config of XDS.md §10 (+ a tcp service) is incomplete: %v", cfg.Missing)
	}
	webID, dbID := identity.ID{TrustDomain: td, Namespace: "demo", ServiceAccount: "web"}, identity.ID{TrustDomain: td, Namespace: "demo", ServiceAccount: "db"}
	wantChains := []*model.Chain{
		{Name: "inbound-vip|5432|tcp|db.demo.svc.cluster.local", Service: "db.demo.svc.cluster.local", Protocol: model.ProtocolTCP,
			Prefixes: []netip.Prefix{netip.MustParsePrefix("fd00:10:96::b/128")}, Port: 5432, Cluster: "outbound|5432||db.demo.svc.cluster.local"},
		{Name: "inbound-vip|80|http|web.demo.svc.cluster.local", Service: "web.demo.svc.cluster.local", Protocol: model.ProtocolHTTP,
			Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.10/32"), netip.MustParsePrefix("fd00:10:96::a/128")}, Port: 80,
			RouteName: "web.demo.svc.cluster.local:80", Fault: true,
			Trace: &model.TraceConfig{GenerateRequestID: true, Tracing: true, SamplePerMillion: model.PerMillion}},
	}
	if len(cfg.Chains) == 2 {
		al := cfg.Chains[1].AccessLog
		if al == nil || al.Path != "/dev/stdout" || al.Sampled != 100 || al.MinStatus != 0 || len(al.Fields) != len(xdstest.AccessLogFields)+1 {
			t.Errorf("HTTP chain access log %+v, want every request logged as JSON to /dev/stdout with %d fields", al, len(xdstest.AccessLogFields)+1)
		}
		wantChains[1].AccessLog = al
	}
	if !reflect.DeepEqual(cfg.Chains, wantChains) {
		t.Errorf("chains:\n got %+v\nwant %+v", deref(cfg.Chains), deref(wantChains))
	}
	wantWeb := &model.Cluster{
		Name: "outbound|80||web.demo.svc.cluster.local", Upstream: model.UpstreamHTTP1, ConnectTimeout: 10 * time.Second,
		Service:      model.Service{Hostname: "web.demo.svc.cluster.local", Namespace: "demo", Name: "web", Port: 80},
		RetryBudget:  &model.RetryBudget{Percent: 20, MinConcurrency: 3},
		Limits:       &model.DefaultThresholds,
		LB:           model.LoadBalancing{Policy: model.LBRoundRobin, ChoiceCount: 2, PanicThreshold: 0},
		HasEndpoints: true,
		Endpoints: []model.Endpoint{
			{Tunnel: netip.MustParseAddrPort("10.244.1.5:15008"), Destination: netip.MustParseAddrPort("10.244.1.5:8080"), Identity: webID, Healthy: true, Workload: "web-1", Namespace: "demo", Node: "node-1"},
			{Tunnel: netip.MustParseAddrPort("10.244.2.7:15008"), Destination: netip.MustParseAddrPort("10.244.2.7:8080"), Identity: webID, Healthy: true, Workload: "web-2", Namespace: "demo", Node: "node-2"},
		},
	}
	if got := cfg.Clusters[wantWeb.Name]; !reflect.DeepEqual(got, wantWeb) {
		t.Errorf("web cluster:\n got %+v\nwant %+v", got, wantWeb)
	}
	wantDB := &model.Cluster{
		Name: "outbound|5432||db.demo.svc.cluster.local", Upstream: model.UpstreamHTTP1, ConnectTimeout: 10 * time.Second,
		Service:      model.Service{Hostname: "db.demo.svc.cluster.local", Namespace: "demo", Name: "db", Port: 5432},
		RetryBudget:  &model.RetryBudget{Percent: 20, MinConcurrency: 3},
		Limits:       &model.DefaultThresholds,
		LB:           model.LoadBalancing{Policy: model.LBRoundRobin, ChoiceCount: 2, PanicThreshold: 0},
		HasEndpoints: true,
		Endpoints: []model.Endpoint{{Tunnel: netip.MustParseAddrPort("[fd00:10:244:2::7]:15008"), Destination: netip.MustParseAddrPort("[fd00:10:244:2::7]:5432"),
			Identity: dbID, Healthy: false, Workload: "db-0", Namespace: "demo", Node: "node-2"}},
	}
	if got := cfg.Clusters[wantDB.Name]; !reflect.DeepEqual(got, wantDB) {
		t.Errorf("db cluster:\n got %+v\nwant %+v", got, wantDB)
	}
	rt := cfg.Routes["web.demo.svc.cluster.local:80"]
	wantDomains := []string{"web.demo.svc.cluster.local", "web.demo.svc.cluster.local:80", "web", "web:80", "web.demo", "web.demo:80",
		"web.demo.svc", "web.demo.svc:80", "10.96.0.10", "10.96.0.10:80", "[fd00:10:96::a]", "[fd00:10:96::a]:80", "*"}
	if rt == nil || len(rt.VirtualHosts) != 1 || !slices.Equal(rt.VirtualHosts[0].Domains, wantDomains) {
		t.Fatalf("route table = %+v, want one virtual host with domains %v", rt, wantDomains)
	}
	// The default route and retry policy of XDS.md §7.
	wantRoute := model.Route{Name: "default", Match: model.RouteMatch{Path: "/"}, Cluster: "outbound|80||web.demo.svc.cluster.local",
		Retry: &model.RetryPolicy{On: model.RetryConnectFailure | model.RetryRefusedStream | model.RetryGRPCUnavailable | model.RetryGRPCCancelled | model.RetryStatusCodes,
			NumRetries: 2, StatusCodes: []int{503}, BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond}}
	if got := rt.VirtualHosts[0].Routes; len(got) != 1 || !reflect.DeepEqual(got[0], wantRoute) {
		t.Errorf("routes = %+v, want [%+v]", got, wantRoute)
	}
	for _, tc := range []struct {
		name string
		dst  string
		want string
	}{
		{"IPv4 VIP", "10.96.0.10:80", "inbound-vip|80|http|web.demo.svc.cluster.local"},
		{"IPv6 VIP", "[fd00:10:96::a]:80", "inbound-vip|80|http|web.demo.svc.cluster.local"},
		{"IPv4-mapped VIP", "[::ffff:10.96.0.10]:80", "inbound-vip|80|http|web.demo.svc.cluster.local"},
		{"IPv6 tcp VIP", "[fd00:10:96::b]:5432", "inbound-vip|5432|tcp|db.demo.svc.cluster.local"},
		{"IPv4 VIP wrong port", "10.96.0.10:81", ""},
		{"IPv4 pod IP", "10.244.1.5:8080", ""},
		{"IPv6 pod IP", "[fd00:10:244:2::7]:5432", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := cfg.Chain(netip.MustParseAddrPort(tc.dst))
			got := ""
			if ch != nil {
				got = ch.Name
			}
			if got != tc.want {
				t.Fatalf("Chain(%s) = %q, want %q", tc.dst, got, tc.want)
			}
		})
	}
}

func deref(cs []*model.Chain) []model.Chain {
	var out []model.Chain
	for _, c := range cs {
		out = append(out, *c)
	}
	return out
}

func TestBuildMissing(t *testing.T) {
	web, db := xdstest.Example(), tcpService()
	full := func() Resources { return parseAll(t, []xdstest.Service{web, db}) }
	tests := []struct {
		name   string
		mutate func(*Resources)
		want   []string
	}{
		{name: "complete", mutate: func(*Resources) {}},
		{name: "no EDS yet", mutate: func(r *Resources) { delete(r.Assignments, web.ClusterName()) },
			want: []string{"EDS " + web.ClusterName()}},
		{name: "no RDS yet", mutate: func(r *Resources) { delete(r.Routes, web.RouteName()) },
			want: []string{"RDS " + web.RouteName()}},
		{name: "tcp chain's cluster missing", mutate: func(r *Resources) { delete(r.Clusters, db.ClusterName()) },
			want: []string{"CDS " + db.ClusterName()}},
		{name: "black hole missing", mutate: func(r *Resources) { delete(r.Clusters, "BlackHoleCluster") },
			want: []string{"CDS BlackHoleCluster"}},
		{name: "nothing", mutate: func(r *Resources) { *r = Resources{} },
			want: []string{"CDS connect_originate", "CDS main_internal", "LDS connect_originate", "LDS connect_terminate", "LDS main_internal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := full()
			tt.mutate(&r)
			cfg := Build(r)
			if !slices.Equal(cfg.Missing, tt.want) {
				t.Fatalf("Missing = %q, want %q", cfg.Missing, tt.want)
			}
			if cfg.Complete() != (len(tt.want) == 0) {
				t.Fatalf("Complete = %v", cfg.Complete())
			}
		})
	}
}

// mainInternal returns main_internal for web and db with mutate applied.
func mainInternal(mutate func(*listenerv3.Listener)) *listenerv3.Listener {
	l := xdstest.MainInternal([]xdstest.Service{xdstest.Example(), tcpService()})
	mutate(l)
	return l
}

func hcmOf(fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	var h hcmv3.HttpConnectionManager
	if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
		panic(err)
	}
	return &h
}

func setHCM(fc *listenerv3.FilterChain, mutate func(*hcmv3.HttpConnectionManager)) {
	h := hcmOf(fc)
	mutate(h)
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.Any(h)}
}

func setTerminateTLS(l *listenerv3.Listener, mutate func(*tlsv3.DownstreamTlsContext)) {
	var d tlsv3.DownstreamTlsContext
	if err := l.FilterChains[0].TransportSocket.GetTypedConfig().UnmarshalTo(&d); err != nil {
		panic(err)
	}
	mutate(&d)
	l.FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.Any(&d)}
}

func TestParseListenerRejects(t *testing.T) {
	// mainInternal's chains: 0 is web (http), 1 is db (tcp).
	tests := []struct {
		name string
		l    *listenerv3.Listener
		want string
	}{
		{name: "unknown listener", l: &listenerv3.Listener{Name: "virtualOutbound", Address: xdstest.ConnectTerminate(td, false).Address},
			want: "not one of connect_terminate, main_internal, connect_originate"},
		{name: "default chain that serves", l: mainInternal(func(l *listenerv3.Listener) { l.DefaultFilterChain = l.FilterChains[0] }),
			want: "default_filter_chain \"inbound-vip|80|http|web.demo.svc.cluster.local\" must be a tcp_proxy to BlackHoleCluster"},
		{name: "default chain to a real cluster", l: mainInternal(func(l *listenerv3.Listener) { l.DefaultFilterChain = l.FilterChains[1] }),
			want: "must be a tcp_proxy to BlackHoleCluster"},
		{name: "default chain on connect_terminate", l: func() *listenerv3.Listener {
			l := xdstest.ConnectTerminate(td, false)
			l.DefaultFilterChain = l.FilterChains[0]
			return l
		}(), want: `listener "connect_terminate" sets default_filter_chain`},
		{name: "stream idle timeout", l: func() *listenerv3.Listener {
			l := mainInternal(func(*listenerv3.Listener) {})
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(5 * time.Minute) })
			return l
		}(), want: "stream_idle_timeout 5m0s"},
		{name: "RBAC permission the waypoint cannot evaluate", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) {
				h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.rbac",
					ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.Any(&rbacv3.RBAC{Rules: &cfgrbacv3.RBAC{
						Policies: map[string]*cfgrbacv3.Policy{"p": {
							Permissions: []*cfgrbacv3.Permission{{Rule: &cfgrbacv3.Permission_RequestedServerName{RequestedServerName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x"}}}}},
							Principals:  []*cfgrbacv3.Principal{{Identifier: &cfgrbacv3.Principal_Any{Any: true}}},
						}},
					}})}}}, h.HttpFilters...)
			})
		}), want: `policy "p": permission *rbacv3.Permission_RequestedServerName is not supported`},
		{name: "RBAC principal by authenticated name", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) {
				h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.rbac",
					ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.Any(&rbacv3.RBAC{Rules: &cfgrbacv3.RBAC{
						Policies: map[string]*cfgrbacv3.Policy{"p": {
							Permissions: []*cfgrbacv3.Permission{{Rule: &cfgrbacv3.Permission_Any{Any: true}}},
							Principals:  []*cfgrbacv3.Principal{{Identifier: &cfgrbacv3.Principal_Authenticated_{Authenticated: &cfgrbacv3.Principal_Authenticated{}}}},
						}},
					}})}}}, h.HttpFilters...)
			})
		}), want: `matched by filter_state io.istio.peer_principal`},
		{name: "unknown HTTP filter before the router", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) {
				h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.lua",
					ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.Any(&rbacv3.RBAC{})}}}, h.HttpFilters...)
			})
		}), want: `HTTP filter "envoy.filters.http.lua" is not supported`},
		{name: "bad chain name", l: mainInternal(func(l *listenerv3.Listener) { l.FilterChains[0].Name = "web" }),
			want: "inbound-vip|<port>|<protocol>|<hostname>"},
		{name: "unknown protocol", l: mainInternal(func(l *listenerv3.Listener) {
			l.FilterChains[0].Name = "inbound-vip|80|mysql|web.demo.svc.cluster.local"
		}), want: `protocol "mysql"`},
		{name: "port differs from name", l: mainInternal(func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch.DestinationPort = wrapperspb.UInt32(81)
		}), want: "destination_port 81 differs"},
		{name: "no VIPs", l: mainInternal(func(l *listenerv3.Listener) { l.FilterChains[0].FilterChainMatch.PrefixRanges = nil }),
			want: "no prefix_ranges"},
		{name: "IPv4 prefix longer than 32", l: mainInternal(func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch.PrefixRanges[0].PrefixLen = wrapperspb.UInt32(33)
		}), want: "bad prefix 10.96.0.10/33"},
		{name: "source match", l: mainInternal(func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch.SourcePrefixRanges = []*corev3.CidrRange{{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}
		}), want: "sets source_prefix_ranges"},
		{name: "same IPv4 VIP:port twice", l: mainInternal(func(l *listenerv3.Listener) {
			c := proto.Clone(l.FilterChains[0]).(*listenerv3.FilterChain)
			c.Name = "inbound-vip|80|http|other.demo.svc.cluster.local"
			l.FilterChains = append(l.FilterChains, c)
		}), want: "both match 10.96.0.10/32 port 80"},
		{name: "tcp chain with an HCM", l: mainInternal(func(l *listenerv3.Listener) { l.FilterChains[1].Name = "inbound-vip|5432|http|db" }),
			want: "needs filter envoy.filters.network.http_connection_manager"},
		{name: "http chain with tcp_proxy", l: mainInternal(func(l *listenerv3.Listener) { l.FilterChains[0].Name = "inbound-vip|80|tcp|web" }),
			want: "needs filter envoy.filters.network.tcp_proxy"},
		{name: "weighted tcp clusters", l: mainInternal(func(l *listenerv3.Listener) {
			l.FilterChains[1].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.Any(&tcpproxyv3.TcpProxy{
				StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
					Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a", Weight: 1}}}}})}
		}), want: "tcp_proxy sets weighted_clusters"},
		{name: "tcp idle timeout", l: mainInternal(func(l *listenerv3.Listener) {
			l.FilterChains[1].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.Any(&tcpproxyv3.TcpProxy{
				StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}, IdleTimeout: durationpb.New(time.Minute)})}
		}), want: "sets idle_timeout"},
		{name: "XFCC forwarded", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) {
				h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
			})
		}), want: "only sanitizes"},
		{name: "inline route config", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) {
				h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: xdstest.Route(xdstest.Example())}
			})
		}), want: "must use rds"},
		{name: "HTTP/3 codec", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) { h.CodecType = hcmv3.HttpConnectionManager_HTTP3 })
		}), want: "codec_type HTTP3"},
		{name: "use_remote_address", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) { h.UseRemoteAddress = wrapperspb.Bool(true) })
		}), want: "use_remote_address: true"},
		{name: "unsupported HCM field", l: mainInternal(func(l *listenerv3.Listener) {
			setHCM(l.FilterChains[0], func(h *hcmv3.HttpConnectionManager) { h.RequestTimeout = durationpb.New(time.Second) })
		}), want: "sets request_timeout"},
		{name: "client certificate not required", l: func() *listenerv3.Listener {
			l := xdstest.ConnectTerminate(td, true)
			setTerminateTLS(l, func(d *tlsv3.DownstreamTlsContext) { d.RequireClientCertificate = nil })
			return l
		}(), want: "require_client_certificate must be true"},
		{name: "other trust domain", l: func() *listenerv3.Listener {
			l := xdstest.ConnectTerminate(td, false)
			setTerminateTLS(l, func(d *tlsv3.DownstreamTlsContext) {
				d.CommonTlsContext = xdstest.CommonTLS("example.org")
			})
			return l
		}(), want: `peer SAN prefix "spiffe://example.org/"`},
		{name: "TLS 1.2", l: func() *listenerv3.Listener {
			l := xdstest.ConnectTerminate(td, false)
			setTerminateTLS(l, func(d *tlsv3.DownstreamTlsContext) {
				d.CommonTlsContext.TlsParams.TlsMinimumProtocolVersion = tlsv3.TlsParameters_TLSv1_2
			})
			return l
		}(), want: "TLS 1.3 only"},
		{name: "connect_originate not internal", l: func() *listenerv3.Listener {
			l := xdstest.ConnectOriginate()
			l.ListenerSpecifier = nil
			l.Address = xdstest.ConnectTerminate(td, false).Address
			return l
		}(), want: "connect_originate must be an internal_listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseListener(roundTrip(t, tt.l), td)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseListener error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseCluster(t *testing.T) {
	web := xdstest.Example()
	cluster := func(mutate func(*clusterv3.Cluster)) *clusterv3.Cluster {
		c := xdstest.Cluster(web)
		mutate(c)
		return c
	}
	tests := []struct {
		name     string
		c        *clusterv3.Cluster
		want     string // error; "" = accepted
		upstream model.UpstreamProtocol
	}{
		{name: "http", c: cluster(func(*clusterv3.Cluster) {}), upstream: model.UpstreamHTTP1},
		{name: "grpc", c: xdstest.Cluster(xdstest.Service{Name: "g", Namespace: "demo", Port: 9090, Protocol: "grpc"}), upstream: model.UpstreamHTTP2},
		{name: "tcp", c: xdstest.Cluster(tcpService()), upstream: model.UpstreamHTTP1},
		{name: "panic threshold 0", c: cluster(func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
		}), upstream: model.UpstreamHTTP1},
		{name: "static outbound", c: cluster(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}), want: "type STATIC, want EDS"},
		{name: "EDS not over ADS", c: cluster(func(c *clusterv3.Cluster) { c.EdsClusterConfig.EdsConfig = nil }),
			want: "eds_config must be {ads: {}}"},
		{name: "HTTP/3 upstream", c: cluster(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] = xdstest.Any(&httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{Http3ProtocolOptions: &corev3.Http3ProtocolOptions{}}}}})
		}), want: "explicit_http_config with http_protocol_options or http2_protocol_options"},
		{name: "TLS to the endpoint", c: cluster(func(c *clusterv3.Cluster) {
			c.TransportSocket = xdstest.FixedClusters(td)[2].TransportSocket
		}), want: `transport_socket "envoy.transport_sockets.tls"`},
		{name: "foreign cluster", c: cluster(func(c *clusterv3.Cluster) { c.Name = "inbound|80||web" }),
			want: "only uses outbound|<port>||<hostname> clusters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCluster(roundTrip(t, tt.c))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("ParseCluster error = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Cluster.Upstream != tt.upstream || got.EDSName != tt.c.GetName() {
				t.Fatalf("got %+v (EDS %q), want upstream %s and EDS name %q", got.Cluster, got.EDSName, tt.upstream, tt.c.GetName())
			}
		})
	}
	for _, c := range xdstest.FixedClusters(td) {
		got, err := ParseCluster(roundTrip(t, c))
		if err != nil || !got.Fixed {
			t.Errorf("fixed cluster %s: %+v, %v", c.GetName(), got, err)
		}
	}
}

func TestParseAssignment(t *testing.T) {
	ep := func(ip string, mutate func(*xdstest.Endpoint)) xdstest.Endpoint {
		a := netip.MustParseAddr(ip)
		e := xdstest.Endpoint{Tunnel: netip.AddrPortFrom(a, 15008), Destination: netip.AddrPortFrom(a, 8080),
			Identity: "spiffe://cluster.local/ns/demo/sa/web", Workload: "w", Namespace: "demo", Node: "n"}
		if mutate != nil {
			mutate(&e)
		}
		return e
	}
	cla := func(eps ...xdstest.Endpoint) *endpointv3.ClusterLoadAssignment {
		s := xdstest.Example()
		s.Endpoints = eps
		return xdstest.Assignment(s)
	}
	withMD := func(c *endpointv3.ClusterLoadAssignment, ns, key, val string) *endpointv3.ClusterLoadAssignment {
		c.Endpoints[0].LbEndpoints[0].Metadata.FilterMetadata[ns].Fields[key] = structpb.NewStringValue(val)
		return c
	}
	tests := []struct {
		name    string
		cla     *endpointv3.ClusterLoadAssignment
		want    string
		healthy []bool
	}{
		{name: "IPv4", cla: cla(ep("10.244.1.5", nil)), healthy: []bool{true}},
		{name: "IPv6", cla: cla(ep("fd00:10:244:2::7", nil)), healthy: []bool{true}},
		{name: "dual stack, one not ready", cla: cla(ep("10.244.1.5", nil), ep("fd00:10:244:2::7", func(e *xdstest.Endpoint) { e.Unhealthy = true })),
			healthy: []bool{true, false}},
		{name: "no pods", cla: cla(), healthy: []bool{}},
		{name: "IPv4 tunnel and destination differ", cla: cla(ep("10.244.1.5", func(e *xdstest.Endpoint) {
			e.Destination = netip.MustParseAddrPort("10.244.1.6:8080")
		})), want: "different IPs"},
		{name: "IPv6 destination without brackets", cla: withMD(cla(ep("fd00::1", nil)), "tunnel", "destination", "fd00::1:8080"),
			want: "is not ip:port"},
		{name: "no tunnel address", cla: withMD(cla(ep("10.244.1.5", nil)), "tunnel", "address", ""),
			want: "tunnel.address: missing"},
		{name: "identity of another trust domain", cla: cla(ep("10.244.1.5", func(e *xdstest.Endpoint) {
			e.Identity = "spiffe://example.org/ns/demo/sa/web"
		})), want: "not in this waypoint's trust domain"},
		{name: "identity not a workload ID", cla: cla(ep("10.244.1.5", func(e *xdstest.Endpoint) { e.Identity = "spiffe://cluster.local/web" })),
			want: "ambit.identity"},
		{name: "same endpoint twice", cla: cla(ep("10.244.1.5", nil), ep("10.244.1.5", nil)), want: "listed twice"},
		{name: "priority", cla: func() *endpointv3.ClusterLoadAssignment {
			c := cla(ep("10.244.1.5", nil))
			c.Endpoints[0].Priority = 1
			return c
		}(), want: "priorities are not supported"},
		{name: "different weights", cla: func() *endpointv3.ClusterLoadAssignment {
			c := cla(ep("10.244.1.5", nil), ep("10.244.1.6", nil))
			c.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(3)
			return c
		}(), want: "weighted round robin is not supported yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eps, err := ParseAssignment(roundTrip(t, tt.cla), td)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("ParseAssignment error = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var healthy []bool
			for _, e := range eps {
				healthy = append(healthy, e.Healthy)
				if e.Tunnel.Port() != 15008 || e.Tunnel.Addr() != e.Destination.Addr() || e.Identity.ServiceAccount != "web" {
					t.Errorf("endpoint %+v", e)
				}
			}
			if !slices.Equal(healthy, tt.healthy) {
				t.Fatalf("health = %v, want %v", healthy, tt.healthy)
			}
		})
	}
}

func TestParseRoute(t *testing.T) {
	route := func(mutate func(*routev3.Route)) *routev3.RouteConfiguration {
		rc := xdstest.Route(xdstest.Example())
		mutate(rc.VirtualHosts[0].Routes[0])
		return rc
	}
	tests := []struct {
		name string
		rc   *routev3.RouteConfiguration
		want string
		path string // accepted: the path the route must match
	}{
		{name: "default", rc: route(func(*routev3.Route) {}), path: "/anything"},
		{name: "exact path, any case", rc: route(func(r *routev3.Route) {
			r.Match.PathSpecifier = &routev3.RouteMatch_Path{Path: "/Admin"}
			r.Match.CaseSensitive = wrapperspb.Bool(false)
		}), path: "/admin"},
		{name: "duplicate domain", rc: func() *routev3.RouteConfiguration {
			rc := xdstest.Route(xdstest.Example())
			vh := proto.Clone(rc.VirtualHosts[0]).(*routev3.VirtualHost)
			vh.Name = "other"
			vh.Domains = []string{"WEB.demo"}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
			return rc
		}(), want: `domain "WEB.demo" is also in virtual host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, err := ParseRoute(roundTrip(t, tt.rc))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("ParseRoute error = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, r := rt.Select(model.Request{Host: "web.demo.svc.cluster.local:80", Method: "GET", Path: tt.path}); r == nil || r.Cluster != "outbound|80||web.demo.svc.cluster.local" || r.Timeout != 0 {
				t.Fatalf("Select(%q) = %+v", tt.path, r)
			}
		})
	}
}

// TestSupportedFieldNames guards the allow-lists against typos.
func TestSupportedFieldNames(t *testing.T) {
	msgs := []proto.Message{&listenerv3.FilterChainMatch{}, &clusterv3.Cluster{}, &clusterv3.Cluster_CommonLbConfig{},
		&clusterv3.Cluster_LeastRequestLbConfig{}, &clusterv3.OutlierDetection{}, &httpv3.HttpProtocolOptions{}, &corev3.HttpProtocolOptions{},
		&hcmv3.HttpConnectionManager{}, &tcpproxyv3.TcpProxy{}, &routev3.RouteConfiguration{}, &routev3.VirtualHost{},
		&routev3.Route{}, &routev3.RouteMatch{}, &routev3.RouteAction{}, &endpointv3.ClusterLoadAssignment{},
		&endpointv3.LocalityLbEndpoints{}, &endpointv3.LbEndpoint{},
		&routev3.HeaderMatcher{}, &routev3.QueryParameterMatcher{}, &matcherv3.StringMatcher{}, &matcherv3.RegexMatcher{},
		&matcherv3.RegexMatchAndSubstitute{}, &routev3.WeightedCluster{}, &routev3.WeightedCluster_ClusterWeight{},
		&routev3.RetryPolicy{}, &routev3.RetryPolicy_RetryBackOff{}, &routev3.RedirectAction{}, &routev3.DirectResponseAction{},
		&corev3.HeaderValueOption{}, &corev3.HeaderValue{}, &clusterv3.CircuitBreakers{}, &clusterv3.CircuitBreakers_Thresholds{},
		&clusterv3.CircuitBreakers_Thresholds_RetryBudget{}, &rbacv3.RBAC{}, &netrbacv3.RBAC{}, &cfgrbacv3.RBAC{},
		&cfgrbacv3.Policy{}, &matcherv3.PathMatcher{}, &hcmv3.HttpConnectionManager_Tracing{}, &tracev3.ZipkinConfig{},
		&faultv3.HTTPFault{}, &commonfaultv3.FaultDelay{}, &faultv3.FaultAbort{}}
	if len(msgs) != len(supported) {
		t.Fatalf("%d messages checked, %d in supported", len(msgs), len(supported))
	}
	for _, m := range msgs {
		d := m.ProtoReflect().Descriptor()
		for _, f := range supported[d.FullName()] {
			if d.Fields().ByName(protoreflect.Name(f)) == nil {
				t.Errorf("%s has no field %q", d.FullName(), f)
			}
		}
	}
}

func TestNode(t *testing.T) {
	tests := []struct {
		name   string
		info   NodeInfo
		wantID string
		ips    string
		err    string
	}{
		{name: "IPv4", info: NodeInfo{PodIPs: []netip.Addr{netip.MustParseAddr("10.244.1.9")}, PodName: "waypoint-5d8f-abcde", Namespace: "demo",
			ServiceAccount: "waypoint", Gateway: "demo/waypoint", ClusterDomain: "cluster.local"},
			wantID: "waypoint~10.244.1.9~waypoint-5d8f-abcde.demo~demo.svc.cluster.local", ips: "10.244.1.9"},
		{name: "IPv6 first, dual stack", info: NodeInfo{PodIPs: []netip.Addr{netip.MustParseAddr("fd00:10:244:1::9"), netip.MustParseAddr("10.244.1.9")},
			PodName: "w", Namespace: "demo", ServiceAccount: "waypoint", Gateway: "demo/waypoint", ClusterDomain: "example.local"},
			wantID: "waypoint~fd00:10:244:1::9~w.demo~demo.svc.example.local", ips: "fd00:10:244:1::9,10.244.1.9"},
		{name: "gateway of another namespace", info: NodeInfo{PodIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, PodName: "w", Namespace: "demo",
			Gateway: "other/waypoint", ClusterDomain: "cluster.local"}, err: "not in the pod's namespace"},
		{name: "gateway without namespace", info: NodeInfo{PodIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, PodName: "w", Namespace: "demo",
			Gateway: "waypoint", ClusterDomain: "cluster.local"}, err: "<namespace>/<name>"},
		{name: "no pod IP", info: NodeInfo{PodName: "w", Namespace: "demo", Gateway: "demo/waypoint", ClusterDomain: "cluster.local"}, err: "pod IPs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := tt.info.Node()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Node error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			md := n.GetMetadata().GetFields()
			if n.GetId() != tt.wantID || n.GetCluster() != "waypoint" || md[MetadataGateway].GetStringValue() != tt.info.Gateway ||
				md[MetadataNamespace].GetStringValue() != "demo" || md[MetadataPodName].GetStringValue() != tt.info.PodName ||
				md[MetadataServiceAccount].GetStringValue() != tt.info.ServiceAccount || md[MetadataInstanceIPs].GetStringValue() != tt.ips {
				t.Fatalf("node = %v", n)
			}
		})
	}
}
