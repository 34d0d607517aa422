package xdsclient

import (
	"errors"
	"fmt"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"ambit.dev/waypoint/internal/model"
)

const (
	filterFault  = "envoy.filters.http.fault"
	tracerZipkin = "envoy.tracers.zipkin"
)

// parseFaultFilter checks the fault filter of an HCM: its own config must
// be empty (the routes carry the faults, XDS.md §15).
func parseFaultFilter(f *hcmv3.HttpFilter) error {
	var fc faultv3.HTTPFault
	if err := unmarshalAny(f.GetTypedConfig(), &fc); err != nil {
		return fmt.Errorf("HTTP filter %s: %w", filterFault, err)
	}
	if err := checkFields(&fc, "HTTP filter "+filterFault); err != nil {
		return err
	}
	if fc.GetDelay() != nil || fc.GetAbort() != nil {
		return fmt.Errorf("HTTP filter %s has a filter-level delay or abort: the Go waypoint takes faults from the routes' typed_per_filter_config only", filterFault)
	}
	return nil
}

// parseRouteFilters reads a route's typed_per_filter_config: only the
// fault filter's.
func parseRouteFilters(cfg map[string]*anypb.Any, mr *model.Route) error {
	for name, a := range cfg {
		if name != filterFault {
			return fmt.Errorf("typed_per_filter_config for %q is not supported (only %s)", name, filterFault)
		}
		var fc faultv3.HTTPFault
		if err := unmarshalAny(a, &fc); err != nil {
			return fmt.Errorf("typed_per_filter_config %s: %w", name, err)
		}
		f, err := parseFault(&fc)
		if err != nil {
			return fmt.Errorf("typed_per_filter_config %s: %w", name, err)
		}
		mr.Fault = f
	}
	return nil
}

// parseFault converts a per-route HTTPFault: fixed delays and HTTP or
// gRPC aborts with a percentage. Header-controlled faults, rate limits,
// runtime keys and the other selectors are NACKed.
func parseFault(fc *faultv3.HTTPFault) (*model.Fault, error) {
	if err := checkFields(fc, "fault"); err != nil {
		return nil, err
	}
	if err := fc.ValidateAll(); err != nil {
		return nil, err
	}
	f := &model.Fault{}
	if d := fc.GetDelay(); d != nil {
		if err := checkFields(d, "fault.delay"); err != nil {
			return nil, err
		}
		fixed, ok := d.GetFaultDelaySecifier().(*commonfaultv3.FaultDelay_FixedDelay)
		if !ok {
			return nil, errors.New("fault.delay: only fixed_delay is supported (header_delay is not)")
		}
		v, err := duration(fixed.FixedDelay, "fault.delay.fixed_delay")
		if err != nil {
			return nil, err
		}
		pm, err := perMillion(d.GetPercentage(), "fault.delay.percentage")
		if err != nil {
			return nil, err
		}
		f.Delay, f.DelayPerMillion = &v, pm
	}
	if a := fc.GetAbort(); a != nil {
		if err := checkFields(a, "fault.abort"); err != nil {
			return nil, err
		}
		switch e := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			f.Abort = &model.Abort{HTTPStatus: int(e.HttpStatus)} // [200, 600): checked by Validate
		case *faultv3.FaultAbort_GrpcStatus:
			if e.GrpcStatus > 16 {
				return nil, fmt.Errorf("fault.abort.grpc_status %d is not a gRPC status code (0-16)", e.GrpcStatus)
			}
			f.Abort = &model.Abort{GRPC: true, GRPCStatus: int(e.GrpcStatus)}
		default:
			return nil, errors.New("fault.abort: only http_status and grpc_status are supported (header_abort is not)")
		}
		pm, err := perMillion(a.GetPercentage(), "fault.abort.percentage")
		if err != nil {
			return nil, err
		}
		f.AbortPerMillion = pm
	}
	return f, nil
}

