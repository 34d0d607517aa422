package xdsclient

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/xdstest"
)

// TestParseClusterBackendPolicy covers the cluster fields of a
// BackendPolicy: circuit breaker thresholds, max_requests_per_connection,
// outlier_detection, lb_policy and panic threshold.
func TestParseClusterBackendPolicy(t *testing.T) {
	cluster := func(mutate func(*clusterv3.Cluster)) *clusterv3.Cluster {
		c := xdstest.Cluster(xdstest.Example())
		mutate(c)
		return c
	}
	u := wrapperspb.UInt32
	sec := func(s float64) *durationpb.Duration { return durationpb.New(time.Duration(s * float64(time.Second))) }
	lbAlgo := func(c *clusterv3.Cluster, v string) {
		c.Metadata.FilterMetadata["ambit"].Fields["lb_algorithm"] = structpb.NewStringValue(v)
	}
	perConn := func(n uint32) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions[httpProtocolOptions] = xdstest.Any(&httpv3.HttpProtocolOptions{
				CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: u(n)},
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}},
			})
		}
	}
	od := func(mutate func(*clusterv3.OutlierDetection)) func(*clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			o := &clusterv3.OutlierDetection{EnforcingSuccessRate: u(0)}
			mutate(o)
			c.OutlierDetection = o
		}
	}
	tests := []struct {
		name  string
		c     *clusterv3.Cluster
		err   string
		check func(*model.Cluster) bool
	}{
		{name: "defaults: 1024 each, no outlier detection, round robin",
			c: cluster(func(c *clusterv3.Cluster) { c.CircuitBreakers = nil }),
			check: func(m *model.Cluster) bool {
				return m.Limits == nil && m.Limit(model.LimitRequests) == 1024 && m.Outlier == nil && m.MaxRequestsPerConnection == 0
			},
		},
		{name: "thresholds beside the retry budget", c: cluster(func(c *clusterv3.Cluster) {
			th := c.CircuitBreakers.Thresholds[0]
			th.MaxConnections, th.MaxPendingRequests, th.MaxRequests = u(3), u(0), u(7)
		}), check: func(m *model.Cluster) bool {
			return *m.Limits == model.Thresholds{MaxConnections: 3, MaxPendingRequests: 0, MaxRequests: 7} && m.RetryBudget != nil
		}},
		{name: "one threshold set, the others 1024", c: cluster(func(c *clusterv3.Cluster) {
			c.CircuitBreakers.Thresholds[0].MaxPendingRequests = u(1)
		}), check: func(m *model.Cluster) bool {
			return *m.Limits == model.Thresholds{MaxConnections: 1024, MaxPendingRequests: 1, MaxRequests: 1024}
		}},
		{name: "max_requests_per_connection", c: cluster(perConn(10)), check: func(m *model.Cluster) bool { return m.MaxRequestsPerConnection == 10 }},
		{name: "common_http_protocol_options idle_timeout refused", c: cluster(func(c *clusterv3.Cluster) {
			perConn(1)(c)
			var hpo httpv3.HttpProtocolOptions
			_ = c.TypedExtensionProtocolOptions[httpProtocolOptions].UnmarshalTo(&hpo)
			hpo.CommonHttpProtocolOptions.IdleTimeout = sec(60)
			c.TypedExtensionProtocolOptions[httpProtocolOptions] = xdstest.Any(&hpo)
		}), err: "common_http_protocol_options sets idle_timeout"},
		{name: "least request, default choices", c: cluster(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST }),
			check: func(m *model.Cluster) bool {
				return m.LB == model.LoadBalancing{Policy: model.LBLeastRequest, ChoiceCount: 2}
			}},
		{name: "least request, 3 choices", c: cluster(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: u(3)}}
		}), check: func(m *model.Cluster) bool { return m.LB.Policy == model.LBLeastRequest && m.LB.ChoiceCount == 3 }},
		{name: "least request bias refused", c: cluster(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: 2, RuntimeKey: "x"}}}
		}), err: "least_request_lb_config sets active_request_bias"},
		{name: "EWMA", c: cluster(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST; lbAlgo(c, "EWMA") }),
			check: func(m *model.Cluster) bool { return m.LB.Policy == model.LBPeakEWMA && m.LB.ChoiceCount == 2 }},
		{name: "EWMA with round robin refused", c: cluster(func(c *clusterv3.Cluster) { lbAlgo(c, "EWMA") }),
			err: `metadata ambit.lb_algorithm "EWMA": only "EWMA", and only with lb_policy LEAST_REQUEST`},
		{name: "unknown lb_algorithm refused", c: cluster(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST; lbAlgo(c, "P2C") }),
			err: `lb_algorithm "P2C"`},
		{name: "RING_HASH refused", c: cluster(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH }),
			err: "lb_policy RING_HASH is not supported yet"},
		{name: "panic threshold default 50", c: cluster(func(c *clusterv3.Cluster) { c.CommonLbConfig = nil }),
			check: func(m *model.Cluster) bool { return m.LB.PanicThreshold == 50 }},
		{name: "panic threshold rounded", c: cluster(func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 33.5}}
		}), check: func(m *model.Cluster) bool { return m.LB.PanicThreshold == 34 }},
		{name: "panic threshold 0", c: cluster(func(*clusterv3.Cluster) {}), check: func(m *model.Cluster) bool { return m.LB.PanicThreshold == 0 }},
		{name: "outlier detection defaults", c: cluster(od(func(*clusterv3.OutlierDetection) {})),
			check: func(m *model.Cluster) bool { return *m.Outlier == model.DefaultOutlierDetection }},
		{name: "outlier detection of a BackendPolicy", c: cluster(od(func(o *clusterv3.OutlierDetection) {
			o.Consecutive_5Xx, o.ConsecutiveGatewayFailure = u(3), u(2)
			o.Interval, o.BaseEjectionTime = sec(1), sec(15)
			o.MaxEjectionPercent, o.EnforcingConsecutive_5Xx, o.EnforcingConsecutiveGatewayFailure = u(50), u(100), u(100)
		})), check: func(m *model.Cluster) bool {
			return *m.Outlier == model.OutlierDetection{Consecutive5xx: 3, ConsecutiveGatewayFailure: 2, Interval: time.Second,
				BaseEjectionTime: 15 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50, Enforcing5xx: 100, EnforcingGatewayFailure: 100}
		}},
		{name: "always_eject_one_host", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.AlwaysEjectOneHost = wrapperspb.Bool(true) })),
			check: func(m *model.Cluster) bool { return m.Outlier.AlwaysEjectOneHost }},
		{name: "success rate on by default refused", c: cluster(func(c *clusterv3.Cluster) { c.OutlierDetection = &clusterv3.OutlierDetection{} }),
			err: "enforcing_success_rate must be 0"},
		{name: "success rate enforced refused", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.EnforcingSuccessRate = u(100) })),
			err: "enforcing_success_rate must be 0"},
		{name: "success rate settings refused", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.SuccessRateMinimumHosts = u(3) })),
			err: "outlier_detection sets success_rate_minimum_hosts"},
		{name: "failure percentage refused", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.EnforcingFailurePercentage = u(100) })),
			err: "outlier_detection sets enforcing_failure_percentage"},
		{name: "split local origin errors refused", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.SplitExternalLocalOriginErrors = true })),
			err: "outlier_detection sets split_external_local_origin_errors"},
		{name: "ejection jitter refused", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.MaxEjectionTimeJitter = sec(1) })),
			err: "outlier_detection sets max_ejection_time_jitter"},
		{name: "percentage over 100 refused", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.MaxEjectionPercent = u(150) })),
			err: "MaxEjectionPercent: value must be less than or equal to 100"},
		{name: "zero interval refused", c: cluster(od(func(o *clusterv3.OutlierDetection) { o.Interval = sec(0) })),
			err: "Interval: value must be greater than 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseClusterCase(t, tt.c, tt.err)
			if got == nil {
				return
			}
			if !tt.check(got) {
				t.Fatalf("got limits %+v, per connection %d, lb %+v, outlier %+v", got.Limits, got.MaxRequestsPerConnection, got.LB, got.Outlier)
			}
		})
	}
}

// parseClusterCase parses c: with wantErr, it checks the error contains
// it and returns nil; else it fails on an error.
func parseClusterCase(t *testing.T, c *clusterv3.Cluster, wantErr string) *model.Cluster {
	t.Helper()
	got, err := ParseCluster(roundTrip(t, c))
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("ParseCluster error = %v, want one containing %q", err, wantErr)
		}
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return got.Cluster
}
