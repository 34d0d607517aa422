package xdsclient

import (
	"fmt"
	"math"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"ambit.dev/waypoint/internal/model"
)

// lbAlgorithmKey is the cluster metadata key (namespace ambit) that turns
// LEAST_REQUEST into peak EWMA (XDS.md §5.2).
const (
	lbAlgorithmKey  = "lb_algorithm"
	lbAlgorithmEWMA = "EWMA"
)

// parseLoadBalancing reads lb_policy, least_request_lb_config,
// common_lb_config and the ambit lb_algorithm metadata.
func parseLoadBalancing(c *clusterv3.Cluster, where string) (model.LoadBalancing, error) {
	lb := model.LoadBalancing{ChoiceCount: model.DefaultChoiceCount, PanicThreshold: model.DefaultPanicThreshold}
	algo := str(c.GetMetadata().GetFilterMetadata()[MetadataAmbit], lbAlgorithmKey)
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		lb.Policy = model.LBRoundRobin
		if c.GetLeastRequestLbConfig() != nil {
			return lb, fmt.Errorf("%s: least_request_lb_config with lb_policy ROUND_ROBIN", where)
		}
	case clusterv3.Cluster_LEAST_REQUEST:
		lb.Policy = model.LBLeastRequest
		if cfg := c.GetLeastRequestLbConfig(); cfg != nil {
			if err := checkFields(cfg, where+": least_request_lb_config"); err != nil {
				return lb, err
			}
			if n := cfg.GetChoiceCount(); n != nil {
				lb.ChoiceCount = int(n.GetValue())
			}
		}
	default:
		return lb, fmt.Errorf("%s: lb_policy %s is not supported yet (ROUND_ROBIN, LEAST_REQUEST)", where, c.GetLbPolicy())
	}
	switch {
	case algo == "":
	case algo == lbAlgorithmEWMA && lb.Policy == model.LBLeastRequest:
		lb.Policy = model.LBPeakEWMA
	default:
		return lb, fmt.Errorf("%s: metadata ambit.%s %q: only %q, and only with lb_policy LEAST_REQUEST", where, lbAlgorithmKey, algo, lbAlgorithmEWMA)
	}
	if cl := c.GetCommonLbConfig(); cl != nil {
		if err := checkFields(cl, where+": common_lb_config"); err != nil {
			return lb, err
		}
		if p := cl.GetHealthyPanicThreshold(); p != nil {
			// Envoy rounds the Percent to an integer and caps it at 100.
			lb.PanicThreshold = uint32(min(math.Round(p.GetValue()), 100))
		}
	}
	return lb, nil
}

// parseThresholds reads the limits of the DEFAULT threshold (the same
// entry as the retry budget); absent fields are Envoy's 1024.
func parseThresholds(cb *clusterv3.CircuitBreakers) *model.Thresholds {
	t := model.DefaultThresholds
	for _, th := range cb.GetThresholds() {
		if th.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		for _, f := range []struct {
			v   *wrapperspb.UInt32Value
			dst *int64
		}{
			{th.GetMaxConnections(), &t.MaxConnections},
			{th.GetMaxPendingRequests(), &t.MaxPendingRequests},
			{th.GetMaxRequests(), &t.MaxRequests},
		} {
			if f.v != nil {
				*f.dst = int64(f.v.GetValue())
			}
		}
	}
	return &t
}

// parseCommonHTTPOptions reads HttpProtocolOptions.common_http_protocol_options
// (max_requests_per_connection only).
func parseCommonHTTPOptions(hpo *httpv3.HttpProtocolOptions, where string) (uint32, error) {
	if err := checkFields(hpo, where+": HttpProtocolOptions"); err != nil {
		return 0, err
	}
	co := hpo.GetCommonHttpProtocolOptions()
	if co == nil {
		return 0, nil
	}
	if err := checkFields(co, where+": common_http_protocol_options"); err != nil {
		return 0, err
	}
	return co.GetMaxRequestsPerConnection().GetValue(), nil
}

// parseOutlierDetection reads outlier_detection: the consecutive 5xx and
// gateway failure detectors. Success rate detection, on by default in
// Envoy, must be turned off with enforcing_success_rate: 0, and no
// success rate, failure percentage or local origin field may be set.
func parseOutlierDetection(od *clusterv3.OutlierDetection, where string) (*model.OutlierDetection, error) {
	where += ": outlier_detection"
	if err := checkFields(od, where); err != nil {
		return nil, err
	}
	if r := od.GetEnforcingSuccessRate(); r == nil || r.GetValue() != 0 {
		return nil, fmt.Errorf("%s: enforcing_success_rate must be 0 (unset is 100): the Go waypoint has no success rate ejection", where)
	}
	o := model.DefaultOutlierDetection
	// Percentages ≤ 100 and a positive interval: Validate checked them.
	for _, f := range []struct {
		v   *wrapperspb.UInt32Value
		dst *uint32
	}{
		{od.GetConsecutive_5Xx(), &o.Consecutive5xx},
		{od.GetConsecutiveGatewayFailure(), &o.ConsecutiveGatewayFailure},
		{od.GetMaxEjectionPercent(), &o.MaxEjectionPercent},
		{od.GetEnforcingConsecutive_5Xx(), &o.Enforcing5xx},
		{od.GetEnforcingConsecutiveGatewayFailure(), &o.EnforcingGatewayFailure},
	} {
		if f.v != nil {
			*f.dst = f.v.GetValue()
		}
	}
	for _, f := range []struct {
		v   *durationpb.Duration
		dst *time.Duration
	}{
		{od.GetInterval(), &o.Interval},
		{od.GetBaseEjectionTime(), &o.BaseEjectionTime},
		{od.GetMaxEjectionTime(), &o.MaxEjectionTime},
	} {
		if f.v != nil {
			*f.dst = f.v.AsDuration()
		}
	}
	o.AlwaysEjectOneHost = od.GetAlwaysEjectOneHost().GetValue()
	return &o, nil
}
