package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// roundTrip writes data on c in odd-sized pieces, half-closes, and returns
// the sha256 of everything read back.
func roundTrip(t *testing.T, c net.Conn, data []byte) [32]byte {
	t.Helper()
	writeErr := make(chan error, 1)
	go func() {
		for p := data; len(p) > 0; {
			n := min(len(p), 77_777)
			if _, err := c.Write(p[:n]); err != nil {
				writeErr <- err
				return
			}
			p = p[n:]
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			writeErr <- cw.CloseWrite()
			return
		}
		writeErr <- nil
	}()
	h := sha256.New()
	if n, err := io.Copy(h, c); err != nil {
		t.Fatalf("reading after %d bytes: %v", n, err)
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestSmallWindows runs echo streams through the smallest windows and
// frames HTTP/2 allows, so every write waits for WINDOW_UPDATEs and
// every frame is split, in both directions, several streams at once.
func TestSmallWindows(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	ts := startServer(t, m, "127.0.0.1", func(c *ServerConfig) {
		c.StreamWindow, c.ConnWindow, c.MaxReadFrameSize = 65535, 65535, 16384
	})
	d := m.newDialer(t, func(c *DialerConfig) {
		c.StreamWindow, c.ConnWindow, c.MaxReadFrameSize = 65535, 65535, 16384
		c.SpreadConns = 1 // the streams share the connection's window
	})
	data := make([]byte, 3<<20+5)
	rand.Read(data)
	want := sha256.Sum256(data)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if got := roundTrip(t, c, data); got != want {
				t.Error("echo differs from what was sent")
			}
		})
	}
	wg.Wait()
	if n := len(d.Conns()); n > 1 {
		t.Fatalf("%d pooled connections, want the streams to share one", n)
	}
}

// slowReader accepts one connection and reads it only after a pause, so a
// writer's socket buffer fills and writes would block.
func slowConnPair(t *testing.T, pause time.Duration) (w *net.TCPConn, got chan []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got = make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		time.Sleep(pause)
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), got
}

// TestDeliverTo checks a client stream whose data the connection's reader
// writes to a TCP connection: with a reader that lags (the drain path) and
// the end of stream passed on as a half-close.
func TestDeliverTo(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	ts := startServer(t, m, "127.0.0.1", nil)
	d := m.newDialer(t, nil)
	c, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dst, got := slowConnPair(t, 300*time.Millisecond)
	var counted int64
	var mu sync.Mutex
	done := make(chan error, 1)
	if !c.DeliverTo(dst, func(n int64) { mu.Lock(); counted += n; mu.Unlock() }, func(err error) { done <- err }) {
		t.Fatal("DeliverTo refused a TCP connection")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read works on a delivered stream")
	}
	data := make([]byte, 8<<20) // beyond the loopback socket buffers
	rand.Read(data)
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("delivery ended with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("delivery did not end")
	}
	b := <-got
	if !bytes.Equal(b, data) {
		t.Fatalf("destination got %d bytes, not the %d sent", len(b), len(data))
	}
	mu.Lock()
	defer mu.Unlock()
	if counted != int64(len(data)) || c.BytesReceived() != int64(len(data)) {
		t.Fatalf("counted %d, BytesReceived %d; want %d", counted, c.BytesReceived(), len(data))
	}
}

// TestSlowUpstream makes the server's direct delivery to the upstream
// block, so the drain goroutine takes over and hands back.
func TestSlowUpstream(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", func(c *net.TCPConn) {
		time.Sleep(300 * time.Millisecond)
		echo(c)
	})
	ts := startServer(t, m, "127.0.0.1", nil)
	d := m.newDialer(t, nil)
	c, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 12<<20)
	rand.Read(data)
	if got := roundTrip(t, c, data); got != sha256.Sum256(data) {
		t.Fatal("echo differs from what was sent")
	}
}

