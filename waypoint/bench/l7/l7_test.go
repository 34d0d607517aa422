package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"ambit.dev/waypoint/internal/xdstest"
	"ambit.dev/ztunnel/bench/benchkit"
)

func TestSweepRates(t *testing.T) {
	tests := []struct {
		base, max int
		want      []int
	}{
		{1000, 32000, []int{2000, 4000, 8000, 16000, 32000}},
		{1000, 30000, []int{2000, 4000, 8000, 16000}},
		{1000, 1000, nil},
		{300, 1000, []int{600}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d..%d", tc.base, tc.max), func(t *testing.T) {
			if got := sweepRates(tc.base, tc.max); !slices.Equal(got, tc.want) {
				t.Errorf("sweepRates = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHolds(t *testing.T) {
	tests := []struct {
		name    string
		p       phase
		want    bool
		wantWhy string
	}{
		{"answered within the limit", phase{measured: true, p99: 5 * time.Millisecond}, true, ""},
		{"at the limit", phase{measured: true, p99: 20 * time.Millisecond}, true, ""},
		{"queueing beyond the limit", phase{measured: true, p99: 21 * time.Millisecond}, false, "p99 21.0 ms > 20ms"},
		{"an error", phase{measured: true, p99: time.Millisecond, errs: 1}, false, "1 requests failed"},
		{"nothing answered", phase{}, false, "no request answered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, why := holds(tc.p, 20*time.Millisecond)
			if got != tc.want || why != tc.wantWhy {
				t.Errorf("holds = %v %q, want %v %q", got, why, tc.want, tc.wantWhy)
			}
		})
	}
}

func TestPhaseFinish(t *testing.T) {
	p := phase{cpuAll: 1.5, cpuL7: 0.5, readsL7: 300, writesL7: 450}
	for i := 100; i >= 1; i-- {
		p.samples = append(p.samples, time.Duration(i)*time.Millisecond)
	}
	p.finish()
	if !p.measured || p.p50 != 50*time.Millisecond || p.p99 != 99*time.Millisecond {
		t.Errorf("p50 %v p99 %v measured %v; want 50ms 99ms true", p.p50, p.p99, p.measured)
	}
	if p.perKAll != 15 || p.perKL7 != 5 {
		t.Errorf("CPU per 1000 = %v / %v, want 15 / 5 (100 requests)", p.perKAll, p.perKL7)
	}
	if p.readsPerReq != 3 || p.writesPerReq != 4.5 {
		t.Errorf("system calls per request = %v / %v, want 3 / 4.5", p.readsPerReq, p.writesPerReq)
	}
}

func TestHAProxyConfig(t *testing.T) {
	tp := &topology{dir: "/tmp/d",
		plainClient: nil, refPod: podAt("10.10.3.3"), plainServer: podAt("10.10.2.3")}
	want := map[string][]string{
		"client": {"mode tcp", "bind 127.0.0.1:9080", "server s 10.10.3.3:9443 ssl crt /tmp/d/client.pem ca-file /tmp/d/ca.pem verify required", "ssl-min-ver TLSv1.3"},
		"l7":     {"mode http", "bind 10.10.3.3:9443 ssl crt /tmp/d/proxy.pem ca-file /tmp/d/ca.pem verify required", "server s 10.10.2.3:9444 ssl crt /tmp/d/proxy.pem ca-file /tmp/d/ca.pem verify required", "option http-keep-alive"},
		"server": {"mode tcp", "bind 10.10.2.3:9444 ssl crt /tmp/d/server.pem ca-file /tmp/d/ca.pem verify required", "server s 127.0.0.1:8080"},
	}
	cfgs := (&reference{tp: tp}).configs()
	if len(cfgs) != 3 {
		t.Fatalf("%d HAProxy configs, want 3", len(cfgs))
	}
	for _, d := range cfgs {
		var b strings.Builder
		if err := haproxyConfig.Execute(&b, d); err != nil {
			t.Fatal(err)
		}
		for _, line := range want[d.Role] {
			if !strings.Contains(b.String(), line) {
				t.Errorf("%s config lacks %q:\n%s", d.Role, line, b.String())
			}
		}
		if d.Role != "l7" && strings.Contains(b.String(), "mode http") {
			t.Errorf("%s config is not TCP mode:\n%s", d.Role, b.String())
		}
	}
}

// The resources served to the waypoint form a consistent snapshot: every
// cluster's assignment and every listener's route is there.
func TestWaypointResourcesConsistent(t *testing.T) {
	ip := netip.MustParseAddr("10.10.2.2")
	svc := xdstest.Service{Name: "web", Namespace: "bench", Port: 80, Protocol: "http", VIPs: []netip.Addr{serviceVIP},
		Endpoints: []xdstest.Endpoint{{Tunnel: netip.AddrPortFrom(ip, 15008), Destination: netip.AddrPortFrom(ip, 8080), Identity: "spiffe://cluster.local/ns/bench/sa/server"}}}
	snap, err := cache.NewSnapshot("1", waypointResources([]xdstest.Service{svc}))
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("snapshot not consistent: %v", err)
	}
}

// serveOne answers one request on c with the given raw response.
func serveOne(t *testing.T, c net.Conn, resp string) {
	t.Helper()
	go func() {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Host != host || req.Method != http.MethodGet || req.Close {
			resp = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
		}
		_, _ = c.Write([]byte(resp))
	}()
}

func TestClientRoundTrip(t *testing.T) {
	body := strings.Repeat("x", bodySize)
	tests := []struct {
		name, resp string
		wantErr    string
	}{
		{"200 with the body, kept alive", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", bodySize, body), ""},
		{"upstream error", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "status 503"},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", "body of 3 bytes"},
		{"connection closed by the server", fmt.Sprintf("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", bodySize, body), "no keep-alive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			serveOne(t, b, tc.resp)
			cl := newClient(a, host)
			err := cl.do()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("do: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("do = %v, want an error containing %q", err, tc.wantErr)
			}
			if err := cl.do(); err != errClosed {
				t.Errorf("request after a failure = %v, want errClosed", err)
			}
		})
	}
}

func TestTable(t *testing.T) {
	cfg := config{rate: 1000, rounds: 2, holdP99: 20 * time.Millisecond}
	mk := func(name string, p99 time.Duration, l7 bool) *result {
		r := &result{name: name, proxies: name != "direct", l7: l7, base: phase{measured: true, p50: p99 / 2, p99: p99, perKAll: 0.5, perKL7: 0.2, readsPerReq: 3, writesPerReq: 6.5}}
		r.roundP99 = []time.Duration{p99, p99}
		return r
	}
	direct, l4, wp := mk("direct", time.Millisecond, false), mk("L4 only (2 ztunnels)", 2*time.Millisecond, false), mk("L4 + waypoint", 2500*time.Microsecond, true)
	wp.rssIdle, wp.rssPeak = 20<<20, 30<<20
	wp.best = &phase{rate: 4000, p50: time.Millisecond, p99: 3 * time.Millisecond, perKAll: 0.4, perKL7: 0.15}
	failed := &result{name: "HAProxy L7 reference", err: fmt.Errorf("boom")}
	var b strings.Builder
	writeTable(&b, cfg, []*result{direct, l4, wp, failed})
	out := b.String()
	for _, want := range []string{
		"| Metric | direct | L4 only (2 ztunnels) | L4 + waypoint | HAProxy L7 reference |",
		"| Latency p99 @ 1000 req/s (ms) | 1.000 | 2.000 | 2.500 | failed |",
		"| Added p99 vs direct (ms) | — | +1.000 | +1.500 | failed |",
		"| Added p99 vs L4 only (ms) | — | — | +0.500 | failed |",
		"| L7 proxy RSS idle / peak (MB) | — | — | 20.0 / 30.0 | failed |",
		"| L7 proxy read(2) / write(2) calls per request @ 1000 req/s (/proc/<pid>/io; recv/send not counted) | — | — | 3.0 / 6.5 | failed |",
		"| Highest rate held (req/s; no errors, p99 ≤ 20ms) | — | — | 4000 | failed |",
		"| Proxy CPU per 1000 requests at the highest rate (CPU s, all / L7 proxy) | — | — | 0.4000 / 0.1500 | failed |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	checks := strings.Join(targetChecks(cfg, []*result{direct, l4, wp}), "\n")
	for _, want := range []string{"≤ 1 ms at 1000 req/s: MET (+0.500 ms", "waypoint RSS < 40 MB: MET (idle 20.0 MB, peak 30.0 MB)"} {
		if !strings.Contains(checks, want) {
			t.Errorf("target checks lack %q:\n%s", want, checks)
		}
	}
}

func podAt(ip string) *benchkit.Pod { return &benchkit.Pod{IP: netip.MustParseAddr(ip)} }

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		check   func(config) bool
		wantErr bool
	}{
		{"defaults", nil, func(c config) bool { return c.rate == 1000 && c.duration == 10*time.Second && c.rounds == 5 && c.maxRate == 32000 }, false},
		{"quick keeps what is set", []string{"-quick", "-rounds", "4"}, func(c config) bool {
			return c.duration == 4*time.Second && c.rounds == 4 && c.maxRate == 8000
		}, false},
		{"waypoint environment", []string{"-waypoint-env", "GOMEMLIMIT=24MiB", "-waypoint-env", "GOGC=50"}, func(c config) bool {
			return slices.Equal(c.waypointEnv, []string{"GOMEMLIMIT=24MiB", "GOGC=50"})
		}, false},
		{"environment without =", []string{"-waypoint-env", "GOGC"}, nil, true},
		{"segments too short", []string{"-duration", "1s", "-rounds", "5"}, nil, true},
		{"max rate below the rate", []string{"-rate", "2000", "-max-rate", "1000"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseFlags(%q) error = %v, want error %v", tc.args, err, tc.wantErr)
			}
			if err == nil && !tc.check(c) {
				t.Errorf("parseFlags(%q) = %+v", tc.args, c)
			}
		})
	}
}
