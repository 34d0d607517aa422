package waypointxds

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// exampleInput is the example of XDS.md §10.
func exampleInput() Input {
	return Input{
		Waypoint: Waypoint{Namespace: "demo", Name: "waypoint", Addresses: []netip.Addr{addr("10.244.1.9")}},
		Services: []Service{{
			Namespace: "demo", Name: "web",
			VIPs:  []netip.Addr{addr("10.96.0.10"), addr("fd00:10:96::a")},
			Ports: []Port{{Name: "http", Port: 80, TargetPort: 8080}},
			Endpoints: []Endpoint{
				{Name: "web-2", Namespace: "demo", Addresses: []netip.Addr{addr("10.244.2.7")}, Node: "node-2",
					Identity: "spiffe://cluster.local/ns/demo/sa/web", Healthy: true},
				{Name: "web-1", Namespace: "demo", Addresses: []netip.Addr{addr("10.244.1.5")}, Node: "node-1",
					Identity: "spiffe://cluster.local/ns/demo/sa/web", Healthy: true},
			},
		}},
	}
}

// mixedInput has IPv6-only and dual-stack services, TCP, HTTP/2 and gRPC
// ports, named target ports, an unready pod, a headless service and an
// IPv6 waypoint.
func mixedInput() Input {
	id := "spiffe://example.org/ns/shop/sa/default"
	return Input{
		Waypoint: Waypoint{Namespace: "shop", Name: "wp", ClusterDomain: "corp.local", TrustDomain: "example.org",
			Addresses: []netip.Addr{addr("10.1.0.4"), addr("fd00:1::4")}},
		Services: []Service{
			{
				Namespace: "shop", Name: "db", VIPs: []netip.Addr{addr("fd00:96::20")},
				Ports:     []Port{{Name: "postgres", Port: 5432, TargetPort: 5432}},
				Endpoints: []Endpoint{{Addresses: []netip.Addr{addr("fd00:1::7")}, Identity: id, Healthy: true}},
			},
			{
				Namespace: "shop", Name: "api", VIPs: []netip.Addr{addr("10.96.3.3"), addr("fd00:96::3")},
				Ports: []Port{
					{Name: "grpc-api", Port: 9000}, // named target port
					{Name: "web", AppProtocol: "kubernetes.io/h2c", Port: 8443, TargetPort: 8443}, // h2c
				},
				Endpoints: []Endpoint{
					{Name: "api-a", Namespace: "shop", Addresses: []netip.Addr{addr("10.1.0.8"), addr("fd00:1::8")}, Node: "n1",
						Identity: id, Healthy: true, TargetPorts: map[uint16]uint16{9000: 19000}},
					{Name: "api-b", Namespace: "shop", Addresses: []netip.Addr{addr("fd00:1::9")}, Node: "n2",
						Identity: id, Healthy: false, TargetPorts: map[uint16]uint16{9000: 19001}},
					{Name: "api-c", Namespace: "shop", Addresses: []netip.Addr{addr("10.1.0.10")}, Node: "n2",
						Identity: id, Healthy: true}, // lacks the named port: only in 8443
					// Outside the mesh (a sidecar-era pod): reached directly.
					{Name: "api-legacy", Namespace: "shop", Addresses: []netip.Addr{addr("10.1.0.11")}, Node: "n1",
						Healthy: true, Plaintext: true},
				},
			},
			{Namespace: "shop", Name: "headless", Ports: []Port{{Name: "http", Port: 80}}},
		},
	}
}

// render returns the resources as indented JSON, one document per type
// in the order LDS, CDS, EDS, RDS, resources sorted by name.
func render(t *testing.T, r Resources) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, typ := range servedTypes {
		out.WriteString("# " + typ + "\n")
		for _, n := range r.Names(typ) {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r[typ][n])
			if err != nil {
				t.Fatal(err)
			}
			// protojson output is deliberately unstable in whitespace:
			// normalise it.
			var buf bytes.Buffer
			if err := json.Indent(&buf, compact(t, b), "", "  "); err != nil {
				t.Fatal(err)
			}
			out.Write(buf.Bytes())
			out.WriteString("\n")
		}
	}
	return out.Bytes()
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		t.Fatal(err)
	}
	return c.Bytes()
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Input
	}{
		{"example", exampleInput()},
		{"mixed", mixedInput()},
		{"httproute", httprouteInput()},
		{"authz", authzInput()},
		{"fault", faultInput()},
		{"backendpolicy", backendPolicyInput()},
		{"empty", Input{Waypoint: Waypoint{Namespace: "demo", Name: "idle"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Build(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, r)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the built resources (run go test -run TestGolden -update and review the diff):\n%s", path, firstDiff(string(want), string(got)))
			}
			// Building twice gives the same bytes (stable ordering).
			again, err := Build(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(render(t, again), got) {
				t.Error("two builds of the same input render differently")
			}
		})
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + strconv.Itoa(i+1) + ":\n- " + w + "\n+ " + g
		}
	}
	return "(no line differs)"
}

func TestEveryResourceValidates(t *testing.T) {
	for name, in := range map[string]Input{"example": exampleInput(), "mixed": mixedInput(), "httproute": httprouteInput(), "backendpolicy": backendPolicyInput()} {
		t.Run(name, func(t *testing.T) {
			r, err := Build(in)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			s, err := r.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Consistent(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestValidateCatchesBadResources makes sure the validation can fail: a
// broken typed config inside an Any, an EDS name nobody references, and a
// resource under the wrong key are reported.
func TestValidateCatchesBadResources(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(Resources)
		want   string
	}{
		{"empty stat_prefix inside the HCM Any", func(r Resources) {
			l := r[resource.ListenerType][ListenerMainInternal].(*listenerv3.Listener)
			hcm := &hcmv3.HttpConnectionManager{}
			if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				panic(err)
			}
			hcm.StatPrefix = ""
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
		}, "StatPrefix"},
		{"Any of an unknown type", func(r Resources) {
			l := r[resource.ListenerType][ListenerConnectOriginate].(*listenerv3.Listener)
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type"}}
		}, "no.such.Type"},
		{"unreferenced endpoints", func(r Resources) {
			r[resource.EndpointType]["stray"] = &endpointv3.ClusterLoadAssignment{ClusterName: "stray"}
		}, "inconsistent"},
		{"missing route", func(r Resources) {
			delete(r[resource.RouteType], RouteName("web.demo.svc.cluster.local", 80))
		}, "mismatched"},
		{"wrong key", func(r Resources) {
			r[resource.ClusterType]["other"] = &clusterv3.Cluster{Name: "BlackHoleCluster2", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
		}, `named "BlackHoleCluster2"`},
		{"route without virtual host domains", func(r Resources) {
			rc := r[resource.RouteType][RouteName("web.demo.svc.cluster.local", 80)].(*routev3.RouteConfiguration)
			rc.VirtualHosts[0].Domains = nil
		}, "Domains"},
		{"port above 65535 in a filter chain match", func(r Resources) {
			l := r[resource.ListenerType][ListenerMainInternal].(*listenerv3.Listener)
			l.FilterChains[0].FilterChainMatch.DestinationPort = wrapperspb.UInt32(70000)
		}, "DestinationPort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Build(exampleInput())
			if err != nil {
				t.Fatal(err)
			}
			tc.break_(r)
			err = r.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
