package benchkit

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// LoadResult is the outcome of one open-loop run.
type LoadResult struct {
	Samples []time.Duration // sorted
	Sent    int             // requests scheduled
	Errs    int
	Err     error // first error
}

// Due is when request i of a schedule of rate req/s that starts at start
// is due.
func Due(start time.Time, i, rate int) time.Time {
	return start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))
}

// Latency is the latency charged to one request: to the end of its
// response (recv) from its due time if its connection was still busy with
// the previous request then (prevRecv after due: queueing counts, no
// coordinated omission), else from the moment it was sent (so the
// generator's own timer wake-up delay is not charged to the path).
func Latency(due, sent, recv, prevRecv time.Time) time.Duration {
	if prevRecv.After(due) {
		return recv.Sub(due)
	}
	return recv.Sub(sent)
}

// OpenLoop sends rate req/s for d on a fixed schedule over conns
// persistent connections: request i is due at start + i/rate (Due) and is
// carried by connection i mod conns, which do(k) uses for one complete
// request and response. A connection whose do fails is not used again
// (do should close it); its remaining requests count as not sent.
func OpenLoop(ctx context.Context, conns, rate int, d time.Duration, do func(k int) error) LoadResult {
	total := int(int64(rate) * int64(d) / int64(time.Second))
	start := time.Now().Add(20 * time.Millisecond)
	perConn := make([][]time.Duration, conns)
	var errs atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for k := range conns {
		wg.Go(func() {
			var prevRecv time.Time
			for i := k; i < total && ctx.Err() == nil; i += conns {
				due := Due(start, i, rate)
				if w := time.Until(due); w > 0 {
					time.Sleep(w)
				}
				sent := time.Now()
				err := do(k)
				recv := time.Now()
				if err != nil {
					errs.Add(1)
					once.Do(func() { firstErr = err })
					return
				}
				perConn[k] = append(perConn[k], Latency(due, sent, recv, prevRecv))
				prevRecv = recv
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for _, s := range perConn {
		all = append(all, s...)
	}
	slices.Sort(all)
	return LoadResult{Samples: all, Sent: total, Errs: int(errs.Load()), Err: firstErr}
}