// TestDialerWithStandardServer checks the Dialer against x/net's HTTP/2
// server: the wire format is standard HTTP/2, not only what our server
// accepts.
func TestDialerWithStandardServer(t *testing.T) {
	m := newMesh(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.serverTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h2 := &http2.Server{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Header.Get("Traceparent") != "00-trace" {
			http.Error(w, "want CONNECT with traceparent", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() == nil { // as net/http does first
					h2.ServeConn(c, &http2.ServeConnOpts{Handler: handler})
				}
			})
		}
	})
	d := m.newDialer(t, nil)
	tg := Target{SourceID: m.clientID, DestID: m.serverID, HBONEAddr: addrPortOf(ln.Addr()),
		Authority: netip.MustParseAddrPort("10.0.0.1:80"), Traceparent: "00-trace"}
	c, err := d.Dial(context.Background(), tg)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 6<<20)
	rand.Read(data)
	// x/net's server cannot end the response while the request body is
	// open, so read back what was sent, then close.
	go func() {
		c.Write(data)
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("echo differs from what was sent")
	}
	tg.Traceparent = ""
	_, err = d.Dial(context.Background(), tg)
	if !isStatus(err, 400) || !strings.Contains(err.Error(), "want CONNECT with traceparent") {
		t.Fatalf("Dial without traceparent = %v, want the server's 400 and reason", err)
	}
	d.Close()
	ln.Close()
}

// rawServerConn opens a TLS connection to ts, sends the client preface and
// SETTINGS, and returns a framer over it.
func rawServerConn(t *testing.T, m *mesh, ts *testServer) (*http2.Framer, *tls.Conn) {
	t.Helper()
	c, err := m.cert(m.clientID)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", ts.addr.String(), ClientTLS(c.TLS, m.ca.Roots(), m.serverID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	io.WriteString(tc, http2.ClientPreface)
	fr := http2.NewFramer(tc, tc)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	return fr, tc
}

func connectBlock(t *testing.T, authority string) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	enc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	return b.Bytes()
}

// awaitFrame reads frames until match returns true, failing after the
// connection ends or 10 s.
func awaitFrame(t *testing.T, tc *tls.Conn, fr *http2.Framer, what string, match func(http2.Frame) bool) {
	t.Helper()
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return
		}
	}
}

// TestProtocolErrors sends frames a correct client never sends and checks
// the server's answer: GOAWAY for connection errors, RST_STREAM for
// stream errors (the connection then keeps working).
func TestProtocolErrors(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	// Port 9 never connects: data for it stays buffered, so no credit is
	// returned and the window is exact.
	stuck := netip.AddrPortFrom(up.Addr(), 9).String()
	ts := startServer(t, m, "127.0.0.1", func(c *ServerConfig) {
		c.StreamWindow = 65535
		c.Dial = func(ctx context.Context, r Request) (net.Conn, error) {
			if r.Dst.Port() == 9 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return dialUpstream(ctx, r)
		}
	})
	goAway := func(code http2.ErrCode) func(http2.Frame) bool {
		return func(f http2.Frame) bool {
			g, ok := f.(*http2.GoAwayFrame)
			return ok && g.ErrCode == code
		}
	}
	tests := []struct {
		name  string
		send  func(fr *http2.Framer)
		what  string
		match func(http2.Frame) bool
	}{
		{"first frame not SETTINGS", func(fr *http2.Framer) { fr.WritePing(false, [8]byte{}) },
			"GOAWAY PROTOCOL_ERROR", goAway(http2.ErrCodeProtocol)},
		{"DATA on a stream never opened", func(fr *http2.Framer) { fr.WriteSettings(); fr.WriteData(5, false, []byte("x")) },
			"GOAWAY PROTOCOL_ERROR", goAway(http2.ErrCodeProtocol)},
		{"even stream ID", func(fr *http2.Framer) {
			fr.WriteSettings()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: connectBlock(t, up.String()), EndHeaders: true})
		}, "GOAWAY PROTOCOL_ERROR", goAway(http2.ErrCodeProtocol)},
		{"more DATA than the stream window", func(fr *http2.Framer) {
			fr.WriteSettings()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connectBlock(t, stuck), EndHeaders: true})
			chunk := make([]byte, 16384)
			for range 5 { // 80 KiB > 65535
				fr.WriteData(1, false, chunk)
			}
		}, "RST_STREAM FLOW_CONTROL_ERROR on stream 1", func(f http2.Frame) bool {
			r, ok := f.(*http2.RSTStreamFrame)
			return ok && r.StreamID == 1 && r.ErrCode == http2.ErrCodeFlowControl
		}},
		{"zero WINDOW_UPDATE on the connection", func(fr *http2.Framer) {
			fr.WriteSettings()
			fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0})
		}, "GOAWAY PROTOCOL_ERROR", goAway(http2.ErrCodeProtocol)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr, tc := rawServerConn(t, m, ts)
			tt.send(fr)
			awaitFrame(t, tc, fr, tt.what, tt.match)
		})
	}
	// The server still serves.
	d := m.newDialer(t, nil)
	c, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestPingAndStreamAfterReset checks that the server answers PING and that
