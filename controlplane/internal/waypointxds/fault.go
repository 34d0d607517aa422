package waypointxds

import (
	"errors"
	"fmt"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// FaultFilter is the HTTP filter name of fault injection: in every HTTP
// chain's http_filters right before the router, with an empty config; the
// routes carry the fault in typed_per_filter_config (XDS.md §15).
const FaultFilter = "envoy.filters.http.fault"

// maxFaultDelay bounds a fixed delay (the HTTPFault CRD's limit).
const maxFaultDelay = time.Hour

// faultConfig converts a route's fault to the per-route config of the
// fault filter.
func faultConfig(f *Fault) (*faultv3.HTTPFault, error) {
	if f.Delay == nil && f.Abort == nil {
		return nil, errors.New("fault has neither a delay nor an abort")
	}
	out := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		if d.Fixed <= 0 || d.Fixed > maxFaultDelay {
			return nil, fmt.Errorf("fault delay %s is not more than 0s and at most %s", d.Fixed, maxFaultDelay)
		}
		if d.Percent > 100 {
			return nil, fmt.Errorf("fault delay percentage %d is above 100", d.Percent)
		}
		out.Delay = &commonfaultv3.FaultDelay{
			FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.Fixed)},
			Percentage:         percent(d.Percent),
		}
	}
	if a := f.Abort; a != nil {
		if a.Percent > 100 {
			return nil, fmt.Errorf("fault abort percentage %d is above 100", a.Percent)
		}
		out.Abort = &faultv3.FaultAbort{Percentage: percent(a.Percent)}
		switch {
		case a.GRPC:
			if a.GRPCStatus < 0 || a.GRPCStatus > 16 {
				return nil, fmt.Errorf("fault abort gRPC status %d is not between 0 and 16", a.GRPCStatus)
			}
			out.Abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(a.GRPCStatus)}
		default:
			if a.HTTPStatus < 200 || a.HTTPStatus > 599 {
				return nil, fmt.Errorf("fault abort HTTP status %d is not between 200 and 599", a.HTTPStatus)
			}
			out.Abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(a.HTTPStatus)}
		}
	}
	return out, out.ValidateAll()
}

func percent(p uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: p, Denominator: typev3.FractionalPercent_HUNDRED}
}

// CheckFault reports why f cannot be served (Envoy's rules for the fault
// filter's per-route config), nil when it can.
func CheckFault(f *Fault) error {
	_, err := faultConfig(f)
	return err
}

// setFault puts f (if any) in the route's typed_per_filter_config.
func setFault(r *routev3.Route, f *Fault) error {
	if f == nil {
		return nil
	}
	fc, err := faultConfig(f)
	if err != nil {
		return err
	}
	r.TypedPerFilterConfig = map[string]*anypb.Any{FaultFilter: mustAny(fc)}
	return nil
}
