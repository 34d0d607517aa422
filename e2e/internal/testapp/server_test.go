package testapp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// families are the loopback addresses every network test runs on.
var families = []struct {
	name string
	host string
}{
	{"ipv4", "127.0.0.1"},
	{"ipv6", "::1"},
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logLines returns the JSON log records whose msg is msg.
func (b *syncBuffer) logLines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// waitLogLine polls the log until a record with msg satisfies ok: the
// server writes its per-connection line after the client may already have
// its answer.
func (b *syncBuffer) waitLogLine(t *testing.T, msg string, ok func(map[string]any) bool) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs := b.logLines(t, msg)
		if slices.ContainsFunc(recs, ok) || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testServer struct {
	httpURL string // http://host:port
	tcpAddr string // host:port
	logs    *syncBuffer
	cancel  context.CancelFunc
	done    chan error
}

// startServer serves on loopback host with ephemeral ports until the test ends.
func startServer(t *testing.T, host string, shutdown time.Duration) *testServer {
	t.Helper()
	return startServerWith(t, host, func(c *ServerConfig) { c.ShutdownTimeout = shutdown })
}

// startServerWith is startServer with the configuration changed by mod.
func startServerWith(t *testing.T, host string, mod func(*ServerConfig)) *testServer {
	t.Helper()
	httpLn, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", host, err)
	}
	tcpLn, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		httpLn.Close()
		t.Fatalf("listen on %s: %v", host, err)
	}
	logs := &syncBuffer{}
	cfg := ServerConfig{
		HTTPAddr: "unused", TCPAddr: "unused",
		Name: "srv", Hostname: "host-1", PodIP: "10.1.2.3",
		ShutdownTimeout: time.Minute,
	}
	mod(&cfg)
	s, err := NewServer(cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{
		httpURL: "http://" + httpLn.Addr().String(),
		tcpAddr: tcpLn.Addr().String(),
		logs:    logs,
		cancel:  cancel,
		done:    make(chan error, 1),
	}
	go func() { ts.done <- s.Serve(ctx, httpLn, tcpLn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ts.done; err != nil {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

func get(t *testing.T, cfg GetConfig) (GetResult, error) {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.ExpectStatus == 0 {
		cfg.ExpectStatus = http.StatusOK
	}
	return Fetch(context.Background(), NewHTTPClient(), cfg)
}

func TestHTTPInfoReportsPeer(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ts := startServer(t, fam.host, time.Minute)
			res, err := get(t, GetConfig{
				URL:     ts.httpURL + "/some/path?q=1",
				Method:  http.MethodPost,
				Headers: http.Header{"X-Test": {"a", "b"}, "Host": {"svc.example:80"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			var info Info
			if err := json.Unmarshal(res.Body, &info); err != nil {
				t.Fatalf("body %q is not JSON: %v", res.Body, err)
			}
			if res.Local == "" || info.Peer != res.Local {
				t.Errorf("server saw peer %q, client local address is %q", info.Peer, res.Local)
			}
			if peerHost, _, _ := net.SplitHostPort(info.Peer); peerHost != fam.host {
				t.Errorf("peer host %q, want %q", peerHost, fam.host)
			}
			want := Info{Name: "srv", Hostname: "host-1", PodIP: "10.1.2.3", Peer: info.Peer,
				Method: "POST", Path: "/some/path", Host: "svc.example:80"}
			gotNoHeaders := info
			gotNoHeaders.Headers = nil
			if gotNoHeaders.Name != want.Name || gotNoHeaders.Hostname != want.Hostname || gotNoHeaders.PodIP != want.PodIP ||
				gotNoHeaders.Method != want.Method || gotNoHeaders.Path != want.Path || gotNoHeaders.Host != want.Host {
				t.Errorf("info = %+v, want %+v", gotNoHeaders, want)
			}
			if info.Headers["X-Test"] != "a, b" {
				t.Errorf("X-Test header = %q, want %q (all headers %v)", info.Headers["X-Test"], "a, b", info.Headers)
			}

			recs := ts.logs.waitLogLine(t, "http request", func(r map[string]any) bool { return r["path"] == "/some/path" })
			if len(recs) != 1 || recs[0]["peer"] != res.Local || recs[0]["path"] != "/some/path" || recs[0]["status"] != float64(200) {
				t.Errorf("request log = %v, want one record with peer %s, path /some/path, status 200", recs, res.Local)
			}
		})
	}
}

func TestUpstreamChain(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			backend := startServerWith(t, fam.host, func(c *ServerConfig) { c.Name = "backend" })
			front := startServerWith(t, fam.host, func(c *ServerConfig) { c.Name = "frontend"; c.Upstream = backend.httpURL + "/" })
			res, err := get(t, GetConfig{URL: front.httpURL + "/"})
			if err != nil {
				t.Fatal(err)
			}
			var info Info
			if err := json.Unmarshal(res.Body, &info); err != nil {
				t.Fatalf("body %q: %v", res.Body, err)
			}
			if info.Name != "frontend" || info.Upstream == nil || info.Upstream.Name != "backend" || info.UpstreamError != "" {
				t.Fatalf("answer %+v, want frontend embedding backend's answer", info)
			}
			if h, _, _ := net.SplitHostPort(info.Upstream.Peer); h != fam.host {
				t.Errorf("backend saw peer %q, want host %s", info.Upstream.Peer, fam.host)
			}
			// Other paths are answered locally.
			res, err = get(t, GetConfig{URL: front.httpURL + "/other"})
			if err != nil {
				t.Fatal(err)
			}
			var local Info
			if err := json.Unmarshal(res.Body, &local); err != nil || local.Upstream != nil {
				t.Fatalf("/other answered %s, want no upstream call", res.Body)
			}
			// An unreachable upstream: 502 naming the upstream.
			down := startServerWith(t, fam.host, func(c *ServerConfig) { c.Upstream = backend.httpURL + "/status/503" })
			res, err = get(t, GetConfig{URL: down.httpURL + "/", ExpectStatus: http.StatusBadGateway})
			if err != nil {
				t.Fatal(err)
			}
			var failed Info
			if err := json.Unmarshal(res.Body, &failed); err != nil || !strings.Contains(failed.UpstreamError, "status 503") {
				t.Fatalf("answer %s, want upstream_error naming status 503", res.Body)
			}
		})
	}
}

func TestHTTPEndpoints(t *testing.T) {
	cases := []struct {
		name       string
		path       string
		wantStatus int
		wantBody   func(t *testing.T, body []byte)
	}{
		{"healthz", "/healthz", 200, func(t *testing.T, b []byte) {
			if string(b) != "ok\n" {
				t.Errorf("body %q, want ok", b)
			}
		}},
		{"status 503", "/status/503", 503, isInfo},
		{"status 201", "/status/201", 201, isInfo},
		{"status 204 has no body", "/status/204", 204, func(t *testing.T, b []byte) {
			if len(b) != 0 {
				t.Errorf("body %q, want none", b)
			}
		}},
		{"status not a number", "/status/abc", 400, nil},
		{"status out of range", "/status/99", 400, nil},
		{"bytes", "/bytes/100000", 200, func(t *testing.T, b []byte) {
			if len(b) != 100000 {
				t.Errorf("got %d bytes, want 100000", len(b))
			}
			if !bytes.HasPrefix(b, []byte("0123456789abc")) {
				t.Errorf("body starts %q, want the pattern", b[:min(len(b), 20)])
			}
		}},
		{"zero bytes", "/bytes/0", 200, func(t *testing.T, b []byte) {
			if len(b) != 0 {
				t.Errorf("got %d bytes, want 0", len(b))
			}
		}},
		{"bytes negative", "/bytes/-1", 400, nil},
		{"delay", "/delay/5", 200, isInfo},
		{"delay not a number", "/delay/x", 400, nil},
		{"anything else", "/a/b/c", 200, isInfo},
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ts := startServer(t, fam.host, time.Minute)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					res, err := get(t, GetConfig{URL: ts.httpURL + tc.path, ExpectStatus: tc.wantStatus})
					if err != nil {
						t.Fatal(err)
					}
					if tc.wantBody != nil {
						tc.wantBody(t, res.Body)
					}
				})
			}
		})
	}
}

