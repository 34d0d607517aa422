package model

import (
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"strings"
)

// TraceConfig is how a chain's connection manager handles request ids and
// trace context (XDS.md §16).
type TraceConfig struct {
	// GenerateRequestID: give a request without a usable x-request-id a
	// new one (UUID v4).
	GenerateRequestID bool
	// Tracing: continue or start the trace in traceparent/tracestate and
	// B3 headers, with a new span of the waypoint.
	Tracing bool
	// SamplePerMillion is the share of new traces (no sampling decision
	// from the caller) that are sampled.
	SamplePerMillion uint32
}

// Randomness is the source of ids and sampling decisions
// (math/rand/v2's *rand.Rand, or a fixed sequence in tests).
type Randomness interface{ Uint64() uint64 }

// Trace header names.
const (
	HeaderRequestID    = "X-Request-Id"
	HeaderTraceparent  = "Traceparent"
	HeaderTracestate   = "Tracestate"
	HeaderB3           = "B3"
	HeaderB3TraceID    = "X-B3-Traceid"
	HeaderB3SpanID     = "X-B3-Spanid"
	HeaderB3ParentSpan = "X-B3-Parentspanid"
	HeaderB3Sampled    = "X-B3-Sampled"
	HeaderB3Flags      = "X-B3-Flags"
)

// maxTracestate is the W3C limit a propagated tracestate must keep.
const maxTracestate = 512

// SpanContext is a trace position: the trace, a span in it, whether it is
// sampled.
type SpanContext struct {
	// TraceID is 32 lowercase hex digits (a 64-bit B3 trace id is
	// left-padded with zeros); Short keeps that it was 16 in B3.
	TraceID string
	Short   bool
	SpanID  string
	// SampledSet says whether the caller decided Sampled.
	Sampled, SampledSet bool
	Debug               bool
}

// Trace is the outcome of TraceHeaders for one request.
type Trace struct {
	// RequestID is the x-request-id to send ("" leaves the header alone).
	RequestID string
	// Parent is the caller's span (TraceID empty: a new trace); Span the
	// waypoint's.
	Parent, Span SpanContext
	// Tracestate to send with traceparent ("" removes it).
	Tracestate string
	// SingleB3 is true when the request carried a b3 header: it is sent
	// again, updated.
	SingleB3 bool
}

// TraceHeaders decides the request id and trace headers of a forwarded
// request from its incoming headers (XDS.md §16). It is pure: ids and
// sampling come from rnd.
//
//   - x-request-id: kept when usable (1 to 256 visible ASCII characters),
//     else a new UUID v4 when c.GenerateRequestID.
//   - The caller's span is taken from B3 (the single b3 header, else
//     x-b3-*), else from a valid W3C traceparent (Envoy's Zipkin tracer in
//     USE_B3_WITH_W3C_PROPAGATION mode). Malformed headers count as
//     absent.
//   - The waypoint's span has the caller's trace id (or a new one), a new
//     span id, and the caller's sampling decision (or a new one, by
//     c.SamplePerMillion).
//   - tracestate is kept only when it belongs to the trace continued
//     (traceparent valid and of the same trace id) and is well formed.
func TraceHeaders(h http.Header, c TraceConfig, rnd Randomness) Trace {
	var t Trace
	if id := h.Get(HeaderRequestID); usableRequestID(id) && len(h.Values(HeaderRequestID)) == 1 {
		t.RequestID = id
	} else if c.GenerateRequestID {
		t.RequestID = newUUID(rnd)
	}
	if !c.Tracing {
		return t
	}
	w3c, w3cOK := parseTraceparent(h.Values(HeaderTraceparent))
	b3, b3OK := parseB3(h)
	t.SingleB3 = len(h.Values(HeaderB3)) > 0
	switch {
	case b3OK:
		t.Parent = b3
	case w3cOK:
		t.Parent = w3c
	}
	if w3cOK && w3c.TraceID == t.Parent.TraceID {
		if ts := strings.Join(h.Values(HeaderTracestate), ","); validTracestate(ts) {
			t.Tracestate = ts
		}
	}
	t.Span = SpanContext{TraceID: t.Parent.TraceID, Short: t.Parent.Short, SpanID: newID(rnd, 8),
		Sampled: t.Parent.Sampled, SampledSet: true, Debug: t.Parent.Debug}
	if t.Span.TraceID == "" {
		t.Span.TraceID = newID(rnd, 16)
	}
	if !t.Parent.SampledSet {
		t.Span.Sampled = rnd.Uint64()%PerMillion < uint64(c.SamplePerMillion)
	}
	return t
}

