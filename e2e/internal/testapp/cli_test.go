package testapp

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

type runResult struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, ctx context.Context, args ...string) runResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, args, Env{Hostname: "h", Stdout: &stdout, Stderr: &stderr})
	return runResult{code, stdout.String(), stderr.String()}
}

// closedAddr returns a loopback address on host where nothing listens.
func closedAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestMainGet(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ts := startServer(t, fam.host, time.Minute)
			refused := "http://" + closedAddr(t, fam.host) + "/"
			cases := []struct {
				name       string
				args       []string
				wantCode   int
				wantLines  int    // stdout lines of info JSON
				wantStdout string // substring
				wantStderr string // substring
			}{
				{name: "ok", args: []string{"get", ts.httpURL + "/x"}, wantCode: 0, wantLines: 1},
				{name: "healthz", args: []string{"get", ts.httpURL + "/healthz"}, wantCode: 0, wantStdout: "ok\n"},
				{name: "count", args: []string{"get", "--count", "3", ts.httpURL + "/x"}, wantCode: 0, wantLines: 3, wantStdout: "3 ok, 0 failed\n"},
				{name: "flags after url", args: []string{"get", ts.httpURL + "/status/503", "--expect-status", "503"}, wantCode: 0, wantLines: 1},
				{name: "wrong status", args: []string{"get", ts.httpURL + "/status/500"}, wantCode: 1, wantStderr: "status 500, want 200"},
				{name: "wrong status counted", args: []string{"get", ts.httpURL + "/status/500", "--count=2"}, wantCode: 1, wantStdout: "0 ok, 2 failed\n", wantStderr: "2 of 2 requests"},
				{name: "refused", args: []string{"get", refused}, wantCode: 1, wantStderr: "is the server listening"},
				{name: "timeout", args: []string{"get", "--timeout", "50ms", ts.httpURL + "/delay/60000"}, wantCode: 1, wantStderr: "no answer within 50ms"},
				{name: "header", args: []string{"get", "--header", "X-Hello: world", ts.httpURL + "/"}, wantCode: 0, wantLines: 1, wantStdout: `"X-Hello":"world"`},
				{name: "no url", args: []string{"get"}, wantCode: 2, wantStderr: "takes URL"},
				{name: "zero count", args: []string{"get", "--count", "0", ts.httpURL}, wantCode: 2, wantStderr: "at least 1"},
				{name: "bad flag", args: []string{"get", "--nope", ts.httpURL}, wantCode: 2, wantStderr: "flag provided but not defined"},
				{name: "bad header", args: []string{"get", "--header", "nocolon", ts.httpURL}, wantCode: 2, wantStderr: "not 'Name: value'"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					r := run(t, context.Background(), tc.args...)
					if r.code != tc.wantCode {
						t.Errorf("exit code %d, want %d; stderr: %s", r.code, tc.wantCode, r.stderr)
					}
					if !strings.Contains(r.stdout, tc.wantStdout) {
						t.Errorf("stdout %q lacks %q", r.stdout, tc.wantStdout)
					}
					if !strings.Contains(r.stderr, tc.wantStderr) {
						t.Errorf("stderr %q lacks %q", r.stderr, tc.wantStderr)
					}
					if tc.wantCode != 0 && r.stderr == "" {
						t.Error("failed without a message on stderr")
					}
					infos := 0
					for line := range strings.Lines(r.stdout) {
						var info Info
						if json.Unmarshal([]byte(line), &info) == nil && info.Name == "srv" {
							infos++
						}
					}
					if infos != tc.wantLines {
						t.Errorf("stdout has %d info lines, want %d: %q", infos, tc.wantLines, r.stdout)
					}
				})
			}
		})
	}
}

// fakeServer accepts one connection, writes greeting, reads until the client
// half-closes, and closes without echoing.
func fakeServer(t *testing.T, greeting string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte(greeting))
		io.Copy(io.Discard, c)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestMainTCP(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ts := startServer(t, fam.host, time.Minute)
			cases := []struct {
				name       string
				args       func() []string
				wantCode   int
				wantStdout string // prefix
				wantStderr string
			}{
				{name: "default send", args: func() []string { return []string{"tcp", ts.tcpAddr} },
					wantStdout: "peer=" + net.JoinHostPort(fam.host, "")},
				{name: "send", args: func() []string { return []string{"tcp", ts.tcpAddr, "--send", "ping"} },
					wantStdout: "peer="},
				{name: "refused", args: func() []string { return []string{"tcp", closedAddr(t, fam.host)} },
					wantCode: 1, wantStderr: "connection refused"},
				{name: "not a testapp", args: func() []string { return []string{"tcp", fakeServer(t, "SSH-2.0\n")} },
					wantCode: 1, wantStderr: "want peer=<ip:port>"},
				{name: "no echo", args: func() []string { return []string{"tcp", fakeServer(t, "peer=1.2.3.4:5\n")} },
					wantCode: 1, wantStdout: "peer=1.2.3.4:5\n", wantStderr: `is "", want "hello\n"`},
				{name: "no addr", args: func() []string { return []string{"tcp"} },
					wantCode: 2, wantStderr: "takes ADDR"},
				{name: "two addrs", args: func() []string { return []string{"tcp", "a:1", "b:2"} },
					wantCode: 2, wantStderr: "takes ADDR"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					r := run(t, context.Background(), tc.args()...)
					if r.code != tc.wantCode {
						t.Errorf("exit code %d, want %d; stderr: %s", r.code, tc.wantCode, r.stderr)
					}
					if !strings.HasPrefix(r.stdout, tc.wantStdout) {
						t.Errorf("stdout %q does not start with %q", r.stdout, tc.wantStdout)
					}
					if !strings.Contains(r.stderr, tc.wantStderr) {
						t.Errorf("stderr %q lacks %q", r.stderr, tc.wantStderr)
					}
				})
			}

			// The printed peer is the connection's client address, then the echo.
			r := run(t, context.Background(), "tcp", ts.tcpAddr, "--send", "ping")
			lines := strings.Split(r.stdout, "\n")
			if len(lines) != 3 || lines[1] != "ping" || lines[2] != "" {
				t.Fatalf("stdout %q, want peer line, then ping", r.stdout)
			}
			peer := strings.TrimPrefix(lines[0], "peer=")
			host, _, err := net.SplitHostPort(peer)
			if err != nil || host != fam.host {
				t.Errorf("peer %q is not an address on %s", peer, fam.host)
			}
			recs := ts.logs.waitLogLine(t, "tcp connection", func(r map[string]any) bool { return r["peer"] == peer })
			if !slices.ContainsFunc(recs, func(r map[string]any) bool { return r["peer"] == peer }) {
				t.Errorf("server logged no connection from %s: %v", peer, recs)
			}
		})
	}
}

