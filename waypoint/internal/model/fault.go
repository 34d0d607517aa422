package model

import "time"

// PerMillion is the denominator of fault percentages: Envoy's
// FractionalPercent converted to parts per million.
const PerMillion = 1_000_000

// Fault is a route's fault injection (XDS.md §15): a fixed delay and/or an
// abort, each applied to its own share of the requests, decided
// independently.
type Fault struct {
	// Delay holds a request this long before it is forwarded, for
	// DelayPerMillion of the requests; nil when no delay.
	Delay           *time.Duration
	DelayPerMillion uint32
	// Abort answers the request itself, for AbortPerMillion of the
	// requests; nil when no abort.
	Abort           *Abort
	AbortPerMillion uint32
}

// Abort is an injected answer: HTTPStatus, or, when GRPC, HTTP 200 with
// grpc-status GRPCStatus.
type Abort struct {
	HTTPStatus int
	GRPC       bool
	GRPCStatus int
}

// FaultDecision is what a fault does to one request.
type FaultDecision struct {
	// Delay is how long to hold the request (0: not delayed).
	Delay time.Duration
	// Abort is the answer to send instead of forwarding (nil: forward).
	Abort *Abort
}

// Flags returns Envoy's response flags of the decision: DI (delay
// injected), FI (fault/abort injected), comma-separated; "" for none.
func (d FaultDecision) Flags() string {
	switch {
	case d.Delay > 0 && d.Abort != nil:
		return "DI,FI"
	case d.Delay > 0:
		return "DI"
	case d.Abort != nil:
		return "FI"
	}
	return ""
}

// Decide decides the fault of one request from two random numbers, one
// for the delay and one for the abort: a part applies when its number
// modulo PerMillion is below its share. It is pure; a nil fault decides
// nothing.
func (f *Fault) Decide(delayN, abortN uint64) FaultDecision {
	var d FaultDecision
	if f == nil {
		return d
	}
	if f.Delay != nil && *f.Delay > 0 && delayN%PerMillion < uint64(f.DelayPerMillion) {
		d.Delay = *f.Delay
	}
	if f.Abort != nil && abortN%PerMillion < uint64(f.AbortPerMillion) {
		d.Abort = f.Abort
	}
	return d
}
