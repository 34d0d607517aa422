package waypointxds

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	httpupv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// backendPolicyInput is a bound service echo.demo with three ports, each
// with one BackendPolicy shape of XDS.md §14, and an unbound backend with
// a policy (its cluster carries it too).
func backendPolicyInput() Input {
	id := "spiffe://cluster.local/ns/demo/sa/echo"
	eps := []Endpoint{
		{Name: "echo-1", Namespace: "demo", Addresses: []netip.Addr{addr("10.244.1.5")}, Node: "node-1", Identity: id, Healthy: true},
		{Name: "echo-2", Namespace: "demo", Addresses: []netip.Addr{addr("fd00:10:244:2::7")}, Node: "node-2", Identity: id, Healthy: true},
	}
	return Input{
		Waypoint: Waypoint{Namespace: "demo", Name: "waypoint", Addresses: []netip.Addr{addr("10.244.1.9")}},
		Services: []Service{{
			Namespace: "demo", Name: "echo",
			VIPs: []netip.Addr{addr("10.96.0.20")},
			Ports: []Port{
				{Name: "http", Port: 80, TargetPort: 8080, Backend: &BackendSettings{
					MaxConnections: 100, MaxPendingRequests: 10, MaxRequests: 50, MaxRequestsPerConnection: 5,
					ConnectTimeout: 2 * time.Second,
					Outlier: &OutlierDetection{Consecutive5xx: 3, ConsecutiveGatewayErrors: 2, Interval: time.Second,
						BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: ptr[uint32](25)},
					LB: LBLeastRequest, ChoiceCount: 3,
				}},
				{Name: "grpc", Port: 9090, TargetPort: 9090, Backend: &BackendSettings{
					MaxRequests: 1, LB: LBEWMA,
					Outlier: &OutlierDetection{ConsecutiveGatewayErrors: 5},
				}},
				{Name: "tcp", Port: 5000, TargetPort: 5000, Backend: &BackendSettings{MaxConnections: 1}},
			},
			Endpoints: eps,
		}},
		Backends: []Service{{
			Namespace: "demo", Name: "other", VIPs: []netip.Addr{addr("10.96.0.21")},
			Ports:     []Port{{Name: "http", Port: 80, TargetPort: 8080, Backend: &BackendSettings{LB: LBRoundRobin, MaxPendingRequests: 7}}},
			Endpoints: eps[:1],
		}},
	}
}