func isInfo(t *testing.T, b []byte) {
	t.Helper()
	var info Info
	if err := json.Unmarshal(b, &info); err != nil || info.Name != "srv" || info.Peer == "" {
		t.Errorf("body %q is not the server's info JSON (err %v)", b, err)
	}
}

func TestTCPEcho(t *testing.T) {
	cases := []struct {
		name string
		send string
	}{
		{"line", "hello\n"},
		{"empty", ""},
		{"no newline", "abc"},
		{"large", strings.Repeat("0123456789", 200_000)},
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ts := startServer(t, fam.host, time.Minute)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					res, err := TCPExchange(context.Background(), TCPConfig{Addr: ts.tcpAddr, Send: tc.send, Timeout: 30 * time.Second})
					if err != nil {
						t.Fatal(err)
					}
					if res.Peer != res.Local {
						t.Errorf("server saw peer %q, client local address is %q", res.Peer, res.Local)
					}
					if res.Echo != tc.send {
						t.Errorf("echo has %d bytes, want %d", len(res.Echo), len(tc.send))
					}
				})
			}
		})
	}
}

// TestTCPHalfClose checks, on a raw connection, that the server keeps sending
// after the client half-closes and then closes its own side.
func TestTCPHalfClose(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ts := startServer(t, fam.host, time.Minute)
			c, err := net.Dial("tcp", ts.tcpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.WriteString(c, "first "); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "second"); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading until the server closes: %v", err)
			}
			want := "peer=" + c.LocalAddr().String() + "\nfirst second"
			if string(got) != want {
				t.Errorf("got %q, want %q", got, want)
			}
			// The server logs the connection once it is done with it; Cleanup
			// waits for Serve, so read the log after stopping the server.
			ts.cancel()
			if err := <-ts.done; err != nil {
				t.Fatal(err)
			}
			ts.done <- nil // for Cleanup
			recs := ts.logs.logLines(t, "tcp connection")
			if len(recs) != 1 || recs[0]["peer"] != c.LocalAddr().String() || recs[0]["bytes_in"] != float64(len("first second")) {
				t.Errorf("tcp log = %v, want one record with peer %s and 12 bytes in", recs, c.LocalAddr())
			}
		})
	}
}