// perMillion converts a FractionalPercent; unset is Envoy's default, 100%
// (the HTTP fault filter's percentage default).
func perMillion(p *typev3.FractionalPercent, where string) (uint32, error) {
	if p == nil {
		return model.PerMillion, nil
	}
	scale := map[typev3.FractionalPercent_DenominatorType]uint64{
		typev3.FractionalPercent_HUNDRED: 10_000, typev3.FractionalPercent_TEN_THOUSAND: 100, typev3.FractionalPercent_MILLION: 1,
	}[p.GetDenominator()]
	if scale == 0 {
		return 0, fmt.Errorf("%s: denominator %s is not supported", where, p.GetDenominator())
	}
	v := uint64(p.GetNumerator()) * scale
	return uint32(min(v, model.PerMillion)), nil // Envoy caps at 100%
}

// parseTracing reads the HCM's request id and tracing settings (XDS.md
// §16): tracing with random_sampling, and a Zipkin provider in
// USE_B3_WITH_W3C_PROPAGATION mode with a separate waypoint span, or no
// provider. The Go waypoint exports no spans; it only writes the headers.
func parseTracing(hcm *hcmv3.HttpConnectionManager) (*model.TraceConfig, error) {
	tc := &model.TraceConfig{GenerateRequestID: hcm.GetGenerateRequestId() == nil || hcm.GetGenerateRequestId().GetValue()}
	if hcm.GetRequestIdExtension() != nil {
		return nil, errors.New("request_id_extension is not supported (the default UUID request id only)")
	}
	tr := hcm.GetTracing()
	if tr == nil {
		return tc, nil
	}
	if err := checkFields(tr, "tracing"); err != nil {
		return nil, err
	}
	tc.Tracing = true
	tc.SamplePerMillion = model.PerMillion // Envoy's default random_sampling: 100%
	if rs := tr.GetRandomSampling(); rs != nil {
		v := rs.GetValue()
		if v < 0 || v > 100 {
			return nil, fmt.Errorf("tracing.random_sampling %v is not a percentage", v)
		}
		tc.SamplePerMillion = uint32(v * 10_000)
	}
	p := tr.GetProvider()
	if p == nil {
		return tc, nil
	}
	if p.GetName() != tracerZipkin {
		return nil, fmt.Errorf("tracing provider %q is not supported (only %s, for its B3 and W3C headers)", p.GetName(), tracerZipkin)
	}
	var z tracev3.ZipkinConfig
	if err := unmarshalAny(p.GetTypedConfig(), &z); err != nil {
		return nil, fmt.Errorf("tracing provider %s: %w", tracerZipkin, err)
	}
	if err := checkFields(&z, "tracing provider "+tracerZipkin); err != nil {
		return nil, err
	}
	if z.GetTraceContextOption() != tracev3.ZipkinConfig_USE_B3_WITH_W3C_PROPAGATION {
		return nil, fmt.Errorf("tracing provider %s: trace_context_option %s is not supported (USE_B3_WITH_W3C_PROPAGATION only: the waypoint writes both B3 and traceparent)", tracerZipkin, z.GetTraceContextOption())
	}
	if z.GetSharedSpanContext() == nil || z.GetSharedSpanContext().GetValue() {
		return nil, fmt.Errorf("tracing provider %s: shared_span_context must be false (the waypoint's span is a child span with its own id)", tracerZipkin)
	}
	return tc, nil
}

// httpFilterNames lists the HTTP filters an L7 chain may have before the
// router.
var httpFilterNames = []string{filterHTTPRBAC, filterFault}

// parseHCMFilters checks the L7 chain's filters: RBAC filters (parsed by
// parseHTTPFilters), optional fault filter, then the router. It reports whether the fault filter is present.
func parseHCMFilters(fs []*hcmv3.HttpFilter) (bool, error) {
	if err := checkHTTPFilters(fs, httpFilterNames...); err != nil {
		return false, err
	}
	fault := false
	for _, f := range fs[:len(fs)-1] {
		if f.GetName() == filterFault {
			if fault {
				return false, fmt.Errorf("HTTP filter %s appears twice", filterFault)
			}
			if err := parseFaultFilter(f); err != nil {
				return false, err
			}
			fault = true
		}
	}
	return fault, nil
}
