package waypointxds

import (
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Trace context (XDS.md §16): every HTTP chain's connection manager keeps
// or generates x-request-id and traces every request with the Zipkin
// tracer in its B3 + W3C mode, so that the waypoint continues (or starts)
// the trace in both traceparent and B3 headers with a span of its own.
const (
	// ZipkinTracer is the tracer extension of the HCM tracing provider.
	ZipkinTracer = "envoy.tracers.zipkin"
	// zipkinEndpoint is the collector path Zipkin's tracer posts to.
	zipkinEndpoint = "/api/v2/spans"
	// TraceSamplingPercent is the random_sampling of new traces.
	TraceSamplingPercent = 100
)

// tracing is the HCM tracing of an HTTP chain. Spans are reported to
// BlackHoleCluster (there is no collector in the mesh yet): only the
// propagated headers matter.
func tracing() *hcmv3.HttpConnectionManager_Tracing {
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: TraceSamplingPercent},
		Provider: &tracev3.Tracing_Http{
			Name: ZipkinTracer,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.ZipkinConfig{
				CollectorCluster:         BlackHoleCluster,
				CollectorEndpoint:        zipkinEndpoint,
				CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
				// 128-bit trace ids, as W3C traceparent has.
				TraceId_128Bit: true,
				// The waypoint's span is a child of the caller's, with a
				// new span id (not Zipkin's shared client/server span).
				SharedSpanContext:  wrapperspb.Bool(false),
				TraceContextOption: tracev3.ZipkinConfig_USE_B3_WITH_W3C_PROPAGATION,
			})},
		},
	}
}
