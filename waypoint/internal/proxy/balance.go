package proxy

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// upstreamState is the live state of a cluster's endpoints: the circuit
// breaker counters, the per-endpoint load the least-request balancers
// compare, and the outlier detector.
type upstreamState struct {
	// connections open or being opened, requests pending a connection,
	// requests in flight upstream (Envoy's cx_active, rq_pending_active,
	// rq_active).
	connections, pending, active atomic.Int64

	mu      sync.Mutex
	synced  *model.Cluster // the configuration hosts and outlier follow
	hosts   map[netip.AddrPort]*hostState
	outlier *model.OutlierDetector
}

// hostState is one endpoint's load.
type hostState struct {
	// active counts the attempts to the endpoint from their start
	// (pending included) to the end of their response.
	active atomic.Int64
	ewma   model.PeakEWMA // guarded by upstreamState.mu
}

// syncLocked makes the state follow cl: endpoints added and removed
// (kept state for the others), the outlier detector created, replaced
// when its configuration changed, or dropped, and its due interval ticks
// run.
func (b *upstreamState) syncLocked(p *Proxy, cl *model.Cluster, now time.Time) {
	if b.synced != cl {
		hosts := make(map[netip.AddrPort]*hostState, len(cl.Endpoints))
		dests := make([]netip.AddrPort, 0, len(cl.Endpoints))
		for _, e := range cl.Endpoints {
			h := b.hosts[e.Destination]
			if h == nil {
				h = new(hostState)
			}
			hosts[e.Destination] = h
			dests = append(dests, e.Destination)
		}
		b.hosts = hosts
		switch {
		case cl.Outlier == nil:
			b.outlier = nil
		case b.outlier == nil || b.outlier.Config() != *cl.Outlier:
			b.outlier = model.NewOutlierDetector(*cl.Outlier, now)
		}
		if b.outlier != nil {
			b.outlier.SetHosts(dests)
		}
		b.synced = cl
	}
	if b.outlier != nil {
		for _, h := range b.outlier.Advance(now) {
			p.log.Info("outlier detection: endpoint back in service", "cluster", cl.Name, "endpoint", h)
		}
		p.cfg.Metrics.ejectedHosts(cl.Name, b.outlier.EjectedCount())
	}
}

// pickEndpoint chooses the endpoint of an attempt by the cluster's load
// balancer: among the candidates (usable endpoints, or all in panic
// mode), not those tried already (Avoid), round robin or the least
// loaded of ChoiceCount random ones. ok is false when there is none.
func (p *Proxy) pickEndpoint(cl *model.Cluster, tried []netip.AddrPort) (model.Endpoint, *hostState, bool) {
	cs := p.clusterState(cl.Name)
	now := p.now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.syncLocked(p, cl, now)
	var ejected func(netip.AddrPort) bool
	if cs.outlier != nil {
		ejected = cs.outlier.Ejected
	}
	hosts, _ := cl.LB.Candidates(cl.Endpoints, ejected)
	hosts = model.Avoid(hosts, tried)
	if len(hosts) == 0 {
		return model.Endpoint{}, nil, false
	}
	var ep model.Endpoint
	switch cl.LB.Policy {
	case model.LBLeastRequest:
		ep = model.PickLeast(hosts, cl.LB.ChoiceCount, rand.Uint64, func(e model.Endpoint) float64 {
			return float64(cs.hosts[e.Destination].active.Load())
		})
	case model.LBPeakEWMA:
		ep = model.PickLeast(hosts, cl.LB.ChoiceCount, rand.Uint64, func(e model.Endpoint) float64 {
			h := cs.hosts[e.Destination]
			return h.ewma.Cost(h.active.Load(), now)
		})
	default:
		ep, _ = model.PickRoundRobin(hosts, cs.rr.Add(1)-1)
	}
	return ep, cs.hosts[ep.Destination], true
}

// host returns the state of ep (a fresh one if ep is no longer known).
func (b *upstreamState) host(ep model.Endpoint) *hostState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := b.hosts[ep.Destination]; h != nil {
		return h
	}
	return new(hostState)
}

// result tells the cluster's outlier detector and EWMA how an attempt to
// ep went: code as model.OutlierCode gives it (0: nothing to count), rtt
// from the attempt's start.
func (p *Proxy) result(cl *model.Cluster, ep model.Endpoint, h *hostState, code int, rtt time.Duration) {
	cs := p.clusterState(cl.Name)
	now := p.now()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cl.LB.Policy == model.LBPeakEWMA && h != nil {
		h.ewma.Observe(rtt, now)
	}
	if cs.outlier == nil || cs.synced != cl || code == 0 {
		return
	}
	switch cs.outlier.Result(ep.Destination, code, now, rand.Uint64()) {
	case model.Ejected:
		p.cfg.Metrics.ejection(cl.Name)
		p.cfg.Metrics.ejectedHosts(cl.Name, cs.outlier.EjectedCount())
		p.log.Info("outlier detection: endpoint ejected", "cluster", cl.Name, "endpoint", ep.Destination, "status", code)
	case model.EjectionOverflow:
		p.log.Debug("outlier detection: not ejecting, max_ejection_percent reached", "cluster", cl.Name, "endpoint", ep.Destination)
	}
}

// advanceOutliers runs the due interval ticks of every cluster's outlier
// detector (before the ejected hosts gauge is scraped).
func (p *Proxy) advanceOutliers() {
	now := p.now()
	p.clusters.Range(func(_, v any) bool {
		cs := v.(*clusterState)
		cs.mu.Lock()
		if cs.outlier != nil && cs.synced != nil {
			cs.syncLocked(p, cs.synced, now)
		}
		cs.mu.Unlock()
		return true
	})
}