// Apply writes t into the outgoing request headers h, replacing every
// trace header it had.
func (t Trace) Apply(h http.Header) {
	if t.RequestID != "" {
		h.Set(HeaderRequestID, t.RequestID)
	}
	if t.Span.SpanID == "" {
		return // tracing off
	}
	for _, k := range []string{HeaderTraceparent, HeaderTracestate, HeaderB3, HeaderB3TraceID, HeaderB3SpanID, HeaderB3ParentSpan, HeaderB3Sampled, HeaderB3Flags} {
		h.Del(k)
	}
	s := t.Span
	flags, sampled := "00", "0"
	if s.Sampled {
		flags, sampled = "01", "1"
	}
	h.Set(HeaderTraceparent, "00-"+s.TraceID+"-"+s.SpanID+"-"+flags)
	if t.Tracestate != "" {
		h.Set(HeaderTracestate, t.Tracestate)
	}
	b3Trace := s.TraceID
	if s.Short {
		b3Trace = s.TraceID[16:]
	}
	h.Set(HeaderB3TraceID, b3Trace)
	h.Set(HeaderB3SpanID, s.SpanID)
	if t.Parent.SpanID != "" {
		h.Set(HeaderB3ParentSpan, t.Parent.SpanID)
	}
	if s.Debug {
		h.Set(HeaderB3Flags, "1")
	} else {
		h.Set(HeaderB3Sampled, sampled)
	}
	if t.SingleB3 {
		single := b3Trace + "-" + s.SpanID + "-" + sampled
		if s.Debug {
			single = b3Trace + "-" + s.SpanID + "-d"
		}
		if t.Parent.SpanID != "" {
			single += "-" + t.Parent.SpanID
		}
		h.Set(HeaderB3, single)
	}
}

// parseTraceparent parses a W3C traceparent (exactly one header):
// version 00 is exactly version-traceid-parentid-flags; a later version
// may append fields after a '-'; version ff, upper case, all-zero ids are
// invalid.
func parseTraceparent(vs []string) (SpanContext, bool) {
	if len(vs) != 1 {
		return SpanContext{}, false
	}
	v := vs[0]
	if len(v) < 55 || (len(v) > 55 && (v[:2] == "00" || v[55] != '-')) {
		return SpanContext{}, false
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' || !isHex(v[:2]) || v[:2] == "ff" {
		return SpanContext{}, false
	}
	trace, span, flags := v[3:35], v[36:52], v[53:55]
	if !isID(trace, 32) || !isID(span, 16) || !isHex(flags) {
		return SpanContext{}, false
	}
	f, _ := hex.DecodeString(flags)
	return SpanContext{TraceID: trace, SpanID: span, Sampled: f[0]&1 == 1, SampledSet: true}, true
}

