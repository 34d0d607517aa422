package waypointxds

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestProtocolOf(t *testing.T) {
	for _, tc := range []struct {
		name, port, appProtocol string
		want                    Protocol
	}{
		{"appProtocol http", "web", "http", ProtocolHTTP},
		{"appProtocol HTTP upper case", "", "HTTP", ProtocolHTTP},
		{"appProtocol http2", "", "http2", ProtocolHTTP2},
		{"appProtocol h2c", "", "kubernetes.io/h2c", ProtocolHTTP2},
		{"appProtocol grpc", "", "grpc", ProtocolGRPC},
		{"appProtocol grpc-web", "", "grpc-web", ProtocolGRPC},
		{"appProtocol tcp wins over http name", "http", "tcp", ProtocolTCP},
		{"appProtocol https is opaque", "http-web", "https", ProtocolTCP},
		{"appProtocol websocket is opaque", "", "kubernetes.io/ws", ProtocolTCP},
		{"appProtocol unknown", "grpc", "mysql", ProtocolTCP},
		{"name http", "http", "", ProtocolHTTP},
		{"name http-web", "http-web", "", ProtocolHTTP},
		{"name HTTP-Web", "HTTP-Web", "", ProtocolHTTP},
		{"name http2", "http2", "", ProtocolHTTP2},
		{"name http2-api", "http2-api", "", ProtocolHTTP2},
		{"name grpc", "grpc", "", ProtocolGRPC},
		{"name grpc-api", "grpc-api", "", ProtocolGRPC},
		{"name httpbin is not http", "httpbin", "", ProtocolTCP},
		{"name grpcx", "grpcx", "", ProtocolTCP},
		{"name https", "https", "", ProtocolTCP},
		{"no name", "", "", ProtocolTCP},
		{"name tcp-http", "tcp-http", "", ProtocolTCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProtocolOf(tc.port, tc.appProtocol); got != tc.want {
				t.Errorf("ProtocolOf(%q, %q) = %s, want %s", tc.port, tc.appProtocol, got, tc.want)
			}
		})
	}
}

