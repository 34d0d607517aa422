package model

import (
	"fmt"
	"net/http"
	"regexp"
	"testing"
)

// seq is a Randomness returning its numbers in turn (then repeating).
type seq struct {
	n []uint64
	i int
}

func (s *seq) Uint64() uint64 {
	v := s.n[s.i%len(s.n)]
	s.i++
	return v
}

const (
	trace32 = "4bf92f3577b34da6a3ce929d0e0e4736"
	span16  = "00f067aa0ba902b7"
	b3Trace = "80f198ee56343ba864fe8b2a57d3eff7"
	b3Span  = "e457b5a2e4d86bd1"
)

var (
	traceparentRE = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$`)
	uuidRE        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestTraceHeaders(t *testing.T) {
	on := TraceConfig{GenerateRequestID: true, Tracing: true, SamplePerMillion: PerMillion}
	for _, tc := range []struct {
		name string
		in   http.Header
		cfg  TraceConfig
		// want: the trace id the span continues ("" = a new one), the
		// parent span ("" = none), sampled, and exact headers expected.
		trace, parent string
		sampled       bool
		want          map[string]string
		absent        []string
	}{
		{name: "nothing: new trace, sampled by the rate", in: hdr(), cfg: on, sampled: true,
			absent: []string{HeaderTracestate, HeaderB3ParentSpan, HeaderB3}},
		{name: "new trace not sampled at 0%", in: hdr(), cfg: TraceConfig{Tracing: true}, sampled: false},
		{name: "traceparent continued with a new span", cfg: on,
			in:    hdr("traceparent", "00-"+trace32+"-"+span16+"-01", "tracestate", "congo=t61rcWkgMzE"),
			trace: trace32, parent: span16, sampled: true,
			want: map[string]string{HeaderTracestate: "congo=t61rcWkgMzE", HeaderB3TraceID: trace32, HeaderB3ParentSpan: span16, HeaderB3Sampled: "1"}},
		{name: "traceparent not sampled stays not sampled", cfg: on,
			in:    hdr("traceparent", "00-"+trace32+"-"+span16+"-00"),
			trace: trace32, parent: span16, sampled: false, want: map[string]string{HeaderB3Sampled: "0"}},
		{name: "future traceparent version with extra fields", cfg: on,
			in:    hdr("traceparent", "01-"+trace32+"-"+span16+"-01-what-the-future-holds"),
			trace: trace32, parent: span16, sampled: true},
		{name: "B3 multi continued, 64-bit trace id kept short in B3", cfg: on,
			in:    hdr("x-b3-traceid", "a3ce929d0e0e4736", "x-b3-spanid", b3Span, "x-b3-sampled", "1"),
			trace: "0000000000000000a3ce929d0e0e4736", parent: b3Span, sampled: true,
			want: map[string]string{HeaderB3TraceID: "a3ce929d0e0e4736", HeaderB3ParentSpan: b3Span}},
		{name: "B3 single continued and sent again", cfg: on,
			in:    hdr("b3", b3Trace+"-"+b3Span+"-0-"+span16),
			trace: b3Trace, parent: b3Span, sampled: false,
			want: map[string]string{HeaderB3TraceID: b3Trace, HeaderB3Sampled: "0"}},
		{name: "B3 debug flag kept", cfg: on,
			in:    hdr("x-b3-traceid", b3Trace, "x-b3-spanid", b3Span, "x-b3-flags", "1"),
			trace: b3Trace, parent: b3Span, sampled: true, want: map[string]string{HeaderB3Flags: "1"}, absent: []string{HeaderB3Sampled}},
		{name: "both, same trace: consistent, tracestate kept", cfg: on,
			in: hdr("traceparent", "00-"+trace32+"-"+span16+"-01", "tracestate", "a=b",
				"x-b3-traceid", trace32, "x-b3-spanid", span16, "x-b3-sampled", "1"),
			trace: trace32, parent: span16, sampled: true, want: map[string]string{HeaderTracestate: "a=b"}},
		{name: "both disagree: B3 wins, tracestate of the other trace dropped", cfg: on,
			in: hdr("traceparent", "00-"+trace32+"-"+span16+"-01", "tracestate", "a=b",
				"x-b3-traceid", b3Trace, "x-b3-spanid", b3Span, "x-b3-sampled", "0"),
			trace: b3Trace, parent: b3Span, sampled: false, absent: []string{HeaderTracestate}},
		{name: "malformed B3 falls back to traceparent", cfg: on,
			in:    hdr("traceparent", "00-"+trace32+"-"+span16+"-01", "x-b3-traceid", "xyz", "x-b3-spanid", b3Span),
			trace: trace32, parent: span16, sampled: true, want: map[string]string{HeaderB3TraceID: trace32}},
		{name: "malformed traceparent: upper case", cfg: on, sampled: true,
			in: hdr("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "tracestate", "a=b"), absent: []string{HeaderTracestate}},
		{name: "malformed traceparent: all-zero trace id", cfg: on, sampled: true,
			in: hdr("traceparent", "00-00000000000000000000000000000000-"+span16+"-01")},
		{name: "malformed traceparent: all-zero span id", cfg: on, sampled: true,
			in: hdr("traceparent", "00-"+trace32+"-0000000000000000-01")},
		{name: "malformed traceparent: version ff", cfg: on, sampled: true,
			in: hdr("traceparent", "ff-"+trace32+"-"+span16+"-01")},
		{name: "malformed traceparent: version 00 with extra field", cfg: on, sampled: true,
			in: hdr("traceparent", "00-"+trace32+"-"+span16+"-01-x")},
		{name: "malformed traceparent: short", cfg: on, sampled: true, in: hdr("traceparent", "00-abc-def-01")},
		{name: "malformed traceparent: twice", cfg: on, sampled: true,
			in: hdr("traceparent", "00-"+trace32+"-"+span16+"-01", "traceparent", "00-"+trace32+"-"+span16+"-01")},
		{name: "malformed B3 single: bad sampling", cfg: on, sampled: true, in: hdr("b3", b3Trace+"-"+b3Span+"-x")},
		{name: "malformed B3 single: 3-digit span", cfg: on, sampled: true, in: hdr("b3", b3Trace+"-abc")},
		{name: "malformed B3: bad parent span", cfg: on, sampled: true,
			in: hdr("x-b3-traceid", b3Trace, "x-b3-spanid", b3Span, "x-b3-parentspanid", "zz")},
		{name: "malformed tracestate dropped", cfg: on, trace: trace32, parent: span16, sampled: true,
			in: hdr("traceparent", "00-"+trace32+"-"+span16+"-01", "tracestate", "novalue"), absent: []string{HeaderTracestate}},
		{name: "request id kept", cfg: on, sampled: true, in: hdr("x-request-id", "abc-123"),
			want: map[string]string{HeaderRequestID: "abc-123"}},
		{name: "tracing off: only the request id", cfg: TraceConfig{GenerateRequestID: true},
			in:     hdr("traceparent", "garbage"),
			want:   map[string]string{HeaderTraceparent: "garbage"},
			absent: []string{HeaderB3TraceID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rnd := &seq{n: []uint64{0x1111111111111111, 0x2222222222222222, 0x3333333333333333, 0}}
			got := TraceHeaders(tc.in, tc.cfg, rnd)
			out := tc.in.Clone()
			got.Apply(out)
			if tc.cfg.GenerateRequestID && tc.want[HeaderRequestID] == "" && !uuidRE.MatchString(out.Get(HeaderRequestID)) {
				t.Errorf("x-request-id %q is not a UUID v4", out.Get(HeaderRequestID))
			}
			if tc.cfg.Tracing {
				tp := out.Get(HeaderTraceparent)
				if !traceparentRE.MatchString(tp) {
					t.Fatalf("traceparent %q is not valid", tp)
				}
				if tc.trace != "" && tp[3:35] != tc.trace {
					t.Errorf("traceparent %q does not continue trace %s", tp, tc.trace)
				}
				if tc.trace == "" && (tp[3:35] == trace32 || tp[3:35] == b3Trace) {
					t.Errorf("traceparent %q continues a malformed parent", tp)
				}
				if sp := tp[36:52]; sp == tc.parent || sp == span16 || sp == b3Span {
					t.Errorf("span id %s is not new", sp)
				}
				if (tp[53:] == "01") != tc.sampled {
					t.Errorf("traceparent %q sampled, want %v", tp, tc.sampled)
				}
				if out.Get(HeaderB3SpanID) != tp[36:52] || out.Get(HeaderB3ParentSpan) != tc.parent {
					t.Errorf("B3 span %s parent %s, want %s parent %q (consistent with traceparent)",
						out.Get(HeaderB3SpanID), out.Get(HeaderB3ParentSpan), tp[36:52], tc.parent)
				}
				if b3 := out.Get(HeaderB3TraceID); b3 != tp[3:35] && "0000000000000000"+b3 != tp[3:35] {
					t.Errorf("x-b3-traceid %s differs from traceparent %s", b3, tp)
				}
				if tc.in.Get(HeaderB3) != "" {
					want := out.Get(HeaderB3TraceID) + "-" + tp[36:52]
					if !regexp.MustCompile("^" + want + "-[01d]").MatchString(out.Get(HeaderB3)) {
						t.Errorf("b3 %q, want it to start with %s", out.Get(HeaderB3), want)
					}
				}
			}
			for k, v := range tc.want {
				if out.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, out.Get(k), v)
				}
			}
			for _, k := range tc.absent {
				if v := out.Values(k); len(v) > 0 {
					t.Errorf("%s = %q, want none", k, v)
				}
			}
		})
	}
}

func TestNewIDsAreNeverZero(t *testing.T) {
	rnd := &seq{n: []uint64{0, 0, 5}}
	if id := newID(rnd, 16); !isID(id, 32) {
		t.Fatalf("newID = %q", id)
	}
}

// TestNewUUIDLayout pins the hex layout of newUUID against fmt's.
func TestNewUUIDLayout(t *testing.T) {
	hi, lo := uint64(0x0123456789abcdef), uint64(0xfedcba9876543210)
	got := newUUID(&seq{n: []uint64{hi, lo}})
	hi = hi&^(0xf<<12) | 4<<12
	lo = lo&^(0x3<<62) | 0x2<<62
	want := fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", hi>>32, (hi>>16)&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
	if got != want || !uuidRE.MatchString(got) {
		t.Fatalf("newUUID = %s, want %s", got, want)
	}
}