// a stream reset by the client leaves the connection usable.
func TestPingAndStreamAfterReset(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	ts := startServer(t, m, "127.0.0.1", nil)
	fr, tc := rawServerConn(t, m, ts)
	fr.WriteSettings()
	fr.WritePing(false, [8]byte{1, 2, 3})
	awaitFrame(t, tc, fr, "PING ack", func(f http2.Frame) bool {
		p, ok := f.(*http2.PingFrame)
		return ok && p.IsAck() && p.Data == [8]byte{1, 2, 3}
	})
	for _, id := range []uint32{1, 3} {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: connectBlock(t, up.String()), EndHeaders: true})
		awaitFrame(t, tc, fr, "200", func(f http2.Frame) bool {
			h, ok := f.(*http2.MetaHeadersFrame)
			return ok && h.StreamID == id && h.PseudoValue("status") == "200"
		})
		if id == 1 {
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
		}
	}
	fr.WriteData(3, true, []byte("after reset"))
	var got []byte
	awaitFrame(t, tc, fr, "echo with END_STREAM", func(f http2.Frame) bool {
		if df, ok := f.(*http2.DataFrame); ok && df.StreamID == 3 {
			got = append(got, df.Data()...)
			return df.StreamEnded()
		}
		return false
	})
	if string(got) != "after reset" {
		t.Fatalf("stream 3 echoed %q", got)
	}
}

// TestServerHalfClose checks that the server ends its side when the
// upstream does, while the client may still send (x/net's server could
// not).
func TestServerHalfClose(t *testing.T) {
	m := newMesh(t)
	received := make(chan string, 1)
	up := startUpstream(t, "127.0.0.1", func(c *net.TCPConn) {
		c.Write([]byte("hello"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		received <- string(b)
	})
	ts := startServer(t, m, "127.0.0.1", nil)
	d := m.newDialer(t, nil)
	c, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want hello then EOF", b, err)
	}
	if _, err := c.Write([]byte("still sending")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	select {
	case got := <-received:
		if got != "still sending" {
			t.Fatalf("upstream received %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream never saw the client's end of stream")
	}
}

func TestNewServerRejectsBadFlowSettings(t *testing.T) {
	m := newMesh(t)
	for _, mod := range []func(*ServerConfig){
		func(c *ServerConfig) { c.StreamWindow = 1000 },
		func(c *ServerConfig) { c.MaxReadFrameSize = 1 << 24 },
	} {
		cfg := ServerConfig{TLS: m.serverTLS(t), Dial: dialUpstream, Authorize: func(context.Context, Request) error { return nil }}
		mod(&cfg)
		if _, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), "must be") {
			t.Fatalf("NewServer = %v, want an error", err)
		}
	}
}

// TestHandle: a stream Handle takes is served in-process on the stream
// itself: the client's data, half-close and deadlines reach the handler,
// Close ends the response cleanly, a nil serve falls through to Dial, and a
// Handle error is answered like Dial's.
func TestHandle(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	inProcess := netip.MustParseAddrPort("127.0.0.1:8080")
	refused := netip.MustParseAddrPort("127.0.0.1:8081")
	early := netip.MustParseAddrPort("127.0.0.1:8082")
	type served struct {
		local, remote string
		got           string
		deadlineErr   error
	}
	results := make(chan served, 1)
	ts := startServer(t, m, "127.0.0.1", func(cfg *ServerConfig) {
		cfg.Handle = func(_ context.Context, r Request) (func(*Conn), error) {
			switch r.Dst {
			case refused:
				return nil, &StatusError{Code: http.StatusBadRequest, Reason: "no such listener"}
			case early:
				// Answers and closes while the client still sends.
				return func(c *Conn) {
					c.Write([]byte("early"))
					c.Close()
				}, nil
			case inProcess:
				return func(c *Conn) {
					defer c.Close()
					var s served
					s.local, s.remote = c.LocalAddr().String(), c.RemoteAddr().String()
					c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
					if _, err := c.Read(make([]byte, 1)); err != nil {
						s.deadlineErr = err
					}
					c.SetReadDeadline(time.Time{})
					c.Write([]byte("ready"))
					b, err := io.ReadAll(c)
					if err != nil {
						t.Errorf("handler read: %v", err)
					}
					s.got = string(b)
					c.Write([]byte("bye"))
					results <- s
				}, nil
			}
			return nil, nil
		}
	})
	d := m.newDialer(t, nil)
	ctx := context.Background()

	c, err := d.Dial(ctx, m.target(ts, inProcess))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ready" {
		t.Fatalf("read %q, %v; want ready", buf, err)
	}
	c.Write([]byte("request"))
	c.CloseWrite()
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after the handler's Close: read %q, %v; want bye, then a clean EOF", rest, err)
	}
	s := <-results
	if s.got != "request" || !errors.Is(s.deadlineErr, os.ErrDeadlineExceeded) {
		t.Fatalf("handler got %q, deadline error %v", s.got, s.deadlineErr)
	}
	if s.local != inProcess.String() || !strings.HasPrefix(s.remote, "127.0.0.1:") {
		t.Fatalf("handler's conn: local %s remote %s; want the :authority and the client's address", s.local, s.remote)
	}

	// A nil serve: Dial, to the echo upstream.
	e, err := d.Dial(ctx, m.target(ts, up))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if sum := roundTrip(t, e, []byte("through Dial")); sum != sha256.Sum256([]byte("through Dial")) {
		t.Fatal("echo through Dial differs")
	}

	// Closed while the client still sends: the response still ends
	// cleanly (END_STREAM, then RST_STREAM NO_ERROR), like a TCP close.
	ec, err := d.Dial(ctx, m.target(ts, early))
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	ec.Write([]byte("unread"))
	if b, err := io.ReadAll(ec); err != nil || string(b) != "early" {
		t.Fatalf("early close: read %q, %v; want early, then a clean EOF", b, err)
	}

	if _, err := d.Dial(ctx, m.target(ts, refused)); !isStatus(err, http.StatusBadRequest) {
		t.Fatalf("Handle error: Dial = %v, want 400", err)
	}
}