// TestGracefulShutdown checks that a stopping server refuses new connections
// but finishes the exchange on an open one.
func TestGracefulShutdown(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ts := startServer(t, fam.host, time.Minute)
			c, err := net.Dial("tcp", ts.tcpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, len("peer=")+len(c.LocalAddr().String())+1)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatalf("reading peer line: %v", err)
			}

			ts.cancel()
			// Wait (bounded) until the listener is closed.
			refused := false
			for range 500 {
				nc, err := net.DialTimeout("tcp", ts.tcpAddr, time.Second)
				if err != nil {
					refused = true
					break
				}
				nc.Close()
				time.Sleep(10 * time.Millisecond)
			}
			if !refused {
				t.Fatal("server still accepts connections after shutdown began")
			}
			select {
			case err := <-ts.done:
				t.Fatalf("Serve returned (%v) while a connection was still open", err)
			default:
			}

			if _, err := io.WriteString(c, "late"); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "late" {
				t.Fatalf("echo during shutdown = %q, %v; want %q", got, err, "late")
			}
		})
	}
}

// TestShutdownTimeoutClosesIdleConnections checks that an idle connection does
// not keep the server up past its shutdown timeout.
func TestShutdownTimeoutClosesIdleConnections(t *testing.T) {
	ts := startServer(t, "127.0.0.1", 10*time.Millisecond)
	c, err := net.Dial("tcp", ts.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	// The server has taken the connection once its peer line is in (a
	// cancel before that would close the listener with the connection
	// still in its backlog).
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "peer=") {
		t.Fatalf("got %q, %v; want the peer line", line, err)
	}
	ts.cancel()
	if err := <-ts.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	ts.done <- nil // for Cleanup
	if _, err := io.ReadAll(br); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading from a connection the server closed: %v", err)
	}
}

func TestNewServerRejects(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if _, err := NewServer(ServerConfig{}, log); err == nil {
		t.Error("NewServer accepted a config with neither --http nor --tcp")
	}
	if _, err := NewServer(ServerConfig{HTTPAddr: ":1", ShutdownTimeout: -1}, log); err == nil {
		t.Error("NewServer accepted a negative shutdown timeout")
	}
	for _, r := range []float64{-0.1, 1.5} {
		if _, err := NewServer(ServerConfig{HTTPAddr: ":1", FailRate: r}, log); err == nil {
			t.Errorf("NewServer accepted fail rate %v", r)
		}
	}
	for _, u := range []string{"backend:8080", "https://backend/", "http:///path", "::"} {
		if _, err := NewServer(ServerConfig{HTTPAddr: ":1", Upstream: u}, log); err == nil {
			t.Errorf("NewServer accepted upstream %q", u)
		}
	}
}

func TestFailRate(t *testing.T) {
	for _, tc := range []struct {
		rate     float64
		min, max int // 503s out of 200
	}{{0, 0, 0}, {1, 200, 200}, {0.3, 30, 90}} {
		t.Run(fmt.Sprint(tc.rate), func(t *testing.T) {
			s := startServerWith(t, "127.0.0.1", func(c *ServerConfig) { c.FailRate = tc.rate })
			failed := 0
			for range 200 {
				res, err := get(t, GetConfig{URL: s.httpURL + "/", ExpectStatus: 0})
				if res.Status == http.StatusServiceUnavailable {
					failed++
				} else if res.Status != http.StatusOK {
					t.Fatalf("status %d (%v), want 200 or 503", res.Status, err)
				}
			}
			if failed < tc.min || failed > tc.max {
				t.Fatalf("%d of 200 answered 503, want %d to %d", failed, tc.min, tc.max)
			}
			// Only "/" fails.
			if _, err := get(t, GetConfig{URL: s.httpURL + "/healthz"}); err != nil {
				t.Fatalf("/healthz: %v", err)
			}
		})
	}
}

func TestProxyHeaders(t *testing.T) {
	h := http.Header{}
	if got := proxyHeaders(h); got != "" {
		t.Errorf("no headers: %q", got)
	}
	h.Set("X-Envoy-Overloaded", "true")
	h.Set("X-Envoy-Upstream-Service-Time", "3")
	h.Set("Server", "x")
	if got, want := proxyHeaders(h), "; x-envoy-overloaded: true; x-envoy-upstream-service-time: 3"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
