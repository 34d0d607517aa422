package xdsclient

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// supported lists, per message the waypoint interprets, the fields it
// honours or that do not change behaviour for it. Any other field that is
// set (to a non-default value) makes the resource unusable: it is NACKed
// rather than silently ignored (XDS.md §2). Growing a feature means adding
// its field here and implementing it.
var supported = map[protoreflect.FullName][]string{
	msgName(&listenerv3.FilterChainMatch{}): {"destination_port", "prefix_ranges"},
	msgName(&clusterv3.Cluster{}): {
		"name", "alt_stat_name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
		"transport_socket", "typed_extension_protocol_options", "metadata", "common_lb_config", "circuit_breakers",
		"least_request_lb_config", "outlier_detection",
	},
	msgName(&clusterv3.Cluster_LeastRequestLbConfig{}): {"choice_count"},
	// Consecutive 5xx and gateway failure detection; success rate
	// detection off (enforcing_success_rate 0, checked).
	msgName(&clusterv3.OutlierDetection{}): {
		"consecutive_5xx", "consecutive_gateway_failure", "interval", "base_ejection_time", "max_ejection_time",
		"max_ejection_percent", "enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure",
		"enforcing_success_rate", "always_eject_one_host",
	},
	msgName(&httpv3.HttpProtocolOptions{}): {"explicit_http_config", "common_http_protocol_options"},
	msgName(&corev3.HttpProtocolOptions{}): {"max_requests_per_connection"},
	// Panic mode (XDS.md §11 "How the Go waypoint reads this").
	msgName(&clusterv3.Cluster_CommonLbConfig{}): {"healthy_panic_threshold"},
	// Everything is honoured: access_log (XDS.md §13, parseAccessLogs),
	// tracing and request ids (§16).
	msgName(&hcmv3.HttpConnectionManager{}): {
		"codec_type", "stat_prefix", "rds", "route_config", "http_filters", "forward_client_cert_details",
		"use_remote_address", "http2_protocol_options", "http_protocol_options", "common_http_protocol_options",
		"upgrade_configs", "set_current_client_cert_details", "delayed_close_timeout", "drain_timeout",
		"stream_idle_timeout", // 0s only (checkIdleTimeout)
		"access_log", "tracing", "generate_request_id", "preserve_external_request_id",
	},
	// Trace context headers (XDS.md §16); spans are not exported, so the
	// collector fields change nothing for the Go waypoint.
	msgName(&hcmv3.HttpConnectionManager_Tracing{}): {"random_sampling", "provider"},
	msgName(&tracev3.ZipkinConfig{}): {
		"collector_cluster", "collector_endpoint", "collector_endpoint_version", "trace_id_128bit",
		"shared_span_context", "trace_context_option",
	},
	// Fault injection (XDS.md §15): fixed delays, HTTP and gRPC aborts.
	msgName(&faultv3.HTTPFault{}):          {"delay", "abort"},
	msgName(&commonfaultv3.FaultDelay{}):   {"fixed_delay", "percentage"},
	msgName(&faultv3.FaultAbort{}):         {"http_status", "grpc_status", "percentage"},
	msgName(&tcpproxyv3.TcpProxy{}):        {"stat_prefix", "cluster", "tunneling_config", "access_log"},
	msgName(&routev3.RouteConfiguration{}): {"name", "virtual_hosts", "validate_clusters"},
	msgName(&routev3.VirtualHost{}):        {"name", "domains", "routes"},
	msgName(&routev3.Route{}): {
		"name", "match", "route", "redirect", "direct_response", "metadata", "decorator",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove",
		"typed_per_filter_config", // the fault filter's only
	},
	msgName(&routev3.RouteMatch{}): {
		"prefix", "path", "path_separated_prefix", "safe_regex", "connect_matcher", "case_sensitive", "headers", "query_parameters",
	},
	// present_match only in RBAC headers (routes refuse it).
	msgName(&routev3.HeaderMatcher{}):         {"name", "string_match", "present_match"},
	msgName(&routev3.QueryParameterMatcher{}): {"name", "string_match"},
	// prefix, suffix, contains and ignore_case only in RBAC matchers
	// (routes refuse them, parseStringMatch).
	msgName(&matcherv3.StringMatcher{}): {"exact", "safe_regex", "prefix", "suffix", "contains", "ignore_case"},
	// L7 authorization (XDS.md §12).
	msgName(&httprbacv3.RBAC{}):       {"rules", "shadow_rules", "rules_stat_prefix", "shadow_rules_stat_prefix"},
	msgName(&netrbacv3.RBAC{}):        {"rules", "shadow_rules", "stat_prefix", "shadow_rules_stat_prefix"},
	msgName(&rbacv3.RBAC{}):           {"action", "policies"},
	msgName(&rbacv3.Policy{}):         {"permissions", "principals"},
	msgName(&matcherv3.PathMatcher{}): {"path"},
	// google_re2 is deprecated (RE2 is the only engine): accepted, set or not.
	msgName(&matcherv3.RegexMatcher{}):            {"regex", "google_re2"},
	msgName(&matcherv3.RegexMatchAndSubstitute{}): {"pattern", "substitution"},
	msgName(&routev3.RouteAction{}): {
		"cluster", "weighted_clusters", "timeout", "upgrade_configs", "retry_policy",
		"prefix_rewrite", "regex_rewrite", "host_rewrite_literal",
	},
	msgName(&routev3.WeightedCluster{}):               {"clusters"},
	msgName(&routev3.WeightedCluster_ClusterWeight{}): {"name", "weight"},
	msgName(&routev3.RetryPolicy{}): {
		"retry_on", "num_retries", "per_try_timeout", "retriable_status_codes", "retry_back_off",
	},
	msgName(&routev3.RetryPolicy_RetryBackOff{}): {"base_interval", "max_interval"},
	msgName(&routev3.RedirectAction{}): {
		"scheme_redirect", "host_redirect", "port_redirect", "path_redirect", "prefix_rewrite", "response_code",
	},
	msgName(&routev3.DirectResponseAction{}): {"status"},
	msgName(&corev3.HeaderValueOption{}):     {"header", "append_action"},
	msgName(&corev3.HeaderValue{}):           {"key", "value"},
	// Priority DEFAULT: the retry budget and the connection, pending and
	// request limits (XDS.md §5.2).
	msgName(&clusterv3.CircuitBreakers{}):                        {"thresholds"},
	msgName(&clusterv3.CircuitBreakers_Thresholds{}):             {"priority", "retry_budget", "max_connections", "max_pending_requests", "max_requests"},
	msgName(&clusterv3.CircuitBreakers_Thresholds_RetryBudget{}): {"budget_percent", "min_retry_concurrency"},
	msgName(&endpointv3.ClusterLoadAssignment{}):                 {"cluster_name", "endpoints", "policy"},
	msgName(&endpointv3.LocalityLbEndpoints{}):                   {"locality", "lb_endpoints", "load_balancing_weight", "priority"},
	msgName(&endpointv3.LbEndpoint{}):                            {"endpoint", "health_status", "metadata", "load_balancing_weight"},
}

func msgName(m proto.Message) protoreflect.FullName { return m.ProtoReflect().Descriptor().FullName() }

// checkFields returns an error naming every field of m that is set but not
// in supported[m's type]. where prefixes the message ("route \"x\"").
func checkFields(m proto.Message, where string) error {
	r := m.ProtoReflect()
	ok, known := supported[r.Descriptor().FullName()]
	if !known {
		return fmt.Errorf("internal error: no field list for %s", r.Descriptor().FullName())
	}
	var bad []string
	r.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(ok, string(fd.Name())) {
			bad = append(bad, string(fd.Name()))
		}
		return true
	})
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("%s sets %s, which the Go waypoint does not support yet (XDS.md lists what it honours)", where, strings.Join(bad, ", "))
}