func TestPortProtocolOverride(t *testing.T) {
	p := Port{Name: "http", Protocol: ProtocolTCP}
	if got := p.protocol(); got != ProtocolTCP {
		t.Errorf("explicit Protocol ignored: got %s", got)
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		name, got, want string
	}{
		{"cluster", ClusterName("web.demo.svc.cluster.local", 80), "outbound|80||web.demo.svc.cluster.local"},
		{"route", RouteName("web.demo.svc.cluster.local", 8080), "web.demo.svc.cluster.local:8080"},
		{"filter chain http", FilterChainName("web.demo.svc.cluster.local", 80, ProtocolHTTP), "inbound-vip|80|http|web.demo.svc.cluster.local"},
		{"filter chain tcp", FilterChainName("db.demo.svc.cluster.local", 5432, ProtocolTCP), "inbound-vip|5432|tcp|db.demo.svc.cluster.local"},
		{"node id IPv4", NodeID(netip.MustParseAddr("10.244.1.9"), "wp-abc", "demo", ""), "waypoint~10.244.1.9~wp-abc.demo~demo.svc.cluster.local"},
		{"node id IPv6", NodeID(netip.MustParseAddr("fd00:10:244:1::9"), "wp-abc", "demo", "corp.local"), "waypoint~fd00:10:244:1::9~wp-abc.demo~demo.svc.corp.local"},
		{"node id IPv4-mapped", NodeID(netip.MustParseAddr("::ffff:10.0.0.1"), "p", "n", ""), "waypoint~10.0.0.1~p.n~n.svc.cluster.local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestDomains(t *testing.T) {
	for _, tc := range []struct {
		name string
		vips []netip.Addr
		port uint16
		want []string
	}{
		{"IPv4", []netip.Addr{netip.MustParseAddr("10.96.0.10")}, 80, []string{
			"web.demo.svc.cluster.local", "web.demo.svc.cluster.local:80", "web", "web:80", "web.demo", "web.demo:80",
			"web.demo.svc", "web.demo.svc:80", "10.96.0.10", "10.96.0.10:80", "*"}},
		{"IPv6", []netip.Addr{netip.MustParseAddr("fd00::a")}, 8080, []string{
			"web.demo.svc.cluster.local", "web.demo.svc.cluster.local:8080", "web", "web:8080", "web.demo", "web.demo:8080",
			"web.demo.svc", "web.demo.svc:8080", "[fd00::a]", "[fd00::a]:8080", "*"}},
		{"no VIP", nil, 80, []string{
			"web.demo.svc.cluster.local", "web.demo.svc.cluster.local:80", "web", "web:80", "web.demo", "web.demo:80",
			"web.demo.svc", "web.demo.svc:80", "*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Domains("web.demo.svc.cluster.local", "web", "demo", tc.vips, tc.port)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
	// A hostname equal to a short name is listed once.
	got := Domains("web", "web", "demo", nil, 80)
	if n := len(slices.DeleteFunc(slices.Clone(got), func(d string) bool { return d != "web" })); n != 1 {
		t.Errorf("duplicate domain in %q", got)
	}
}

func node(id string, md map[string]string) *corev3.Node {
	fields := map[string]*structpb.Value{}
	for k, v := range md {
		fields[k] = structpb.NewStringValue(v)
	}
	return &corev3.Node{Id: id, Metadata: &structpb.Struct{Fields: fields}}
}

func TestParseNode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		node    *corev3.Node
		want    NodeInfo
		wantErr string
	}{
		{"IPv4", node("waypoint~10.244.1.9~wp-1.demo~demo.svc.cluster.local", map[string]string{"GATEWAY": "demo/waypoint", "NAMESPACE": "demo"}),
			NodeInfo{PodIP: netip.MustParseAddr("10.244.1.9"), Pod: "wp-1", Namespace: "demo", Gateway: "demo/waypoint"}, ""},
		{"IPv6", node("waypoint~fd00::9~wp-1.demo~demo.svc.corp.local", map[string]string{"GATEWAY": "demo/wp"}),
			NodeInfo{PodIP: netip.MustParseAddr("fd00::9"), Pod: "wp-1", Namespace: "demo", Gateway: "demo/wp"}, ""},
		{"ztunnel", node("ztunnel~node-1", nil), NodeInfo{}, "must be waypoint~"},
		{"bad IP", node("waypoint~nope~wp-1.demo~demo.svc.cluster.local", map[string]string{"GATEWAY": "demo/wp"}), NodeInfo{}, "pod IP"},
		{"no namespace", node("waypoint~10.0.0.1~wp-1~demo.svc.cluster.local", map[string]string{"GATEWAY": "demo/wp"}), NodeInfo{}, "<pod>.<namespace>"},
		{"domain of another namespace", node("waypoint~10.0.0.1~wp-1.demo~other.svc.cluster.local", map[string]string{"GATEWAY": "demo/wp"}), NodeInfo{}, "demo.svc"},
		{"no GATEWAY", node("waypoint~10.0.0.1~wp-1.demo~demo.svc.cluster.local", nil), NodeInfo{}, "GATEWAY"},
		{"GATEWAY without name", node("waypoint~10.0.0.1~wp-1.demo~demo.svc.cluster.local", map[string]string{"GATEWAY": "demo/"}), NodeInfo{}, "GATEWAY"},
		{"GATEWAY of another namespace", node("waypoint~10.0.0.1~wp-1.demo~demo.svc.cluster.local", map[string]string{"GATEWAY": "prod/wp"}), NodeInfo{}, "another namespace"},
		{"NAMESPACE disagrees", node("waypoint~10.0.0.1~wp-1.demo~demo.svc.cluster.local", map[string]string{"GATEWAY": "demo/wp", "NAMESPACE": "x"}), NodeInfo{}, "disagrees"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseNode(tc.node)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestBuildRefusesBadInput(t *testing.T) {
	id := "spiffe://cluster.local/ns/demo/sa/web"
	wp := Waypoint{Namespace: "demo", Name: "wp"}
	ep := Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.5")}, Identity: id, Healthy: true}
	vip := []netip.Addr{netip.MustParseAddr("10.96.0.1")}
	vip6 := []netip.Addr{netip.MustParseAddr("fd00::1")}
	port := []Port{{Name: "http", Port: 80, TargetPort: 8080}}
	for _, tc := range []struct {
		name string
		in   Input
		want string
	}{
		{"no waypoint name", Input{Waypoint: Waypoint{Namespace: "demo"}}, "namespace and name"},
		{"service without name", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", VIPs: vip, Ports: port}}}, "namespace and name are required"},
		{"port 0", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "a", VIPs: vip, Ports: []Port{{Name: "x"}}}}}, "number 0"},
		{"port twice", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "a", VIPs: vip, Ports: append(port, port...)}}}, "listed twice"},
		{"unknown protocol", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "a", VIPs: vip, Ports: []Port{{Port: 1, Protocol: "udp"}}}}}, "unknown protocol"},
		{"endpoint without IP", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "a", VIPs: vip, Ports: port, Endpoints: []Endpoint{{Identity: id}}}}}, "no valid pod IP"},
		{"endpoint without identity", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "a", VIPs: vip, Ports: port,
			Endpoints: []Endpoint{{Addresses: ep.Addresses}}}}}, "identity is needed"},
		{"endpoint of another trust domain", Input{Waypoint: wp, Services: []Service{{Namespace: "demo", Name: "a", VIPs: vip, Ports: port,
			Endpoints: []Endpoint{{Addresses: ep.Addresses, Identity: "spiffe://other.org/ns/demo/sa/web"}}}}}, "trust domain"},
		{"same VIP:port in two services IPv4", Input{Waypoint: wp, Services: []Service{
			{Namespace: "demo", Name: "a", VIPs: vip, Ports: port}, {Namespace: "demo", Name: "b", VIPs: vip, Ports: port}}}, "both bind 10.96.0.1:80"},
		{"same VIP:port in two services IPv6", Input{Waypoint: wp, Services: []Service{
			{Namespace: "demo", Name: "a", VIPs: vip6, Ports: port}, {Namespace: "demo", Name: "b", VIPs: vip6, Ports: port}}}, "both bind [fd00::1]:80"},
		{"same hostname", Input{Waypoint: wp, Services: []Service{
			{Namespace: "demo", Name: "a", Hostname: "h", VIPs: vip, Ports: port}, {Namespace: "demo", Name: "b", Hostname: "h", VIPs: vip6, Ports: port}}}, "hostname h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build() err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
