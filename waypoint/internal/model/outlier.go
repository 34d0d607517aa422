package model

import (
	"net/netip"
	"time"
)

// OutlierDetection is a cluster's outlier_detection: the consecutive-5xx
// and consecutive-gateway-failure detectors of Envoy (success rate and
// failure percentage detection are not implemented; the xDS client
// refuses clusters that enable them).
type OutlierDetection struct {
	// Consecutive5xx and ConsecutiveGatewayFailure are the numbers of
	// consecutive results that trigger an ejection; 0 never triggers
	// (Envoy compares the counter for equality).
	Consecutive5xx, ConsecutiveGatewayFailure uint32
	// Interval is the time between two unejection checks.
	Interval time.Duration
	// BaseEjectionTime × the host's ejection multiplier, at most
	// max(BaseEjectionTime, MaxEjectionTime), is how long an ejection
	// lasts.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of ejected hosts (0..100).
	MaxEjectionPercent uint32
	// AlwaysEjectOneHost lets one host be ejected whatever
	// MaxEjectionPercent says.
	AlwaysEjectOneHost bool
	// Enforcing5xx and EnforcingGatewayFailure are the percentages of
	// detections that eject (the rest are only counted).
	Enforcing5xx, EnforcingGatewayFailure uint32
}

// DefaultOutlierDetection holds Envoy's outlier_detection defaults.
var DefaultOutlierDetection = OutlierDetection{
	Consecutive5xx: 5, ConsecutiveGatewayFailure: 5,
	Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second,
	MaxEjectionPercent: 10, Enforcing5xx: 100, EnforcingGatewayFailure: 0,
}

// OutlierCode is the HTTP status outlier detection counts for an
// attempt, as Envoy maps results when external and local origin errors
// are not split: the response status, 503 for a connection failure,
// reset or refused stream, 504 for a timeout. 0: nothing to count.
func OutlierCode(a Attempt) int {
	switch a.Failure {
	case NoFailure:
		return a.Status
	case FailurePerTryTimeout:
		return 504
	}
	return 503
}

// Ejection says what one result did.
type Ejection uint8

// The effects of a result.
const (
	// NotEjected: no threshold reached, or the host is ejected already.
	NotEjected Ejection = iota
	// Ejected: a detector triggered and the host is ejected now.
	Ejected
	// EjectionNotEnforced: a detector triggered but the enforcing
	// percentage said no (Envoy's ejections_detected without
	// ejections_enforced).
	EjectionNotEnforced
	// EjectionOverflow: a detector triggered but ejecting the host would
	// pass MaxEjectionPercent (Envoy's ejections_overflow).
	EjectionOverflow
)

// OutlierDetector is Envoy's outlier detector for one cluster, driven by
// an injected clock and random numbers; it is not safe for concurrent
// use. Interval ticks are at start + k·Interval and are run by Advance
// (each call runs the ticks that are due, in order).
type OutlierDetector struct {
	cfg      OutlierDetection
	interval time.Duration
	hosts    map[netip.AddrPort]*outlierHost
	ejected  int
	next     time.Time
}

type outlierHost struct {
	c5xx, cgw uint32
	ejected   bool
	ejectedAt time.Time
	// unejectedAt is the last unejection (zero: never).
	unejectedAt time.Time
	// multiplier is Envoy's eject time backoff: +1 per ejection (while
	// base·multiplier < max + base), −1 per tick once the host has been
	// back for an interval.
	multiplier uint32
	ejections  uint64
}

// NewOutlierDetector returns a detector whose first tick is at
// start + cfg.Interval (DefaultOutlierDetection's when not positive).
func NewOutlierDetector(cfg OutlierDetection, start time.Time) *OutlierDetector {
	interval := cfg.Interval
	if interval <= 0 {
		interval = DefaultOutlierDetection.Interval
	}
	return &OutlierDetector{cfg: cfg, interval: interval, hosts: map[netip.AddrPort]*outlierHost{}, next: start.Add(interval)}
}

// Config returns the detector's configuration, as given.
func (d *OutlierDetector) Config() OutlierDetection { return d.cfg }

// SetHosts makes hosts the cluster's hosts: new ones start clean, the
// state of the others is kept, removed ones are forgotten (an ejected
// one no longer counts as ejected).
func (d *OutlierDetector) SetHosts(hosts []netip.AddrPort) {
	keep := make(map[netip.AddrPort]*outlierHost, len(hosts))
	for _, h := range hosts {
		if s := d.hosts[h]; s != nil {
			keep[h] = s
		} else {
			keep[h] = &outlierHost{}
		}
	}
	d.hosts = keep
	d.ejected = 0
	for _, s := range keep {
		if s.ejected {
			d.ejected++
		}
	}
}

// Ejected reports whether host is ejected.
func (d *OutlierDetector) Ejected(host netip.AddrPort) bool {
	s := d.hosts[host]
	return s != nil && s.ejected
}

