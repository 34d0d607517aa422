package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"ambit.dev/ztunnel/pkg/adminapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is a hand-written Source.
type fakeSource struct {
	mu    sync.Mutex
	dump  adminapi.ConfigDump
	ready error
}

func (f *fakeSource) ConfigDump() adminapi.ConfigDump {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dump
}

func (f *fakeSource) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *fakeSource) setReady(err error) {
	f.mu.Lock()
	f.ready = err
	f.mu.Unlock()
}

var opened = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fixtureDump() adminapi.ConfigDump {
	return adminapi.ConfigDump{
		Node: "node1",
		Workloads: []adminapi.WorkloadDump{
			{UID: "pod-a", Name: "client", Namespace: "ns1", ServiceAccount: "sa1", Node: "node1", Protocol: "HBONE",
				MTLSMode: "PERMISSIVE", Status: "HEALTHY", Addresses: []string{"10.10.1.2", "fd00::1:2"}, Captured: true},
			{UID: "pod-b", Name: "server", Namespace: "ns1", ServiceAccount: "sa2", Node: "node2", Protocol: "HBONE",
				MTLSMode: "STRICT", Status: "HEALTHY", Addresses: []string{"10.10.2.3"},
				Services: map[string]map[string]uint32{"ns1/echo.ns1.svc.cluster.local": {"80": 8080}}, Waypoint: "10.10.3.9:15008"},
		},
		Services: []adminapi.ServiceDump{
			{Name: "echo", Namespace: "ns1", Hostname: "echo.ns1.svc.cluster.local", VIPs: []string{"10.96.0.10", "fd00:96::10"},
				Ports: map[string]uint32{"80": 8080}},
		},
		Policies: []adminapi.PolicyDump{{Name: "allow-ns1", Namespace: "ns1", Scope: "namespace", Action: "ALLOW"}},
		Certificates: []adminapi.CertDump{{Identity: "spiffe://cluster.local/ns/ns1/sa/sa1", State: adminapi.CertValid, Chain: []adminapi.CertInfo{
			{Type: adminapi.CertLeaf, Serial: "abc", Subject: "spiffe://cluster.local/ns/ns1/sa/sa1", NotBefore: opened, NotAfter: opened.Add(24 * time.Hour)},
		}}},
		Connections: []adminapi.ConnDump{
			{ID: 1, Direction: "outbound", Protocol: "HBONE", Src: "10.10.1.2:40000", Dst: "10.10.2.3:8080", Opened: opened, BytesSent: 10, BytesReceived: 20},
			{ID: 2, Direction: "inbound", Protocol: "TCP", Src: "[fd00::1:2]:40000", Dst: "[fd00::2:3]:8080", Opened: opened},
		},
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr    string
		wantErr string // substring; empty means accepted
	}{
		{"127.0.0.1:15000", ""},
		{"127.0.0.2:15000", ""},
		{"[::1]:15000", ""},
		{"localhost:15000", ""},
		{"127.0.0.1:0", ""},
		{":15000", "listens on all interfaces"},
		{"0.0.0.0:15000", "not a loopback address"},
		{"[::]:15000", "not a loopback address"},
		{"10.10.0.1:15000", "not a loopback address"},
		{"[fd00::1]:15000", "not a loopback address"},
		{"[::ffff:10.0.0.1]:15000", "not a loopback address"},
		{"node1.example:15000", "host must be a loopback IP or localhost"},
		{"15000", "not host:port"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			err := CheckLoopback(tc.addr)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckLoopback(%q) = %v, want nil", tc.addr, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("CheckLoopback(%q) = %v, want an error containing %q", tc.addr, err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "loopback") {
				t.Errorf("error %q does not say the admin port must be loopback", err)
			}
		})
	}
}