// parseB3 parses the single b3 header when present, else the x-b3-*
// headers. Only a complete context (trace id and span id) counts; a
// sampling-only b3 ("0", "1", "d") gives the decision without a parent
// (ok false; the decision is then not used, a new trace is sampled by
// the waypoint's rate).
func parseB3(h http.Header) (SpanContext, bool) {
	if vs := h.Values(HeaderB3); len(vs) > 0 {
		if len(vs) != 1 {
			return SpanContext{}, false
		}
		parts := strings.Split(vs[0], "-")
		if len(parts) < 2 || len(parts) > 4 {
			return SpanContext{}, false
		}
		sc, ok := b3Context(parts[0], parts[1])
		if !ok {
			return SpanContext{}, false
		}
		if len(parts) >= 3 {
			if !b3Sampling(parts[2], &sc, true) {
				return SpanContext{}, false
			}
		}
		if len(parts) == 4 && !isID(parts[3], 16) {
			return SpanContext{}, false
		}
		return sc, true
	}
	trace, span := h.Get(HeaderB3TraceID), h.Get(HeaderB3SpanID)
	if trace == "" && span == "" {
		return SpanContext{}, false
	}
	sc, ok := b3Context(trace, span)
	if !ok {
		return SpanContext{}, false
	}
	if p := h.Get(HeaderB3ParentSpan); p != "" && !isID(p, 16) {
		return SpanContext{}, false
	}
	if h.Get(HeaderB3Flags) == "1" {
		sc.Debug, sc.Sampled, sc.SampledSet = true, true, true
	} else if s := h.Get(HeaderB3Sampled); s != "" && !b3Sampling(s, &sc, false) {
		return SpanContext{}, false
	}
	return sc, true
}

func b3Context(trace, span string) (SpanContext, bool) {
	sc := SpanContext{TraceID: trace, SpanID: span}
	switch {
	case isID(trace, 32):
	case isID(trace, 16):
		sc.TraceID, sc.Short = "0000000000000000"+trace, true
	default:
		return SpanContext{}, false
	}
	if !isID(span, 16) {
		return SpanContext{}, false
	}
	return sc, true
}

// b3Sampling reads a B3 sampling state: "1"/"0" (x-b3-sampled also
// "true"/"false"), "d" (debug, single header only).
func b3Sampling(s string, sc *SpanContext, single bool) bool {
	switch {
	case s == "1" || (!single && s == "true"):
		sc.Sampled = true
	case s == "0" || (!single && s == "false"):
		sc.Sampled = false
	case single && s == "d":
		sc.Sampled, sc.Debug = true, true
	default:
		return false
	}
	sc.SampledSet = true
	return true
}

// isID reports whether s is n lowercase hex digits, not all zero.
func isID(s string, n int) bool {
	return len(s) == n && isHex(s) && strings.Trim(s, "0") != ""
}

func isHex(s string) bool {
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

// validTracestate accepts a tracestate of at most 512 characters of
// comma-separated key=value members with printable ASCII.
func validTracestate(s string) bool {
	if s == "" || len(s) > maxTracestate {
		return false
	}
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		k, v, ok := strings.Cut(m, "=")
		if !ok || k == "" || v == "" {
			return false
		}
		for i := range len(m) {
			if m[i] < 0x20 || m[i] > 0x7e {
				return false
			}
		}
	}
	return true
}

func usableRequestID(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := range len(s) {
		if s[i] <= 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// newID returns n random bytes as lowercase hex, not all zero.
func newID(rnd Randomness, n int) string {
	for {
		b := make([]byte, 0, n)
		for len(b) < n {
			v := rnd.Uint64()
			for i := 0; i < 8 && len(b) < n; i++ {
				b = append(b, byte(v>>(8*i)))
			}
		}
		if s := hex.EncodeToString(b); strings.Trim(s, "0") != "" {
			return s
		}
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID(rnd Randomness) string {
	hi, lo := rnd.Uint64(), rnd.Uint64()
	hi = hi&^(0xf<<12) | 4<<12   // version 4
	lo = lo&^(0x3<<62) | 0x2<<62 // variant 10
	// 8-4-4-4-12 hex digits, without fmt's cost on every request.
	var b [36]byte
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], hi)
	binary.BigEndian.PutUint64(raw[8:], lo)
	hex.Encode(b[0:8], raw[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], raw[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], raw[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], raw[8:10])
	b[23] = '-'
	hex.Encode(b[24:], raw[10:])
	return string(b[:])
}