// EjectedCount is the number of ejected hosts.
func (d *OutlierDetector) EjectedCount() int { return d.ejected }

// Result counts one result of a request to host — code as OutlierCode
// gives it — at now, Envoy's putHttpResponseCode: a gateway error (502,
// 503, 504) adds to both consecutive counters, another 5xx to the 5xx
// counter and resets the gateway one, anything else resets both. A
// counter reaching its threshold tries to eject the host (the gateway
// detector first). rnd decides enforcement: it ejects when rnd%100 <
// the enforcing percentage. Results for unknown hosts are ignored.
func (d *OutlierDetector) Result(host netip.AddrPort, code int, now time.Time, rnd uint64) Ejection {
	s := d.hosts[host]
	if s == nil || code == 0 {
		return NotEjected
	}
	if code < 500 || code > 599 {
		s.c5xx, s.cgw = 0, 0
		return NotEjected
	}
	out := NotEjected
	if code == 502 || code == 503 || code == 504 {
		s.cgw++
		if s.cgw == d.cfg.ConsecutiveGatewayFailure && !s.ejected {
			out = d.eject(s, d.cfg.EnforcingGatewayFailure, now, rnd)
			s.cgw = 0
		}
	} else {
		s.cgw = 0
	}
	s.c5xx++
	if s.c5xx == d.cfg.Consecutive5xx && !s.ejected {
		if o := d.eject(s, d.cfg.Enforcing5xx, now, rnd); out == NotEjected || o == Ejected {
			out = o
		}
		s.c5xx = 0
	}
	return out
}

// MayEject reports whether one more host may be ejected, as Envoy's
// ejectHost decides: when the ejected hosts, with it, are at most
// MaxEjectionPercent of all hosts — 100·(ejected+1)/hosts ≤ max,
// compared in floating point, nothing rounded — or, with
// AlwaysEjectOneHost, when none is ejected yet ("will eject at least one
// host regardless of the value"). So max 10 % ejects none of 2 hosts
// (50 % > 10 %) unless AlwaysEjectOneHost, and max 50 % ejects 1 of 2 or
// 3 hosts and 2 of 4.
func (d *OutlierDetector) MayEject() bool {
	if len(d.hosts) == 0 {
		return false
	}
	if d.cfg.AlwaysEjectOneHost && d.ejected == 0 {
		return true
	}
	return 100*float64(d.ejected+1)/float64(len(d.hosts)) <= float64(min(d.cfg.MaxEjectionPercent, 100))
}

func (d *OutlierDetector) eject(s *outlierHost, enforcing uint32, now time.Time, rnd uint64) Ejection {
	if !d.MayEject() {
		return EjectionOverflow
	}
	if rnd%100 >= uint64(enforcing) {
		return EjectionNotEnforced
	}
	s.ejected, s.ejectedAt = true, now
	s.ejections++
	base, maxT := d.cfg.BaseEjectionTime, d.cfg.MaxEjectionTime
	if time.Duration(s.multiplier)*base < maxT+base {
		s.multiplier++
	}
	d.ejected++
	return Ejected
}

// EjectionTime is how long an ejection with the given multiplier lasts:
// min(BaseEjectionTime × multiplier, max(BaseEjectionTime,
// MaxEjectionTime)).
func (c OutlierDetection) EjectionTime(multiplier uint32) time.Duration {
	return min(c.BaseEjectionTime*time.Duration(multiplier), max(c.BaseEjectionTime, c.MaxEjectionTime))
}

// Advance runs the interval ticks due at now and returns the hosts it
// unejected. At a tick, an ejected host whose EjectionTime has passed
// since its ejection is unejected (its counters reset); a host that is
// not ejected and was unejected at least an interval ago has its
// multiplier decreased by one.
func (d *OutlierDetector) Advance(now time.Time) (unejected []netip.AddrPort) {
	for !d.next.After(now) {
		if d.idle() {
			// Nothing can change at a tick: jump to the first one after now.
			k := now.Sub(d.next)/d.interval + 1
			d.next = d.next.Add(k * d.interval)
			break
		}
		tick := d.next
		for h, s := range d.hosts {
			switch {
			case s.ejected:
				if tick.Sub(s.ejectedAt) >= d.cfg.EjectionTime(s.multiplier) {
					s.ejected, s.unejectedAt = false, tick
					s.c5xx, s.cgw = 0, 0
					d.ejected--
					unejected = append(unejected, h)
				}
			case !s.unejectedAt.IsZero() && tick.Sub(s.unejectedAt) >= d.interval && s.multiplier > 0:
				s.multiplier--
			}
		}
		d.next = d.next.Add(d.interval)
	}
	return unejected
}

// idle reports whether no tick can change anything.
func (d *OutlierDetector) idle() bool {
	if d.ejected > 0 {
		return false
	}
	for _, s := range d.hosts {
		if s.multiplier > 0 && !s.unejectedAt.IsZero() {
			return false
		}
	}
	return true
}