func TestNewServerValidates(t *testing.T) {
	reg := prometheus.NewRegistry()
	tests := []struct {
		name    string
		cfg     ServerConfig
		src     Source
		wantErr string
	}{
		{"non-loopback admin IPv4", ServerConfig{AdminAddr: "0.0.0.0:15000"}, &fakeSource{}, "must listen on loopback only"},
		{"non-loopback admin IPv6", ServerConfig{AdminAddr: "[fd00::1]:15000"}, &fakeSource{}, "must listen on loopback only"},
		{"no source", ServerConfig{AdminAddr: "127.0.0.1:15000"}, nil, "Source is required"},
		{"metrics without gatherer", ServerConfig{MetricsAddr: ":15020"}, &fakeSource{}, "Gatherer is required"},
		{"bad ready addr", ServerConfig{ReadyAddr: "15021"}, &fakeSource{}, "ready address"},
		{"valid", ServerConfig{AdminAddr: "[::1]:15000", MetricsAddr: ":15020", ReadyAddr: ":15021", Gatherer: reg}, &fakeSource{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(tc.cfg, tc.src)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewServer: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewServer = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func TestAdminEndpoints(t *testing.T) {
	want := fixtureDump()
	h := AdminHandler(&fakeSource{dump: want})
	tests := []struct {
		path string
		into any
		want any
	}{
		{"/config_dump", &adminapi.ConfigDump{}, &want},
		{"/workloads", &[]adminapi.WorkloadDump{}, &want.Workloads},
		{"/services", &[]adminapi.ServiceDump{}, &want.Services},
		{"/policies", &[]adminapi.PolicyDump{}, &want.Policies},
		{"/certs", &[]adminapi.CertDump{}, &want.Certificates},
		{"/connections", &[]adminapi.ConnDump{}, &want.Connections},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			rec := get(t, h, tc.path)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d %s", tc.path, rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if !strings.Contains(rec.Body.String(), "\n  ") {
				t.Errorf("GET %s is not indented JSON:\n%s", tc.path, rec.Body)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), tc.into); err != nil {
				t.Fatalf("decoding %s: %v", tc.path, err)
			}
			if !reflect.DeepEqual(tc.into, tc.want) {
				t.Errorf("GET %s decoded to\n%+v\nwant\n%+v", tc.path, tc.into, tc.want)
			}
		})
	}
}

func TestAdminEndpointsEmptyAreArrays(t *testing.T) {
	h := AdminHandler(&fakeSource{dump: adminapi.ConfigDump{Node: "node1"}})
	for _, path := range []string{"/workloads", "/services", "/policies", "/certs", "/connections"} {
		t.Run(path, func(t *testing.T) {
			if got := strings.TrimSpace(get(t, h, path).Body.String()); got != "[]" {
				t.Errorf("GET %s on an empty dump = %q, want []", path, got)
			}
		})
	}
	t.Run("/config_dump", func(t *testing.T) {
		body := get(t, h, "/config_dump").Body.String()
		if strings.Contains(body, "null") {
			t.Errorf("empty config_dump has null lists:\n%s", body)
		}
	})
}

func TestAdminOtherEndpoints(t *testing.T) {
	h := AdminHandler(&fakeSource{})
	tests := []struct {
		method, path string
		wantCode     int
		wantBody     string
	}{
		{http.MethodGet, "/", 200, "/config_dump"},
		{http.MethodGet, "/debug/pprof/", 200, "goroutine"},
		{http.MethodGet, "/debug/pprof/cmdline", 200, ""},
		{http.MethodGet, "/nope", 404, ""},
		{http.MethodPost, "/config_dump", 405, ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.wantCode {
				t.Fatalf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.wantCode)
			}
			if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("%s %s body does not contain %q:\n%s", tc.method, tc.path, tc.wantBody, rec.Body)
			}
		})
	}
}