// TestBackendSettingsMapping pins each setting of XDS.md §14 to its Envoy
// cluster field.
func TestBackendSettingsMapping(t *testing.T) {
	r, err := Build(backendPolicyInput())
	if err != nil {
		t.Fatal(err)
	}
	cluster := func(host string, port uint16) *clusterv3.Cluster {
		t.Helper()
		c, ok := r[resource.ClusterType][ClusterName(host, port)].(*clusterv3.Cluster)
		if !ok {
			t.Fatalf("no cluster %s", ClusterName(host, port))
		}
		return c
	}
	echo, other := "echo.demo.svc.cluster.local", "other.demo.svc.cluster.local"
	for _, tc := range []struct {
		name string
		got  proto.Message
		want string // protojson
	}{
		{"thresholds with the retry budget", cluster(echo, 80).GetCircuitBreakers(),
			`{"thresholds": [{"max_connections": 100, "max_pending_requests": 10, "max_requests": 50,
			  "retry_budget": {"budget_percent": {"value": 20}, "min_retry_concurrency": 3}}]}`},
		{"only the thresholds set", cluster(echo, 9090).GetCircuitBreakers(),
			`{"thresholds": [{"max_requests": 1, "retry_budget": {"budget_percent": {"value": 20}, "min_retry_concurrency": 3}}]}`},
		{"outlier detection", cluster(echo, 80).GetOutlierDetection(),
			`{"consecutive_5xx": 3, "interval": "1s", "base_ejection_time": "30s", "max_ejection_percent": 25,
			  "enforcing_consecutive_5xx": 100, "enforcing_success_rate": 0,
			  "consecutive_gateway_failure": 2, "enforcing_consecutive_gateway_failure": 100}`},
		{"gateway errors only: Envoy's default 5xx detection off", cluster(echo, 9090).GetOutlierDetection(),
			`{"enforcing_consecutive_5xx": 0, "enforcing_success_rate": 0,
			  "consecutive_gateway_failure": 5, "enforcing_consecutive_gateway_failure": 100}`},
		{"panic threshold 0", cluster(echo, 80).GetCommonLbConfig(), `{"healthy_panic_threshold": {}}`},
		{"least request choice count", cluster(echo, 80).GetLeastRequestLbConfig(), `{"choice_count": 3}`},
		{"connect timeout", cluster(echo, 80).GetConnectTimeout(), `"2s"`},
		{"default connect timeout", cluster(echo, 9090).GetConnectTimeout(), `"10s"`},
		{"EWMA metadata", cluster(echo, 9090).GetMetadata().GetFilterMetadata()[MetadataAmbit].GetFields()[MetadataLBAlgorithm], `"EWMA"`},
		{"backend cluster", cluster(other, 80).GetCircuitBreakers(),
			`{"thresholds": [{"max_pending_requests": 7, "retry_budget": {"budget_percent": {"value": 20}, "min_retry_concurrency": 3}}]}`},
		{"tcp port", cluster(echo, 5000).GetCircuitBreakers(),
			`{"thresholds": [{"max_connections": 1, "retry_budget": {"budget_percent": {"value": 20}, "min_retry_concurrency": 3}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(tc.got)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(compact(t, b)), string(compact(t, []byte(tc.want))); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
	for _, c := range []struct {
		host string
		port uint16
		lb   clusterv3.Cluster_LbPolicy
		per  uint32 // max requests per connection, 0: unset
		od   bool
	}{
		{echo, 80, clusterv3.Cluster_LEAST_REQUEST, 5, true},
		{echo, 9090, clusterv3.Cluster_LEAST_REQUEST, 0, true},
		{echo, 5000, clusterv3.Cluster_ROUND_ROBIN, 0, false},
		{other, 80, clusterv3.Cluster_ROUND_ROBIN, 0, false},
	} {
		cl := cluster(c.host, c.port)
		if cl.GetLbPolicy() != c.lb {
			t.Errorf("%s: lb_policy %v, want %v", cl.Name, cl.GetLbPolicy(), c.lb)
		}
		if (cl.GetOutlierDetection() != nil) != c.od {
			t.Errorf("%s: outlier_detection %v, want set=%v", cl.Name, cl.GetOutlierDetection(), c.od)
		}
		if c.lb == clusterv3.Cluster_ROUND_ROBIN && cl.GetLbConfig() != nil {
			t.Errorf("%s: round robin with an lb config %v", cl.Name, cl.GetLbConfig())
		}
		var opts httpupv3.HttpProtocolOptions
		if a := cl.GetTypedExtensionProtocolOptions()[httpOptionsKey]; a != nil {
			if err := a.UnmarshalTo(&opts); err != nil {
				t.Fatal(err)
			}
		}
		if got := opts.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection().GetValue(); got != c.per {
			t.Errorf("%s: max_requests_per_connection %d, want %d", cl.Name, got, c.per)
		}
	}
	if _, ok := cluster(echo, 80).GetMetadata().GetFilterMetadata()[MetadataAmbit].GetFields()[MetadataLBAlgorithm]; ok {
		t.Error("a LeastRequest cluster is marked with an lb_algorithm")
	}
}

func TestBackendSettingsInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    BackendSettings
		want string
	}{
		{"unknown algorithm", BackendSettings{LB: "Random"}, `unknown load-balancing algorithm "Random"`},
		{"choice count with round robin", BackendSettings{ChoiceCount: 3}, "needs LeastRequest or EWMA"},
		{"choice count 1", BackendSettings{LB: LBLeastRequest, ChoiceCount: 1}, "at least 2"},
		{"outlier without trigger", BackendSettings{Outlier: &OutlierDetection{Interval: time.Second}}, "needs consecutive 5xx or gateway errors"},
		{"ejection over 100", BackendSettings{Outlier: &OutlierDetection{Consecutive5xx: 1, MaxEjectionPercent: ptr[uint32](101)}}, "over 100"},
		{"negative timeout", BackendSettings{ConnectTimeout: -time.Second}, "negative connect timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := exampleInput()
			in.Services[0].Ports[0].Backend = &tc.b
			_, err := Build(in)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "service demo/web port 80") {
				t.Errorf("Build = %v, want an error about demo/web port 80 mentioning %q", err, tc.want)
			}
		})
	}
}
