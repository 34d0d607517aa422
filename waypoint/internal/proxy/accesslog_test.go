package proxy

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// fields is an access log format with every kind of value (in name
// order, as xdsclient makes it).
var fields = []model.LogField{
	{Name: "authority", Format: "%REQ(:AUTHORITY)%"}, {Name: "bytes_received", Format: "%BYTES_RECEIVED%"},
	{Name: "bytes_sent", Format: "%BYTES_SENT%"}, {Name: "code", Format: "%RESPONSE_CODE%"},
	{Name: "details", Format: "%RESPONSE_CODE_DETAILS%"}, {Name: "downstream_peer", Format: "%DOWNSTREAM_REMOTE_ADDRESS%"},
	{Name: "duration", Format: "%DURATION%"}, {Name: "flags", Format: "%RESPONSE_FLAGS%"},
	{Name: "kind", Format: "a literal <&>"}, {Name: "method", Format: "%REQ(:METHOD)%"},
	{Name: "path", Format: "%REQ(:PATH)%"}, {Name: "protocol", Format: "%PROTOCOL%"},
	{Name: "start", Format: "%START_TIME%"}, {Name: "trace", Format: "%REQ(TRACEPARENT)%"},
	{Name: "upstream_host", Format: "%UPSTREAM_HOST%"},
}

// TestAppendLineMatchesEncodingJSON: the hand-built line is byte for byte
// what encoding/json makes of the map of the fields.
func TestAppendLineMatchesEncodingJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    logEntry
	}{
		{"empty", logEntry{}},
		{"plain", logEntry{start: time.Unix(1700000000, 123e6), method: "GET", path: "/public", authority: "web.demo.svc:80",
			code: 200, duration: 3 * time.Millisecond, bytesSent: 1024, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		{"escapes", logEntry{method: "GET", path: "/a\"b\\c<d>&e\x01f\u2028g/é", details: "rbac_access_denied_matched_policy[ns[demo]-policy[deny]-rule[0]]", code: 403, flags: "UAEX"}},
		{"invalid UTF-8", logEntry{path: "/\xff\xfe"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := make(map[string]any, len(fields))
			for _, f := range fields {
				m[f.Name] = tc.e.value(f.Format)
			}
			want, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, '\n')
			if got := appendLine(nil, fields, &tc.e); string(got) != string(want) {
				t.Errorf("appendLine:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func BenchmarkAccessLogLine(b *testing.B) { // 15 fields
	e := logEntry{start: time.Now(), method: "GET", path: "/", authority: "web.bench.svc.cluster.local:80", protocol: "HTTP/1.1",
		code: 200, bytesSent: 1024, upstreamHost: "10.0.2.10:8080", downstreamPeer: "10.0.1.10:41234"}
	b.Run("appendLine", func(b *testing.B) {
		var buf []byte
		b.ReportAllocs()
		for range b.N {
			buf = appendLine(buf[:0], fields, &e)
		}
	})
	b.Run("encoding-json-map", func(b *testing.B) { // what write did before
		b.ReportAllocs()
		for range b.N {
			m := make(map[string]any, len(fields))
			for _, f := range fields {
				m[f.Name] = e.value(f.Format)
			}
			if _, err := json.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// countingWriter records each Write it gets.
type countingWriter struct {
	mu     sync.Mutex
	writes []string
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *countingWriter) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

// TestAccessLogBuffering: lines wait in the buffer and leave together
// after flushEvery, at once when the buffer is full, on close, and one by
// one when flushEvery is negative.
func TestAccessLogBuffering(t *testing.T) {
	al := &model.AccessLog{Fields: []model.LogField{{Name: "path", Format: "%REQ(:PATH)%"}}, Sampled: 100}
	entry := func(path string) *logEntry { return &logEntry{path: path, code: 200} }

	w := &countingWriter{}
	l := &accessLogger{w: w, flushEvery: 50 * time.Millisecond}
	l.write(al, entry("/a"), 0)
	l.write(al, entry("/b"), 0)
	if got := w.get(); len(got) != 0 {
		t.Fatalf("written before the flush interval: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(w.get()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := w.get(); len(got) != 1 || got[0] != "{\"path\":\"/a\"}\n{\"path\":\"/b\"}\n" {
		t.Fatalf("after the interval: writes %q, want both lines in one", got)
	}

	// A full buffer is written at once; close writes the rest.
	w2 := &countingWriter{}
	l2 := &accessLogger{w: w2, flushEvery: time.Hour}
	long := "/" + strings.Repeat("x", 1000)
	n := accessLogBufferSize/len(long) + 1
	for range n + 1 {
		l2.write(al, entry(long), 0)
	}
	if got := w2.get(); len(got) != 1 || len(got[0]) < accessLogBufferSize {
		t.Fatalf("full buffer: %d writes, want one of at least %d bytes", len(got), accessLogBufferSize)
	}
	l2.close()
	got := w2.get()
	if len(got) != 2 || strings.Count(got[0]+got[1], "\n") != n+1 {
		t.Fatalf("after close: %d writes with %d lines, want 2 with %d", len(got), strings.Count(strings.Join(got, ""), "\n"), n+1)
	}

	// Negative: every line is its own write; unlogged lines write nothing.
	w3 := &countingWriter{}
	l3 := &accessLogger{w: w3, flushEvery: -1}
	l3.write(al, entry("/c"), 0)
	l3.write(&model.AccessLog{Fields: al.Fields, Sampled: 0}, entry("/d"), 50)
	l3.write(al, entry("/e"), 0)
	if got := w3.get(); len(got) != 2 || got[1] != "{\"path\":\"/e\"}\n" {
		t.Fatalf("unbuffered: writes %q", got)
	}
}