func TestReadyHandler(t *testing.T) {
	tests := []struct {
		name     string
		ready    error
		wantCode int
		wantBody string
	}{
		{"ready", nil, 200, "ready\n"},
		{"not ready", errors.New("no certificate yet for spiffe://cluster.local/ns/ns1/sa/sa1"), 503,
			"not ready: no certificate yet for spiffe://cluster.local/ns/ns1/sa/sa1\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, ReadyHandler(&fakeSource{ready: tc.ready}), "/healthz/ready")
			if rec.Code != tc.wantCode || rec.Body.String() != tc.wantBody {
				t.Fatalf("GET /healthz/ready = %d %q, want %d %q", rec.Code, rec.Body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

// startServer runs a Server and returns its addresses; cleanup cancels it
// and checks that Run returned nil.
func startServer(t *testing.T, cfg ServerConfig, src Source) (BoundAddrs, func()) {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := NewServer(cfg, src)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	addrs, err := s.BoundAddrs(ctx)
	if err != nil {
		cancel()
		<-done
		t.Fatalf("BoundAddrs: %v", err)
	}
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	}
	return addrs, stop
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func TestRunServesAndStops(t *testing.T) {
	tests := []struct {
		name string
		cfg  ServerConfig
	}{
		{"IPv4 three listeners", ServerConfig{AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0"}},
		{"IPv6 three listeners", ServerConfig{AdminAddr: "[::1]:0", MetricsAddr: "[::1]:0", ReadyAddr: "[::1]:0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			reg := prometheus.NewRegistry()
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_things_total", Help: "things"})
			reg.MustRegister(c)
			c.Add(3)
			tc.cfg.Gatherer = reg
			src := &fakeSource{dump: fixtureDump(), ready: errors.New("waiting for the first workload snapshot")}
			addrs, stop := startServer(t, tc.cfg, src)

			if code, body := httpGet(t, "http://"+addrs.Admin+"/config_dump"); code != 200 || !strings.Contains(body, `"node": "node1"`) {
				t.Errorf("GET /config_dump = %d %s", code, body)
			}
			if code, body := httpGet(t, "http://"+addrs.Ready+"/healthz/ready"); code != 503 || !strings.Contains(body, "first workload snapshot") {
				t.Errorf("GET /healthz/ready before ready = %d %q, want 503 with the reason", code, body)
			}
			src.setReady(nil)
			if code, body := httpGet(t, "http://"+addrs.Ready+"/healthz/ready"); code != 200 || body != "ready\n" {
				t.Errorf("GET /healthz/ready = %d %q, want 200 ready", code, body)
			}
			if code, body := httpGet(t, "http://"+addrs.Metrics+"/metrics"); code != 200 || !strings.Contains(body, "test_things_total 3") {
				t.Errorf("GET /metrics = %d %s", code, body)
			}
			// Each listener serves only its own endpoints.
			if code, _ := httpGet(t, "http://"+addrs.Metrics+"/config_dump"); code != 404 {
				t.Errorf("GET /config_dump on the metrics port = %d, want 404", code)
			}
			stop()
			for _, a := range []string{addrs.Admin, addrs.Metrics, addrs.Ready} {
				if conn, err := net.Dial("tcp", a); err == nil {
					conn.Close()
					t.Errorf("%s still accepts connections after Run returned", a)
				}
			}
		})
	}
}

func TestRunSharedAddress(t *testing.T) {
	defer goleak.VerifyNone(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	addrs, stop := startServer(t, ServerConfig{MetricsAddr: addr, ReadyAddr: addr, Gatherer: prometheus.NewRegistry()}, &fakeSource{})
	defer stop()
	if addrs.Metrics != addr || addrs.Ready != addr || addrs.Admin != "" {
		t.Fatalf("BoundAddrs = %+v, want metrics and ready on %s, no admin", addrs, addr)
	}
	if code, _ := httpGet(t, "http://"+addr+"/healthz/ready"); code != 200 {
		t.Errorf("GET /healthz/ready = %d", code)
	}
	if code, _ := httpGet(t, "http://"+addr+"/metrics"); code != 200 {
		t.Errorf("GET /metrics = %d", code)
	}
}

func TestRunPortInUse(t *testing.T) {
	defer goleak.VerifyNone(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, err := NewServer(ServerConfig{
		AdminAddr: "127.0.0.1:0", ReadyAddr: busy.Addr().String(), Logger: slog.New(slog.DiscardHandler),
	}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "is another ztunnel or process using the port?") {
		t.Fatalf("Run with a busy port = %v, want an error naming the busy port", err)
	}
	if _, berr := s.BoundAddrs(t.Context()); berr == nil {
		t.Errorf("BoundAddrs after a failed Run = nil error")
	}
	if err := s.Run(t.Context()); err == nil {
		t.Errorf("second Run = nil, want an error")
	}
}
