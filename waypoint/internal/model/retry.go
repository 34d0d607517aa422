package model

import (
	"slices"
	"strconv"
	"time"
)

// RetryOn is a set of retry conditions (Envoy's retry_on).
type RetryOn uint16

// The retry conditions the waypoint understands (XDS.md §7.1).
const (
	// Retry5xx: any 5xx response, or no response at all.
	Retry5xx RetryOn = 1 << iota
	// RetryGatewayError: 502, 503, 504, or no response at all.
	RetryGatewayError
	// RetryReset: no response (closed, reset, timed out) before headers.
	RetryReset
	// RetryConnectFailure: the HBONE stream to the endpoint failed.
	RetryConnectFailure
	// RetryRefusedStream: HTTP/2 REFUSED_STREAM.
	RetryRefusedStream
	// RetryStatusCodes: a status in RetryPolicy.StatusCodes.
	RetryStatusCodes
	// RetryGRPCCancelled: grpc-status 1 in the response headers.
	RetryGRPCCancelled
	// RetryGRPCUnavailable: grpc-status 14 in the response headers.
	RetryGRPCUnavailable
)

// RetryConditions maps Envoy's retry_on names to conditions.
var RetryConditions = map[string]RetryOn{
	"5xx":                    Retry5xx,
	"gateway-error":          RetryGatewayError,
	"reset":                  RetryReset,
	"connect-failure":        RetryConnectFailure,
	"refused-stream":         RetryRefusedStream,
	"retriable-status-codes": RetryStatusCodes,
	"cancelled":              RetryGRPCCancelled,
	"unavailable":            RetryGRPCUnavailable,
}

// Envoy's retry defaults.
const (
	// DefaultBackoffBase is the back-off base without retry_back_off.
	DefaultBackoffBase = 25 * time.Millisecond
	// DefaultMaxRetries is the retries in flight a cluster allows without
	// a retry budget (Envoy's default circuit breaker max_retries).
	DefaultMaxRetries = 3
	// DefaultBudgetPercent and DefaultMinRetryConcurrency are a
	// retry_budget's defaults.
	DefaultBudgetPercent       = 20.0
	DefaultMinRetryConcurrency = 3
)

// RetryPolicy is a route's retry_policy.
type RetryPolicy struct {
	On RetryOn
	// NumRetries is the number of retries after the first attempt.
	NumRetries int
	// PerTryTimeout bounds each attempt until its response headers; 0:
	// none.
	PerTryTimeout time.Duration
	// StatusCodes are the retriable_status_codes (RetryStatusCodes).
	StatusCodes []int
	// BackoffBase and BackoffMax are the retry_back_off intervals
	// (defaults: DefaultBackoffBase and 10× the base).
	BackoffBase, BackoffMax time.Duration
}

// Failure is how an attempt failed without a response.
type Failure uint8

// The failures of an attempt.
const (
	// NoFailure: the attempt got response headers.
	NoFailure Failure = iota
	// FailureConnect: the HBONE stream to the endpoint could not be
	// opened (Envoy's connection failure).
	FailureConnect
	// FailureRefusedStream: the endpoint refused the HTTP/2 stream.
	FailureRefusedStream
	// FailureReset: the upstream closed or reset before the response
	// headers.
	FailureReset
	// FailurePerTryTimeout: no response headers within the per-try
	// timeout.
	FailurePerTryTimeout
)

// Attempt is the outcome of one upstream attempt as the retry decision
// sees it: a response's status and grpc-status header, or a failure.
type Attempt struct {
	Status int
	// GRPCStatus is the grpc-status response header ("" when absent).
	GRPCStatus string
	Failure    Failure
}

// Retriable reports whether the outcome a may be retried under p, as
// Envoy's RetryStateImpl decides: a failure without a response is
// retriable under 5xx, gateway-error and reset (a per-try timeout is
// such a failure), a connection failure also under connect-failure, a
// refused stream under refused-stream; a response by its status (5xx,
// gateway-error, retriable-status-codes) or its grpc-status (cancelled,
// unavailable).
func (p *RetryPolicy) Retriable(a Attempt) bool {
	if p == nil {
		return false
	}
	if a.Failure != NoFailure {
		switch {
		case p.On&(Retry5xx|RetryGatewayError|RetryReset) != 0:
			return true
		case a.Failure == FailureConnect:
			return p.On&RetryConnectFailure != 0
		case a.Failure == FailureRefusedStream:
			return p.On&RetryRefusedStream != 0
		}
		return false
	}
	switch {
	case p.On&Retry5xx != 0 && a.Status >= 500 && a.Status <= 599:
		return true
	case p.On&RetryGatewayError != 0 && (a.Status == 502 || a.Status == 503 || a.Status == 504):
		return true
	case p.On&RetryStatusCodes != 0 && slices.Contains(p.StatusCodes, a.Status):
		return true
	}
	if a.GRPCStatus != "" && p.On&(RetryGRPCCancelled|RetryGRPCUnavailable) != 0 {
		switch code, err := strconv.ParseUint(a.GRPCStatus, 10, 32); {
		case err != nil:
		case code == 1 && p.On&RetryGRPCCancelled != 0, code == 14 && p.On&RetryGRPCUnavailable != 0:
			return true
		}
	}
	return false
}

// Backoff is the wait before retry number retry (1 for the first retry)
// for the random number rnd: Envoy's JitteredExponentialBackOffStrategy,
// full jitter over an interval that starts at base and doubles per retry
// up to max.
func Backoff(base, max time.Duration, retry int, rnd uint64) time.Duration {
	if base <= 0 {
		return 0
	}
	if max < base {
		max = base
	}
	interval := base
	for i := 1; i < retry && interval < max; i++ {
		if interval > max/2 {
			interval = max
		} else {
			interval *= 2
		}
	}
	return min(time.Duration(rnd%uint64(interval)), max)
}

// RetryBudget is a cluster's circuit_breakers retry_budget.
type RetryBudget struct {
	// Percent of the requests in flight that may be retries.
	Percent float64
	// MinConcurrency retries are allowed whatever the requests.
	MinConcurrency uint32
}

// MaxRetries returns how many retries may be in flight to the cluster
// while requests requests are in flight: max(MinConcurrency, Percent% of
// requests), rounded down (Envoy's RetryBudgetImpl::max). A nil budget
// allows DefaultMaxRetries.
func (b *RetryBudget) MaxRetries(requests int64) int64 {
	if b == nil {
		return DefaultMaxRetries
	}
	return max(int64(b.MinConcurrency), int64(b.Percent/100*float64(max(requests, 0))))
}
