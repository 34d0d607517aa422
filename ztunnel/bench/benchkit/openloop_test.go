package benchkit

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		i    int
		rate int
		want time.Duration
	}{
		{"first is at start", 0, 1000, 0},
		{"1000 req/s: 1 ms apart", 7, 1000, 7 * time.Millisecond},
		{"3 req/s does not drift", 3000, 3, 1000 * time.Second},
		{"30000 req/s", 30000, 30000, time.Second},
		{"rate not dividing a second", 2, 3, 666666666},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Due(t0, tc.i, tc.rate).Sub(t0); got != tc.want {
				t.Errorf("Due(%d, %d/s) = start+%v, want start+%v", tc.i, tc.rate, got, tc.want)
			}
		})
	}
}

func TestLatency(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name                      string
		due, sent, recv, prevRecv time.Time
		want                      time.Duration
	}{
		{"idle connection: from the write", at(10), at(11), at(13), at(5), 2 * time.Millisecond},
		{"first request (no previous)", at(10), at(10), at(12), time.Time{}, 2 * time.Millisecond},
		{"connection still busy at due time: queueing counts", at(10), at(25), at(27), at(25), 17 * time.Millisecond},
		{"previous answer exactly at due: not busy", at(10), at(10), at(11), at(10), time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Latency(tc.due, tc.sent, tc.recv, tc.prevRecv); got != tc.want {
				t.Errorf("Latency = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOpenLoop(t *testing.T) {
	tests := []struct {
		name      string
		conns     int
		rate      int
		d         time.Duration
		failAfter int64 // do fails from this call on (0: never)
		wantSent  int
		wantErrs  int
	}{
		{"one connection", 1, 1000, 50 * time.Millisecond, 0, 50, 0},
		{"spread over 4 connections", 4, 2000, 30 * time.Millisecond, 0, 60, 0},
		{"a failing connection stops", 1, 1000, 20 * time.Millisecond, 5, 20, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			perConn := make([]atomic.Int64, tc.conns)
			start := time.Now()
			res := OpenLoop(context.Background(), tc.conns, tc.rate, tc.d, func(k int) error {
				perConn[k].Add(1)
				if n := calls.Add(1); tc.failAfter > 0 && n >= tc.failAfter {
					return errors.New("broken")
				}
				return nil
			})
			if res.Sent != tc.wantSent || res.Errs != tc.wantErrs {
				t.Fatalf("sent %d, errors %d; want %d, %d", res.Sent, res.Errs, tc.wantSent, tc.wantErrs)
			}
			if want := tc.wantSent; tc.failAfter > 0 {
				want = int(tc.failAfter) - 1
				if len(res.Samples) != want {
					t.Errorf("%d samples, want %d (those before the failure)", len(res.Samples), want)
				}
			} else if len(res.Samples) != want {
				t.Errorf("%d samples, want %d", len(res.Samples), want)
			}
			if !slices.IsSorted(res.Samples) {
				t.Error("samples are not sorted")
			}
			if tc.failAfter == 0 {
				for k := range perConn {
					if got, want := perConn[k].Load(), int64(tc.wantSent/tc.conns); got != want {
						t.Errorf("connection %d carried %d requests, want %d (i mod conns)", k, got, want)
					}
				}
				// The schedule is paced: the last request is due at
				// (n-1)/rate, so the run cannot end before.
				if el, min := time.Since(start), tc.d-tc.d/time.Duration(tc.wantSent); el < min {
					t.Errorf("finished after %v, before the last request was due (%v)", el, min)
				}
			}
		})
	}
}