func TestMainUsage(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"no command", nil, 2},
		{"unknown command", []string{"frobnicate"}, 2},
		{"help", []string{"help"}, 0},
		{"subcommand help", []string{"get", "-h"}, 0},
		{"serve without listeners", []string{"serve", "--http", "", "--tcp", ""}, 2},
		{"serve with argument", []string{"serve", "extra"}, 2},
		{"sleep with argument", []string{"sleep", "extra"}, 2},
		{"upstream with an unset variable", []string{"serve", "--upstream", "http://${BACKEND_SERVICE_HOST}/"}, 2},
		{"upstream not http", []string{"serve", "--upstream", "ftp://backend/"}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, context.Background(), tc.args...)
			if r.code != tc.wantCode {
				t.Errorf("exit code %d, want %d; stderr: %s", r.code, tc.wantCode, r.stderr)
			}
			if tc.wantCode != 0 && r.stderr == "" {
				t.Error("usage error without a message on stderr")
			}
		})
	}
}

func TestMainServeAndSleepStopOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"serve ipv4", []string{"serve", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--name", "n1"}},
		{"serve ipv6", []string{"serve", "--http", "[::1]:0", "--tcp", "[::1]:0"}},
		{"sleep", []string{"sleep"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var stdout, stderr syncBuffer
			done := make(chan int, 1)
			go func() { done <- Main(ctx, tc.args, Env{Hostname: "h", Stdout: &stdout, Stderr: &stderr}) }()
			if tc.args[0] == "serve" {
				// Wait (bounded) until both listeners are up before stopping.
				for i := 0; len(stdout.logLines(t, "listening")) < 2; i++ {
					if i == 1000 {
						t.Fatalf("serve did not start listening: stdout %q stderr %q", stdout.String(), stderr.String())
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("exit code %d after cancel, want 0; stderr: %s", code, stderr.String())
			}
			if tc.args[0] == "serve" {
				if len(stdout.logLines(t, "shutting down")) != 1 {
					t.Errorf("serve did not log its shutdown: %q", stdout.String())
				}
			}
		})
	}
}

func TestMainServePortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := run(t, context.Background(), "serve", "--http", ln.Addr().String(), "--tcp", "")
	if r.code != 1 || !strings.Contains(r.stderr, "already in use") {
		t.Errorf("exit %d, stderr %q; want 1 and a port-in-use hint", r.code, r.stderr)
	}
}

func TestParseInterspersed(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		want      int
		wantCount int
		wantPos   []string
		wantErr   bool
	}{
		{name: "flag first", args: []string{"--count", "2", "u"}, want: 1, wantCount: 2, wantPos: []string{"u"}},
		{name: "flag last", args: []string{"u", "--count=3"}, want: 1, wantCount: 3, wantPos: []string{"u"}},
		{name: "flags around", args: []string{"-count", "4", "u", "v"}, want: 2, wantCount: 4, wantPos: []string{"u", "v"}},
		{name: "double dash", args: []string{"--", "--count"}, want: 1, wantCount: 1, wantPos: []string{"--count"}},
		{name: "missing positional", args: []string{"--count", "2"}, want: 1, wantErr: true},
		{name: "extra positional", args: []string{"u", "v"}, want: 1, wantErr: true},
		{name: "bad value", args: []string{"u", "--count", "x"}, want: 1, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(&bytes.Buffer{})
			count := fs.Int("count", 1, "")
			want := make([]string, tc.want)
			pos, err := parse(fs, tc.args, want...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parse error %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if *count != tc.wantCount || !slices.Equal(pos, tc.wantPos) {
				t.Errorf("count %d pos %q, want %d %q", *count, pos, tc.wantCount, tc.wantPos)
			}
		})
	}
}
