package xdsclient

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/xdstest"
)

func fixedDelay(d time.Duration, pct *typev3.FractionalPercent) *commonfaultv3.FaultDelay {
	return &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: pct}
}

func TestParseFault(t *testing.T) {
	hundred := func(n uint32) *typev3.FractionalPercent {
		return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
	}
	d200 := 200 * time.Millisecond
	for _, tc := range []struct {
		name string
		in   *faultv3.HTTPFault
		want *model.Fault
		err  string
	}{
		{name: "delay 100%", in: &faultv3.HTTPFault{Delay: fixedDelay(d200, hundred(100))},
			want: &model.Fault{Delay: &d200, DelayPerMillion: model.PerMillion}},
		{name: "delay without percentage is 100%", in: &faultv3.HTTPFault{Delay: fixedDelay(d200, nil)},
			want: &model.Fault{Delay: &d200, DelayPerMillion: model.PerMillion}},
		{name: "abort 50% http", in: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}, Percentage: hundred(50)}},
			want: &model.Fault{Abort: &model.Abort{HTTPStatus: 503}, AbortPerMillion: 500_000}},
		{name: "abort grpc per ten thousand", in: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14},
			Percentage: &typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_TEN_THOUSAND}}},
			want: &model.Fault{Abort: &model.Abort{GRPC: true, GRPCStatus: 14}, AbortPerMillion: 2_500}},
		{name: "percentage above 100% is capped", in: &faultv3.HTTPFault{Delay: fixedDelay(d200, hundred(250))},
			want: &model.Fault{Delay: &d200, DelayPerMillion: model.PerMillion}},
		{name: "header delay", in: &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_HeaderDelay_{HeaderDelay: &commonfaultv3.FaultDelay_HeaderDelay{}}}},
			err: "header_delay"},
		{name: "header abort", in: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}}},
			err: "header_abort"},
		{name: "http status out of range", in: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 100}}},
			err: "HttpStatus"},
		{name: "grpc status out of range", in: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 30}}},
			err: "not a gRPC status code"},
		{name: "abort without a status", in: &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{Percentage: hundred(1)}},
			err: "ErrorType"},
		{name: "max_active_faults", in: &faultv3.HTTPFault{Delay: fixedDelay(d200, nil), MaxActiveFaults: wrapperspb.UInt32(3)},
			err: "max_active_faults"},
		{name: "header-selected faults", in: &faultv3.HTTPFault{Delay: fixedDelay(d200, nil), Headers: []*routev3.HeaderMatcher{{Name: "x"}}},
			err: "headers"},
		{name: "response rate limit", in: &faultv3.HTTPFault{ResponseRateLimit: &commonfaultv3.FaultRateLimit{}},
			err: "ResponseRateLimit"},
		{name: "negative delay", in: &faultv3.HTTPFault{Delay: fixedDelay(-time.Second, nil)}, err: "greater than 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mr model.Route
			err := parseRouteFilters(map[string]*anypb.Any{filterFault: xdstest.Any(tc.in)}, &mr)
			if !expectError(t, err, tc.err) {
				return
			}
			got := mr.Fault
			if (got.Delay == nil) != (tc.want.Delay == nil) || (got.Delay != nil && *got.Delay != *tc.want.Delay) ||
				got.DelayPerMillion != tc.want.DelayPerMillion || got.AbortPerMillion != tc.want.AbortPerMillion ||
				(got.Abort == nil) != (tc.want.Abort == nil) || (got.Abort != nil && *got.Abort != *tc.want.Abort) {
				t.Errorf("fault %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseHCMFaultFilterAndTracing(t *testing.T) {
	router := &hcmv3.HttpFilter{Name: filterRouter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.Any(&routerv3.Router{})}}
	faultF := func(f *faultv3.HTTPFault) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: filterFault, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.Any(f)}}
	}
	zipkin := func(mut func(*tracev3.ZipkinConfig)) *hcmv3.HttpConnectionManager_Tracing {
		tr := xdstest.Tracing()
		var z tracev3.ZipkinConfig
		if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(&z); err != nil {
			t.Fatal(err)
		}
		mut(&z)
		tr.Provider.ConfigType = &tracev3.Tracing_Http_TypedConfig{TypedConfig: xdstest.Any(&z)}
		return tr
	}
	for _, tc := range []struct {
		name  string
		mut   func(*hcmv3.HttpConnectionManager)
		fault bool
		trace *model.TraceConfig
		err   string
	}{
		{name: "the contract's HCM", fault: true, trace: &model.TraceConfig{GenerateRequestID: true, Tracing: true, SamplePerMillion: model.PerMillion}},
		{name: "no fault filter, no tracing", mut: func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters, h.Tracing = []*hcmv3.HttpFilter{router}, nil
		}, trace: &model.TraceConfig{GenerateRequestID: true}},
		{name: "request ids off", mut: func(h *hcmv3.HttpConnectionManager) {
			h.GenerateRequestId, h.Tracing = wrapperspb.Bool(false), nil
		}, fault: true, trace: &model.TraceConfig{}},
		{name: "sampling 25%", mut: func(h *hcmv3.HttpConnectionManager) { h.Tracing.RandomSampling.Value = 25 },
			fault: true, trace: &model.TraceConfig{GenerateRequestID: true, Tracing: true, SamplePerMillion: 250_000}},
		{name: "fault filter with its own delay", mut: func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = []*hcmv3.HttpFilter{faultF(&faultv3.HTTPFault{Delay: fixedDelay(time.Second, nil)}), router}
		}, err: "filter-level delay or abort"},
		{name: "fault filter twice", mut: func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = []*hcmv3.HttpFilter{faultF(&faultv3.HTTPFault{}), faultF(&faultv3.HTTPFault{}), router}
		}, err: "appears twice"},
		{name: "fault filter after the router", mut: func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = []*hcmv3.HttpFilter{router, faultF(&faultv3.HTTPFault{})}
		}, err: "must end with envoy.filters.http.router"},
		{name: "other tracer", mut: func(h *hcmv3.HttpConnectionManager) { h.Tracing.Provider.Name = "envoy.tracers.opentelemetry" },
			err: `provider "envoy.tracers.opentelemetry" is not supported`},
		{name: "B3 only", mut: func(h *hcmv3.HttpConnectionManager) {
			h.Tracing = zipkin(func(z *tracev3.ZipkinConfig) { z.TraceContextOption = tracev3.ZipkinConfig_USE_B3 })
		}, err: "trace_context_option USE_B3"},
		{name: "shared span", mut: func(h *hcmv3.HttpConnectionManager) {
			h.Tracing = zipkin(func(z *tracev3.ZipkinConfig) { z.SharedSpanContext = nil })
		}, err: "shared_span_context must be false"},
		{name: "client sampling", mut: func(h *hcmv3.HttpConnectionManager) { h.Tracing.ClientSampling = &typev3.Percent{Value: 1} },
			err: "client_sampling"},
		{name: "sampling above 100", mut: func(h *hcmv3.HttpConnectionManager) { h.Tracing.RandomSampling.Value = 101 },
			err: "not a percentage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hcm hcmv3.HttpConnectionManager
			if err := xdstest.Chain(xdstest.Example()).GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			if tc.mut != nil {
				tc.mut(&hcm)
			}
			_, fault, trace, err := parseHCM(&hcm)
			if !expectError(t, err, tc.err) {
				return
			}
			if fault != tc.fault || *trace != *tc.trace {
				t.Errorf("fault %v trace %+v, want %v %+v", fault, *trace, tc.fault, *tc.trace)
			}
		})
	}
}

// expectError fails t unless err contains want (want empty: err is nil),
// and reports whether the test case goes on (no error expected).
func expectError(t *testing.T, err error, want string) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatal(err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	return want == ""
}
