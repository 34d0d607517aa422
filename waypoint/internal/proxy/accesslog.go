package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ambit.dev/waypoint/internal/model"
)

// This file writes the JSON access log of XDS.md §13 and holds the
// L7 authorization step of a request (§12).

// rbacDeniedBody is Envoy's local reply body for an RBAC denial.
const rbacDeniedBody = "RBAC: access denied"

// logEntry is what an access log line can say about one request.
type logEntry struct {
	start                             time.Time
	method, path, authority, protocol string
	code                              int
	flags, details                    string
	duration                          time.Duration
	bytesReceived, bytesSent          int64
	upstreamHost, downstreamPeer      string
	principal, requestID, traceparent string
}

// value is the JSON value of one format string: a command operator of
// XDS.md §13 (numbers for codes, durations and byte counts; null when the
// value is unknown, as Envoy's json_format writes it) or a literal.
func (e *logEntry) value(format string) any {
	str := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	switch format {
	case "%START_TIME%":
		return e.start.UTC().Format("2006-01-02T15:04:05.000Z")
	case "%REQ(:METHOD)%":
		return str(e.method)
	case "%REQ(:PATH)%":
		return str(e.path)
	case "%REQ(:AUTHORITY)%":
		return str(e.authority)
	case "%PROTOCOL%":
		return str(e.protocol)
	case "%RESPONSE_CODE%":
		return e.code
	case "%RESPONSE_FLAGS%":
		if e.flags == "" {
			return "-"
		}
		return e.flags
	case "%RESPONSE_CODE_DETAILS%":
		return str(e.details)
	case "%DURATION%":
		return e.duration.Milliseconds()
	case "%BYTES_RECEIVED%":
		return e.bytesReceived
	case "%BYTES_SENT%":
		return e.bytesSent
	case "%UPSTREAM_HOST%":
		return str(e.upstreamHost)
	case "%DOWNSTREAM_REMOTE_ADDRESS%":
		return str(e.downstreamPeer)
	case "%FILTER_STATE(io.istio.peer_principal:PLAIN)%":
		return str(e.principal)
	case "%REQ(X-REQUEST-ID)%":
		return str(e.requestID)
	case "%REQ(TRACEPARENT)%":
		return str(e.traceparent)
	}
	return format // a literal (xdsclient accepted no other operator)
}

// accessLogger serialises lines to one writer. Like Envoy's file access
// logger it buffers them (up to accessLogBufferSize) and writes them at
// most flushEvery after the first line of a batch, so a request costs no
// write(2) of its own; flushEvery < 0 writes every line at once.
type accessLogger struct {
	w          io.Writer
	flushEvery time.Duration

	mu      sync.Mutex
	buf     []byte
	pending bool // buf has lines and the timer is armed
	timer   *time.Timer
}

// accessLogBufferSize is how many bytes of lines wait at most before a
// write (Envoy's file access log buffer: 64 KiB).
const accessLogBufferSize = 64 << 10

// write logs e as al describes, when al's filter keeps it (r is uniform
// in [0, 100)). A write error is dropped: the log must not fail requests.
func (l *accessLogger) write(al *model.AccessLog, e *logEntry, r uint32) {
	if l == nil || l.w == nil || !al.Logs(e.code, r) {
		return
	}
	bp := lineBufs.Get().(*[]byte)
	b := appendLine((*bp)[:0], al.Fields, e)
	l.mu.Lock()
	switch {
	case l.flushEvery < 0:
		_, _ = l.w.Write(b)
	default:
		l.buf = append(l.buf, b...)
		switch {
		case len(l.buf) >= accessLogBufferSize:
			l.flushLocked()
		case !l.pending:
			l.pending = true
			if l.timer == nil {
				l.timer = time.AfterFunc(l.flushEvery, l.flush)
			} else {
				l.timer.Reset(l.flushEvery)
			}
		}
	}
	l.mu.Unlock()
	*bp = b
	lineBufs.Put(bp)
}

// flush writes the buffered lines.
func (l *accessLogger) flush() {
	l.mu.Lock()
	l.flushLocked()
	l.mu.Unlock()
}

// close writes the buffered lines and stops the timer (the proxy has
// stopped serving).
func (l *accessLogger) close() {
	l.mu.Lock()
	l.flushLocked()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
}

func (l *accessLogger) flushLocked() {
	if len(l.buf) > 0 {
		_, _ = l.w.Write(l.buf)
	}
	l.buf = l.buf[:0]
	if cap(l.buf) > 2*accessLogBufferSize {
		l.buf = nil
	}
	l.pending = false
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// appendLine appends e's JSON line (and a newline) to b: the object
// encoding/json makes of a map of the fields (they are in name order, as
// it sorts map keys), without the map and the reflection per request.
func appendLine(b []byte, fields []model.LogField, e *logEntry) []byte {
	b = append(b, '{')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, f.Name)
		b = append(b, ':')
		switch v := e.value(f.Format).(type) {
		case nil:
			b = append(b, "null"...)
		case string:
			b = appendJSONString(b, v)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		default: // not made by value; encoding/json keeps it correct
			j, err := json.Marshal(v)
			if err != nil {
				j = []byte("null")
			}
			b = append(b, j...)
		}
	}
	return append(b, '}', '\n')
}

// appendJSONString appends s as encoding/json writes it: plain printable
// ASCII directly, anything it would escape (quotes, backslash, control
// characters, <>& and non-ASCII) through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(s) // a string always marshals
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// attributes is what the RBAC filters see of a request on a stream.
func attributes(st *httpStream, req model.Request) model.Attributes {
	a := model.Attributes{
		HTTP: true, Method: req.Method, Host: req.Host, Path: req.Path, Header: req.Header,
		Port: st.dst.Port(), SourceIP: st.src.addr.Addr(),
	}
	if st.src.id.Validate() == nil {
		a.Principal = st.src.id.String()
	}
	return a
}

// protocolOf is Envoy's %PROTOCOL%.
func protocolOf(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "HTTP/2"
	}
	return r.Proto
}

// countingBody counts the request body bytes read.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func firstHeader(h http.Header, name string) string {
	return strings.TrimSpace(h.Get(name))
}
