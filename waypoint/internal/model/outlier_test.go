package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOutlierCode(t *testing.T) {
	for _, tt := range []struct {
		a    Attempt
		want int
	}{
		{Attempt{Status: 200}, 200},
		{Attempt{Status: 500}, 500},
		{Attempt{Failure: FailureConnect}, 503},
		{Attempt{Failure: FailureReset}, 503},
		{Attempt{Failure: FailureRefusedStream}, 503},
		{Attempt{Failure: FailurePerTryTimeout}, 504},
	} {
		if got := OutlierCode(tt.a); got != tt.want {
			t.Errorf("OutlierCode(%+v) = %d, want %d", tt.a, got, tt.want)
		}
	}
}

// TestOutlierDetector runs scripts of results and interval ticks. Steps:
// "<host> <code> [rnd]" a result at the current time (rnd default 0,
// i.e. enforced); "+<duration>" advances the clock and runs the due
// ticks; "hosts <a,b,...>" replaces the host set. want lists, per step,
// what it did ("E" ejected, "-" nothing, "N" not enforced, "O" overflow,
// "U:<hosts>" unejected) and then the ejected hosts.
func TestOutlierDetector(t *testing.T) {
	cfg := OutlierDetection{Consecutive5xx: 3, ConsecutiveGatewayFailure: 2, Interval: 10 * time.Second,
		BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50,
		Enforcing5xx: 100, EnforcingGatewayFailure: 100}
	only5xx := cfg
	only5xx.ConsecutiveGatewayFailure = 0
	tests := []struct {
		name  string
		cfg   OutlierDetection
		hosts string
		steps []string
		want  []string
	}{
		{name: "three 500s eject", cfg: only5xx, hosts: "a,b", steps: []string{"a 500", "a 500", "a 500"}, want: []string{"-", "-", "E", "a"}},
		{name: "a success resets the count", cfg: only5xx, hosts: "a,b", steps: []string{"a 500", "a 500", "a 200", "a 500", "a 500"},
			want: []string{"-", "-", "-", "-", "-", ""}},
		{name: "a 4xx is a success", cfg: only5xx, hosts: "a,b", steps: []string{"a 500", "a 500", "a 404", "a 500"}, want: []string{"-", "-", "-", "-", ""}},
		{name: "gateway errors: two 503s", cfg: cfg, hosts: "a,b", steps: []string{"a 503", "a 503"}, want: []string{"-", "E", "a"}},
		{name: "a 500 resets the gateway count but adds to the 5xx count", cfg: cfg, hosts: "a,b",
			steps: []string{"a 503", "a 500", "a 502"}, want: []string{"-", "-", "E", "a"}},
		{name: "gateway detection not enforced by default", cfg: func() OutlierDetection { c := cfg; c.EnforcingGatewayFailure = 0; return c }(),
			hosts: "a,b", steps: []string{"a 503", "a 503", "a 503"}, want: []string{"-", "N", "E", "a"}},
		{name: "enforcing percentage rolls rnd%100", cfg: func() OutlierDetection { c := only5xx; c.Enforcing5xx = 30; return c }(),
			hosts: "a,b", steps: []string{"a 500", "a 500", "a 500 30", "a 500", "a 500", "a 500 129"}, want: []string{"-", "-", "N", "-", "-", "E", "a"}},
		{name: "unejected at the first tick after base × 1", cfg: only5xx, hosts: "a,b",
			steps: []string{"+5s", "a 500", "a 500", "a 500", "+24s", "+1s", "+9s", "+1s"},
			// ejected at 5s; ticks at 10, 20, 30 (25 s: not yet), 40 (35 s ≥ 30 s)
			want: []string{"-", "-", "-", "E", "-", "-", "-", "U:a", ""}},
		{name: "second ejection lasts twice as long", cfg: only5xx, hosts: "a,b",
			steps: []string{"a 500", "a 500", "a 500", "+30s", "a 500", "a 500", "a 500", "+50s", "+10s"},
			// ejected at 0, back at tick 30; ejected again at 30 (multiplier 2): back at tick 90
			want: []string{"-", "-", "E", "U:a", "-", "-", "E", "-", "U:a", ""}},
		{name: "multiplier decays after healthy intervals", cfg: only5xx, hosts: "a,b",
			steps: []string{"a 500", "a 500", "a 500", "+30s", "+20s", "a 500", "a 500", "a 500", "+30s"},
			// back at 30; ticks 40 (10 s healthy: 1→0) and 50; ejected at 50 with multiplier 1: back at tick 80
			want: []string{"-", "-", "E", "U:a", "-", "-", "-", "E", "U:a", ""}},
		{name: "ejection capped by max_ejection_time", cfg: func() OutlierDetection { c := only5xx; c.MaxEjectionTime = 40 * time.Second; return c }(),
			hosts: "a,b", steps: []string{
				"a 500", "a 500", "a 500", "+30s", // ×1
				"a 500", "a 500", "a 500", "+60s", // ×2
				"a 500", "a 500", "a 500", "+40s", // ×3 = 90 s capped at 40 s
			},
			want: []string{"-", "-", "E", "U:a", "-", "-", "E", "U:a", "-", "-", "E", "U:a", ""}},
		{name: "max 50%: one of two, not both", cfg: only5xx, hosts: "a,b",
			steps: []string{"a 500", "a 500", "a 500", "b 500", "b 500", "b 500"}, want: []string{"-", "-", "E", "-", "-", "O", "a"}},
		{name: "max 50%: two of four", cfg: only5xx, hosts: "a,b,c,d",
			steps: []string{"a 500", "a 500", "a 500", "b 500", "b 500", "b 500", "c 500", "c 500", "c 500"},
			want:  []string{"-", "-", "E", "-", "-", "E", "-", "-", "O", "a,b"}},
		{name: "max 10% ejects none of two", cfg: func() OutlierDetection { c := only5xx; c.MaxEjectionPercent = 10; return c }(),
			hosts: "a,b", steps: []string{"a 500", "a 500", "a 500"}, want: []string{"-", "-", "O", ""}},
		{name: "max 10% with always_eject_one_host: one", cfg: func() OutlierDetection {
			c := only5xx
			c.MaxEjectionPercent, c.AlwaysEjectOneHost = 10, true
			return c
		}(), hosts: "a,b", steps: []string{"a 500", "a 500", "a 500", "b 500", "b 500", "b 500"}, want: []string{"-", "-", "E", "-", "-", "O", "a"}},
		{name: "max 100%: the only host", cfg: func() OutlierDetection { c := only5xx; c.MaxEjectionPercent = 100; return c }(),
			hosts: "a", steps: []string{"a 500", "a 500", "a 500"}, want: []string{"-", "-", "E", "a"}},
		{name: "overflow resets the count", cfg: only5xx, hosts: "a,b",
			steps: []string{"a 500", "a 500", "a 500", "b 500", "b 500", "b 500", "+30s", "b 500", "b 500", "b 500"},
			want:  []string{"-", "-", "E", "-", "-", "O", "U:a", "-", "-", "E", "b"}},
		{name: "an ejected host is not ejected again", cfg: only5xx, hosts: "a,b,c,d",
			steps: []string{"a 500", "a 500", "a 500", "a 500", "a 500", "a 500"}, want: []string{"-", "-", "E", "-", "-", "-", "a"}},
		{name: "removed host no longer counts", cfg: only5xx, hosts: "a,b",
			steps: []string{"a 500", "a 500", "a 500", "hosts b,c", "b 500", "b 500", "b 500"}, want: []string{"-", "-", "E", "-", "-", "-", "E", "b"}},
		{name: "unknown host ignored", cfg: only5xx, hosts: "a", steps: []string{"z 500", "z 500", "z 500"}, want: []string{"-", "-", "-", ""}},
		{name: "zero threshold never ejects", cfg: OutlierDetection{Interval: time.Second, MaxEjectionPercent: 100, Enforcing5xx: 100},
			hosts: "a", steps: []string{"a 500", "a 500"}, want: []string{"-", "-", ""}},
		{name: "long idle: ticks jump", cfg: only5xx, hosts: "a,b", steps: []string{"+1000h", "a 500", "a 500", "a 500", "+30s"},
			want: []string{"-", "-", "-", "E", "U:a", ""}},
	}
	addr := func(h string) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, h[0]}), 8080)
	}
	name := func(a netip.AddrPort) string { return string(rune(a.Addr().As4()[3])) }
	setHosts := func(d *OutlierDetector, list string) {
		var hs []netip.AddrPort
		for _, h := range strings.Split(list, ",") {
			hs = append(hs, addr(h))
		}
		d.SetHosts(hs)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(0, 0)
			d := NewOutlierDetector(tt.cfg, now)
			setHosts(d, tt.hosts)
			var got []string
			for _, s := range tt.steps {
				switch {
				case s[0] == '+':
					dur, _ := time.ParseDuration(s[1:])
					now = now.Add(dur)
					var un []string
					for _, h := range d.Advance(now) {
						un = append(un, name(h))
					}
					slices.Sort(un)
					if len(un) == 0 {
						got = append(got, "-")
					} else {
						got = append(got, "U:"+strings.Join(un, ","))
					}
				case len(s) > 6 && s[:6] == "hosts ":
					setHosts(d, s[6:])
					got = append(got, "-")
				default:
					var h string
					var code int
					var rnd uint64
					fmt.Sscan(s, &h, &code, &rnd)
					got = append(got, map[Ejection]string{NotEjected: "-", Ejected: "E", EjectionNotEnforced: "N", EjectionOverflow: "O"}[d.Result(addr(h), code, now, rnd)])
				}
			}
			var ej []string
			for _, h := range []string{"a", "b", "c", "d", "z"} {
				if d.Ejected(addr(h)) {
					ej = append(ej, h)
				}
			}
			if len(ej) != d.EjectedCount() {
				t.Errorf("EjectedCount %d, ejected hosts %v", d.EjectedCount(), ej)
			}
			got = append(got, strings.Join(ej, ","))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("steps %q:\n got %q\nwant %q", tt.steps, got, tt.want)
			}
		})
	}
}
