package model

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"ambit.dev/pkg/identity"
)

func testEP(dst string, healthy bool) Endpoint {
	d := netip.MustParseAddrPort(dst)
	return Endpoint{Tunnel: netip.AddrPortFrom(d.Addr(), 15008), Destination: d,
		Identity: identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "web"}, Healthy: healthy}
}

func dests(eps []Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.Destination.String())
	}
	return out
}

func TestCandidates(t *testing.T) {
	a, b, c, d := "10.244.1.5:8080", "[fd00::2]:8080", "10.244.2.7:8080", "[fd00::4]:8080"
	four := []Endpoint{testEP(a, true), testEP(b, true), testEP(c, true), testEP(d, true)}
	ejected := func(hosts ...string) func(netip.AddrPort) bool {
		return func(h netip.AddrPort) bool { return slices.Contains(hosts, h.String()) }
	}
	tests := []struct {
		name      string
		threshold uint32
		eps       []Endpoint
		ejected   func(netip.AddrPort) bool
		want      []string
		panic     bool
	}{
		{name: "all usable", threshold: 50, eps: four, want: []string{a, b, c, d}},
		{name: "ejected left out", threshold: 50, eps: four, ejected: ejected(b), want: []string{a, c, d}},
		{name: "exactly at the threshold: no panic (50 % is not < 50 %)", threshold: 50, eps: four, ejected: ejected(a, b), want: []string{c, d}},
		{name: "below the threshold: panic, every endpoint", threshold: 50, eps: four, ejected: ejected(a, b, c), want: []string{a, b, c, d}, panic: true},
		{name: "unhealthy count as unusable", threshold: 50,
			eps: []Endpoint{testEP(a, false), testEP(b, false), testEP(c, true)}, want: []string{a, b, c}, panic: true},
		{name: "threshold 0 never panics", threshold: 0, eps: four, ejected: ejected(a, b, c, d), want: []string{}},
		{name: "threshold 0, unhealthy never picked", eps: []Endpoint{testEP(a, false), testEP(c, true)}, want: []string{c}},
		{name: "threshold 100: panic as soon as one is out", threshold: 100, eps: four, ejected: ejected(d), want: []string{a, b, c, d}, panic: true},
		{name: "no endpoints", threshold: 50, want: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, panic := LoadBalancing{PanicThreshold: tt.threshold}.Candidates(tt.eps, tt.ejected)
			if !slices.Equal(dests(got), tt.want) || panic != tt.panic {
				t.Fatalf("Candidates = %v (panic %v), want %v (panic %v)", dests(got), panic, tt.want, tt.panic)
			}
		})
	}
}

func TestPickLeast(t *testing.T) {
	a, b, c := testEP("10.244.1.5:8080", true), testEP("[fd00::2]:8080", true), testEP("10.244.2.7:8080", true)
	hosts := []Endpoint{a, b, c}
	load := map[netip.AddrPort]float64{a.Destination: 5, b.Destination: 1, c.Destination: 1}
	seq := func(v ...uint64) func() uint64 {
		return func() uint64 { r := v[0]; v = v[1:]; return r }
	}
	tests := []struct {
		name    string
		choices int
		rnd     func() uint64
		want    Endpoint
	}{
		{name: "second sample less loaded", choices: 2, rnd: seq(0, 1), want: b},
		{name: "first sample less loaded", choices: 2, rnd: seq(2, 0), want: c},
		{name: "tie keeps the first sample", choices: 2, rnd: seq(2, 1), want: c},
		{name: "with replacement: the same host twice", choices: 2, rnd: seq(3, 0), want: a},
		{name: "one choice is random", choices: 1, rnd: seq(0), want: a},
		{name: "zero choices act as one", choices: 0, rnd: seq(4), want: b},
		{name: "more choices than hosts", choices: 5, rnd: seq(0, 0, 0, 0, 2), want: c},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PickLeast(hosts, tt.choices, tt.rnd, func(e Endpoint) float64 { return load[e.Destination] })
			if got.Destination != tt.want.Destination {
				t.Fatalf("PickLeast = %s, want %s", got.Destination, tt.want.Destination)
			}
		})
	}
}

func TestPeakEWMA(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n float64) float64 { return n * float64(time.Millisecond) }
	near := func(got, want float64) bool { return got > want*0.999 && got < want*1.001 }
	tests := []struct {
		name   string
		run    func(e *PeakEWMA) float64
		want   float64
		reason string
	}{
		{name: "no sample: the default estimate × (active+1)", run: func(e *PeakEWMA) float64 { return e.Cost(2, t0) }, want: ms(90)},
		{name: "a slower sample is taken at once (peak)", run: func(e *PeakEWMA) float64 {
			e.Observe(200*time.Millisecond, t0)
			return e.Cost(0, t0)
		}, want: ms(200)},
		{name: "a faster sample moves the estimate by 1-e^(-Δt/τ)", run: func(e *PeakEWMA) float64 {
			e.Observe(100*time.Millisecond, t0)
			e.Observe(0, t0.Add(EWMADecay)) // w = 1/e
			return e.Cost(0, t0.Add(EWMADecay))
		}, want: ms(100) / 2.718281828459045},
		{name: "reading decays towards 0 with τ", run: func(e *PeakEWMA) float64 {
			e.Observe(100*time.Millisecond, t0)
			return e.Cost(0, t0.Add(2*EWMADecay))
		}, want: ms(100) / (2.718281828459045 * 2.718281828459045)},
		{name: "a sample at the same instant as the last changes nothing unless a peak", run: func(e *PeakEWMA) float64 {
			e.Observe(100*time.Millisecond, t0)
			e.Observe(10*time.Millisecond, t0)
			return e.Cost(1, t0)
		}, want: ms(200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e PeakEWMA
			if got := tt.run(&e); !near(got, tt.want) {
				t.Fatalf("cost %.0f ns, want %.0f", got, tt.want)
			}
		})
	}
}

func TestAvoid(t *testing.T) {
	a, b := testEP("10.244.1.5:8080", true), testEP("[fd00::2]:8080", true)
	tests := []struct {
		name  string
		hosts []Endpoint
		tried []netip.AddrPort
		want  []string
	}{
		{name: "nothing tried", hosts: []Endpoint{a, b}, want: dests([]Endpoint{a, b})},
		{name: "tried left out", hosts: []Endpoint{a, b}, tried: []netip.AddrPort{a.Destination}, want: dests([]Endpoint{b})},
		{name: "all tried: not the last", hosts: []Endpoint{a, b}, tried: []netip.AddrPort{a.Destination, b.Destination}, want: dests([]Endpoint{a})},
		{name: "only the last: itself", hosts: []Endpoint{a}, tried: []netip.AddrPort{a.Destination}, want: dests([]Endpoint{a})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dests(Avoid(tt.hosts, tt.tried)); !slices.Equal(got, tt.want) {
				t.Fatalf("Avoid = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClusterLimit(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    *Cluster
		l    Limit
		want int64
	}{
		{"default connections", &Cluster{}, LimitConnections, 1024},
		{"default pending", &Cluster{}, LimitPending, 1024},
		{"set requests", &Cluster{Limits: &Thresholds{MaxRequests: 3}}, LimitRequests, 3},
		{"zero pending is zero", &Cluster{Limits: &Thresholds{MaxConnections: 1}}, LimitPending, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Limit(tt.l); got != tt.want {
				t.Fatalf("Limit(%s) = %d, want %d", tt.l, got, tt.want)
			}
		})
	}
}