// TestGoAwayEndsWithoutReset: a connection whose last stream ends after
// GOAWAY closes with close_notify and a TCP FIN, not a reset, although the
// client is still sending PINGs. A reset would throw away whatever the
// server's kernel had not sent yet of the last answer.
func TestGoAwayEndsWithoutReset(t *testing.T) {
	m := newMesh(t)
	answer := bytes.Repeat([]byte("last answer "), 5000) // within the default stream window
	for round := range 10 {
		release := make(chan struct{})
		up := startUpstream(t, "127.0.0.1", func(c *net.TCPConn) {
			io.Copy(io.Discard, c)
			<-release
			c.Write(answer)
		})
		ts := startServer(t, m, "127.0.0.1", nil)
		fr, tc := rawServerConn(t, m, ts)
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connectBlock(t, up.String()), EndHeaders: true})
		awaitFrame(t, tc, fr, "200", func(f http2.Frame) bool {
			h, ok := f.(*http2.MetaHeadersFrame)
			return ok && h.StreamID == 1 && h.PseudoValue("status") == "200"
		})
		fr.WriteData(1, true, []byte("request"))
		shut := make(chan error, 1)
		go func() { shut <- ts.srv.Shutdown(context.Background()) }()
		awaitFrame(t, tc, fr, "GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })

		stop := make(chan struct{})
		var pinger sync.WaitGroup
		pinger.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if fr.WritePing(false, [8]byte{byte(round)}) != nil {
					return
				}
			}
		})
		close(release)
		var got []byte
		tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var end error
		for end == nil {
			var f http2.Frame
			f, end = fr.ReadFrame()
			if df, ok := f.(*http2.DataFrame); ok && end == nil && df.StreamID == 1 {
				got = append(got, df.Data()...)
			}
		}
		close(stop)
		pinger.Wait()
		tc.Close()
		if !bytes.Equal(got, answer) {
			t.Errorf("round %d: got %d bytes of the %d-byte answer", round, len(got), len(answer))
		}
		if !errors.Is(end, io.EOF) {
			t.Errorf("round %d: the connection ended with %v, want EOF after close_notify", round, end)
		}
		if err := <-shut; err != nil {
			t.Fatalf("round %d: Shutdown: %v", round, err)
		}
	}
}
