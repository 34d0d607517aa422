package model

import (
	"testing"
	"time"
)

func TestRetriable(t *testing.T) {
	def := &RetryPolicy{On: RetryConnectFailure | RetryRefusedStream | RetryGRPCUnavailable | RetryGRPCCancelled | RetryStatusCodes, StatusCodes: []int{503}}
	httpRoute := &RetryPolicy{On: RetryConnectFailure | RetryRefusedStream | RetryReset | Retry5xx}
	withCodes := &RetryPolicy{On: RetryConnectFailure | RetryRefusedStream | RetryReset | RetryStatusCodes, StatusCodes: []int{500, 429}}
	gateway := &RetryPolicy{On: RetryGatewayError}
	tests := []struct {
		name string
		p    *RetryPolicy
		a    Attempt
		want bool
	}{
		{"no policy", nil, Attempt{Status: 503}, false},
		{"default: 503", def, Attempt{Status: 503}, true},
		{"default: 500", def, Attempt{Status: 500}, false},
		{"default: 200", def, Attempt{Status: 200}, false},
		{"default: connect failure", def, Attempt{Failure: FailureConnect}, true},
		{"default: refused stream", def, Attempt{Failure: FailureRefusedStream}, true},
		{"default: reset", def, Attempt{Failure: FailureReset}, false},
		{"default: per-try timeout", def, Attempt{Failure: FailurePerTryTimeout}, false},
		{"default: grpc unavailable", def, Attempt{Status: 200, GRPCStatus: "14"}, true},
		{"default: grpc cancelled", def, Attempt{Status: 200, GRPCStatus: "1"}, true},
		{"default: grpc internal", def, Attempt{Status: 200, GRPCStatus: "13"}, false},
		{"default: grpc ok", def, Attempt{Status: 200, GRPCStatus: "0"}, false},
		{"default: grpc garbage", def, Attempt{Status: 200, GRPCStatus: "x14"}, false},
		{"5xx: 500", httpRoute, Attempt{Status: 500}, true},
		{"5xx: 599", httpRoute, Attempt{Status: 599}, true},
		{"5xx: 404", httpRoute, Attempt{Status: 404}, false},
		{"5xx: reset", httpRoute, Attempt{Failure: FailureReset}, true},
		{"5xx: per-try timeout", httpRoute, Attempt{Failure: FailurePerTryTimeout}, true},
		{"5xx: grpc unavailable is not a condition", httpRoute, Attempt{Status: 200, GRPCStatus: "14"}, false},
		{"codes: 429", withCodes, Attempt{Status: 429}, true},
		{"codes: 503 not listed", withCodes, Attempt{Status: 503}, false},
		{"codes: reset", withCodes, Attempt{Failure: FailureReset}, true},
		{"codes: per-try timeout (reset)", withCodes, Attempt{Failure: FailurePerTryTimeout}, true},
		{"gateway-error: 502", gateway, Attempt{Status: 502}, true},
		{"gateway-error: 504", gateway, Attempt{Status: 504}, true},
		{"gateway-error: 500", gateway, Attempt{Status: 500}, false},
		{"gateway-error: connect failure", gateway, Attempt{Failure: FailureConnect}, true},
		{"connect-failure only: reset", &RetryPolicy{On: RetryConnectFailure}, Attempt{Failure: FailureReset}, false},
		{"refused-stream only: connect failure", &RetryPolicy{On: RetryRefusedStream}, Attempt{Failure: FailureConnect}, false},
		{"codes without the condition", &RetryPolicy{StatusCodes: []int{503}}, Attempt{Status: 503}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Retriable(tt.a); got != tt.want {
				t.Fatalf("Retriable(%+v) = %v, want %v", tt.a, got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		base, max time.Duration
		retry     int
		rnd       uint64
		want      time.Duration
	}{
		{"first retry below base", 25 * ms, 250 * ms, 1, uint64(10 * ms), 10 * ms},
		{"first retry wraps at base", 25 * ms, 250 * ms, 1, uint64(30 * ms), 5 * ms},
		{"second retry doubles", 25 * ms, 250 * ms, 2, uint64(40 * ms), 40 * ms},
		{"third retry", 25 * ms, 250 * ms, 3, uint64(99 * ms), 99 * ms},
		{"capped at max", 25 * ms, 250 * ms, 10, uint64(249 * ms), 249 * ms},
		{"capped interval wraps", 25 * ms, 250 * ms, 10, uint64(260 * ms), 10 * ms},
		{"max below doubling", 100 * ms, 150 * ms, 2, uint64(149 * ms), 149 * ms},
		{"zero random", 25 * ms, 250 * ms, 4, 0, 0},
		{"no base", 0, 0, 1, 12345, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Backoff(tt.base, tt.max, tt.retry, tt.rnd); got != tt.want {
				t.Fatalf("Backoff = %s, want %s", got, tt.want)
			}
		})
	}
	for retry := 1; retry < 70; retry++ {
		for _, rnd := range []uint64{0, 1, 1<<63 + 12345, 1<<64 - 1} {
			if got := Backoff(25*ms, 250*ms, retry, rnd); got < 0 || got >= 250*ms {
				t.Fatalf("Backoff(retry %d, %d) = %s, outside [0, max)", retry, rnd, got)
			}
		}
	}
}

func TestRetryBudget(t *testing.T) {
	def := &RetryBudget{Percent: DefaultBudgetPercent, MinConcurrency: DefaultMinRetryConcurrency}
	tests := []struct {
		name     string
		b        *RetryBudget
		requests int64
		want     int64
	}{
		{"no budget: Envoy's max_retries", nil, 1000, DefaultMaxRetries},
		{"few requests: the minimum", def, 5, 3},
		{"20% of 100", def, 100, 20},
		{"rounded down", def, 24, 4},
		{"none in flight", def, 0, 3},
		{"no minimum", &RetryBudget{Percent: 50}, 3, 1},
		{"nothing allowed", &RetryBudget{}, 100, 0},
		{"negative count", def, -1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.MaxRetries(tt.requests); got != tt.want {
				t.Fatalf("MaxRetries(%d) = %d, want %d", tt.requests, got, tt.want)
			}
		})
	}
}
