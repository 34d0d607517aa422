package model

import (
	"math"
	"net/netip"
	"slices"
	"time"
)

// LBPolicy is how a cluster picks an endpoint among its candidates.
type LBPolicy uint8

// The load balancing policies the waypoint implements (XDS.md §5.2).
const (
	// LBRoundRobin: the n-th candidate for the cluster's n-th pick
	// (Envoy's ROUND_ROBIN with equal weights).
	LBRoundRobin LBPolicy = iota
	// LBLeastRequest: of ChoiceCount candidates sampled at random (with
	// replacement), the one with the fewest active requests; ties keep
	// the first sampled (Envoy's LEAST_REQUEST with equal weights).
	LBLeastRequest
	// LBPeakEWMA: LBLeastRequest's sampling, comparing the peak-EWMA
	// latency × (active requests + 1) instead (PeakEWMA.Cost); Ambit's
	// LEAST_REQUEST with cluster metadata ambit.lb_algorithm "EWMA".
	LBPeakEWMA
)

func (p LBPolicy) String() string {
	switch p {
	case LBLeastRequest:
		return "LEAST_REQUEST"
	case LBPeakEWMA:
		return "LEAST_REQUEST/EWMA"
	}
	return "ROUND_ROBIN"
}

// Envoy's load balancing defaults.
const (
	// DefaultChoiceCount is least_request_lb_config.choice_count's default.
	DefaultChoiceCount = 2
	// DefaultPanicThreshold is common_lb_config.healthy_panic_threshold's
	// default, in percent.
	DefaultPanicThreshold = 50
)

// LoadBalancing is a cluster's lb_policy and common_lb_config.
type LoadBalancing struct {
	Policy LBPolicy
	// ChoiceCount is the number of candidates a least-request pick
	// samples (≥ 1).
	ChoiceCount int
	// PanicThreshold is healthy_panic_threshold rounded to an integer
	// percent (Envoy rounds the Percent), 0..100: when fewer than this
	// percentage of the endpoints are usable, the pick is among all of
	// them (panic mode); 0 never panics.
	PanicThreshold uint32
}

// Candidates returns the endpoints a pick chooses from, as Envoy's load
// balancer does for one priority: the usable endpoints (EDS healthy and
// not ejected by outlier detection) unless they are fewer than
// PanicThreshold percent of all endpoints — 100·usable/total <
// threshold, compared exactly — in which case every endpoint, healthy or
// not (panic). No endpoints, or none usable outside panic mode, gives
// none. ejected may be nil.
func (lb LoadBalancing) Candidates(eps []Endpoint, ejected func(netip.AddrPort) bool) (hosts []Endpoint, panic bool) {
	usable := make([]Endpoint, 0, len(eps))
	for _, e := range eps {
		if e.Healthy && (ejected == nil || !ejected(e.Destination)) {
			usable = append(usable, e)
		}
	}
	if len(eps) > 0 && 100*float64(len(usable))/float64(len(eps)) < float64(lb.PanicThreshold) {
		return eps, true
	}
	return usable, false
}

// Avoid returns the hosts a retry chooses from: those not in tried (the
// endpoints of the request's earlier attempts, Envoy's previous_hosts
// predicate); when every host was tried, those that are not the last one
// tried; when that is the only host, hosts.
func Avoid(hosts []Endpoint, tried []netip.AddrPort) []Endpoint {
	if len(tried) == 0 {
		return hosts
	}
	last := tried[len(tried)-1]
	for _, avoid := range []func(Endpoint) bool{
		func(e Endpoint) bool { return slices.Contains(tried, e.Destination) },
		func(e Endpoint) bool { return e.Destination == last },
	} {
		var rest []Endpoint
		for _, e := range hosts {
			if !avoid(e) {
				rest = append(rest, e)
			}
		}
		if len(rest) > 0 {
			return rest
		}
	}
	return hosts
}

// PickLeast samples choices hosts with the random numbers of rnd (with
// replacement, like Envoy's unweighted least-request pick) and returns
// the one with the lowest load; on a tie the earlier sample wins. hosts
// must not be empty.
func PickLeast(hosts []Endpoint, choices int, rnd func() uint64, load func(Endpoint) float64) Endpoint {
	best := hosts[rnd()%uint64(len(hosts))]
	bestLoad := load(best)
	for range max(choices, 1) - 1 {
		e := hosts[rnd()%uint64(len(hosts))]
		if l := load(e); l < bestLoad {
			best, bestLoad = e, l
		}
	}
	return best
}

// EWMA parameters.
const (
	// EWMADecay is the time constant τ of PeakEWMA (Finagle's and
	// linkerd's default decay).
	EWMADecay = 10 * time.Second
	// EWMADefaultRTT is the estimate of an endpoint without a sample yet
	// (linkerd's default RTT estimate).
	EWMADefaultRTT = 30 * time.Millisecond
)

// PeakEWMA is the latency estimate of one endpoint (Finagle's PeakEwma,
// tower's RttEstimate): a sample above the current estimate replaces it
// (peak); otherwise, with w = e^(−Δt/τ) for the time Δt since the last
// update, estimate = estimate·w + sample·(1−w). Reading the cost first
// decays the estimate towards 0 the same way (a zero-length sample), so
// a slow endpoint is tried again after a while. The zero value starts at
// EWMADefaultRTT.
type PeakEWMA struct {
	ns      float64
	at      time.Time
	started bool
}

// Observe records a latency sample (attempt start → response headers or
// failure) at now.
func (e *PeakEWMA) Observe(rtt time.Duration, now time.Time) {
	if !e.started {
		e.ns, e.at, e.started = float64(EWMADefaultRTT), now, true
	}
	sample := float64(max(rtt, 0))
	if sample > e.ns {
		e.ns = sample
	} else {
		w := math.Exp(-float64(max(now.Sub(e.at), 0)) / float64(EWMADecay))
		e.ns = e.ns*w + sample*(1-w)
	}
	e.at = now
}

// Cost is the endpoint's load for a pick at now: the decayed estimate in
// nanoseconds × (active + 1).
func (e *PeakEWMA) Cost(active int64, now time.Time) float64 {
	e.Observe(0, now)
	return e.ns * float64(max(active, 0)+1)
}
