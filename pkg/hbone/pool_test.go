package hbone

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// countingDial wraps the default TCP dial and counts connections.
func countingDial(n *atomic.Int32) func(context.Context, Target) (net.Conn, error) {
	return func(ctx context.Context, t Target) (net.Conn, error) {
		n.Add(1)
		return defaultDialTCP(ctx, t)
	}
}

func TestPoolStreamCap(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			ts := startServer(t, m, lo.ip, nil)
			var dials atomic.Int32
			// One connection until it is full (spreading is TestPoolSpread's).
			d := m.newDialer(t, func(c *DialerConfig) { c.DialTCP = countingDial(&dials); c.SpreadConns = 1 })

			const n = 150
			conns := make([]*Conn, n)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					c, err := d.Dial(context.Background(), m.target(ts, up))
					if err != nil {
						errs <- err
						return
					}
					conns[i] = c
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			info := d.Conns()
			streams := make([]int, 0, len(info))
			for _, ci := range info {
				streams = append(streams, ci.Streams)
			}
			slices.Sort(streams)
			if !slices.Equal(streams, []int{50, 100}) || dials.Load() != 2 {
				t.Fatalf("150 concurrent streams: %d dials, streams per connection %v; want 2 dials, [50 100]", dials.Load(), streams)
			}
			// Every stream works independently.
			for i, c := range conns {
				msg := []byte{byte(i), byte(i >> 8)}
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				c.CloseWrite()
			}
			for i, c := range conns {
				b, err := io.ReadAll(c)
				if err != nil || len(b) != 2 || int(binary.LittleEndian.Uint16(b)) != i {
					t.Fatalf("stream %d echoed %v, %v", i, b, err)
				}
				c.Close()
			}
			for _, ci := range d.Conns() {
				if ci.Streams != 0 {
					t.Fatalf("streams not released: %+v", ci)
				}
			}
			// Idle connections are reused, not redialed.
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if dials.Load() != 2 {
				t.Fatalf("a new stream dialed again (%d dials) although idle connections exist", dials.Load())
			}

			// Another source identity never shares a connection.
			tg := m.target(ts, up)
			tg.SourceID = mustID(t, "spiffe://cluster.local/ns/shop/sa/checkout")
			c, err = d.Dial(context.Background(), tg)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if dials.Load() != 3 {
				t.Fatalf("dials = %d, want a separate connection for another source identity", dials.Load())
			}
		})
	}
}

// fakeTimer is an idle timer the test fires by hand.
type fakeTimer struct {
	f       func()
	stopped atomic.Bool
}

func (ft *fakeTimer) Stop() bool { return !ft.stopped.Swap(true) }

func TestPoolIdleExpiry(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	ts := startServer(t, m, "127.0.0.1", nil)
	var (
		mu     sync.Mutex
		timers []*fakeTimer
	)
	var dials atomic.Int32
	d := m.newDialer(t, func(c *DialerConfig) {
		c.DialTCP = countingDial(&dials)
		c.SpreadConns = 1
		c.IdleTimeout = time.Hour // never fires by itself
		c.afterFunc = func(d time.Duration, f func()) stopper {
			mu.Lock()
			defer mu.Unlock()
			ft := &fakeTimer{f: f}
			timers = append(timers, ft)
			return ft
		}
	})
	armed := func() []*fakeTimer {
		mu.Lock()
		defer mu.Unlock()
		var out []*fakeTimer
		for _, ft := range timers {
			if !ft.stopped.Load() {
				out = append(out, ft)
			}
		}
		return out
	}
	dial := func() *Conn {
		c, err := d.Dial(context.Background(), m.target(ts, up))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	s1, s2 := dial(), dial()
	s1.Close()
	if n := len(armed()); n != 0 {
		t.Fatalf("%d idle timers armed while a stream is open", n)
	}
	s2.Close()
	first := armed()
	if len(first) != 1 {
		t.Fatalf("%d idle timers armed after the last stream closed, want 1", len(first))
	}
	s3 := dial()
	if len(armed()) != 0 {
		t.Fatal("a new stream did not stop the idle timer")
	}
	first[0].f() // a timer that fired just as the stream arrived
	if len(d.Conns()) != 1 || dials.Load() != 1 {
		t.Fatalf("stale idle timer closed a busy connection: %+v", d.Conns())
	}
	s3.Close()
	second := armed()
	if len(second) != 1 {
		t.Fatalf("%d idle timers armed, want 1", len(second))
	}
	second[0].f()
	if len(d.Conns()) != 0 {
		t.Fatalf("idle connection still pooled after expiry: %+v", d.Conns())
	}
	dial().Close()
	if dials.Load() != 2 {
		t.Fatalf("dials = %d, want a fresh connection after idle expiry", dials.Load())
	}
}

func TestPoolIdleExpiryRealTimer(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			m := newMesh(t)
			up := startUpstream(t, lo.ip, echo)
			ts := startServer(t, m, lo.ip, nil)
			d := m.newDialer(t, func(c *DialerConfig) { c.IdleTimeout = 20 * time.Millisecond })
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Conns()) != 1 {
				t.Fatal("no pooled connection while a stream is open")
			}
			c.Close()
			for deadline := time.Now().Add(10 * time.Second); len(d.Conns()) != 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("idle connection never expired: %+v", d.Conns())
				}
			}
		})
	}
}

// TestFlowControlWindows reads the SETTINGS and WINDOW_UPDATE frames each
// side sends and checks they carry the configured windows.
func TestFlowControlWindows(t *testing.T) {
	const stream, conn = 1<<20 + 123, 8<<20 + 456
	m := newMesh(t)

	t.Run("server", func(t *testing.T) {
		ts := startServer(t, m, "127.0.0.1", func(c *ServerConfig) { c.StreamWindow, c.ConnWindow = stream, conn })
		c, err := m.cert(m.clientID)
		if err != nil {
			t.Fatal(err)
		}
		tc, err := tls.Dial("tcp", ts.addr.String(), ClientTLS(c.TLS, m.ca.Roots(), m.serverID))
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		io.WriteString(tc, http2.ClientPreface)
		fr := http2.NewFramer(tc, tc)
		fr.WriteSettings()
		gotStream, gotConn := readWindows(t, fr)
		if gotStream != stream || gotConn != conn-65535 {
			t.Fatalf("server stream window %d, connection increment %d; want %d, %d", gotStream, gotConn, stream, conn-65535)
		}
	})
	t.Run("client", func(t *testing.T) {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", m.serverTLS(t))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		type result struct{ stream, conn uint32 }
		res := make(chan result, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			pre := make([]byte, len(http2.ClientPreface))
			if _, err := io.ReadFull(c, pre); err != nil {
				return
			}
			s, cw := readWindows(t, http2.NewFramer(c, c))
			res <- result{s, cw}
		}()
		d := m.newDialer(t, func(c *DialerConfig) {
			c.StreamWindow, c.ConnWindow = stream, conn
			c.ConnectTimeout = 5 * time.Second
		})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			r := <-res
			if r.stream != stream || r.conn != conn-65535 {
				t.Errorf("client stream window %d, connection increment %d; want %d, %d", r.stream, r.conn, stream, conn-65535)
			}
			cancel()
		}()
		d.Dial(ctx, Target{SourceID: m.clientID, DestID: m.serverID, HBONEAddr: addrPortOf(ln.Addr()), Authority: addrPortOf(ln.Addr())})
		<-ctx.Done()
	})
}

// readWindows reads frames until it has seen the peer's SETTINGS and its
// connection WINDOW_UPDATE.
func readWindows(t *testing.T, fr *http2.Framer) (streamWindow, connIncrement uint32) {
	var sawSettings, sawUpdate bool
	streamWindow = 65535
	for !sawSettings || !sawUpdate {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Errorf("reading frames: %v", err)
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			sawSettings = true
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				streamWindow = v
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				sawUpdate = true
				connIncrement = f.Increment
			}
		}
	}
	return
}

// TestPoolSpread: concurrent streams of one key spread over SpreadConns
// connections, dialled in the background (no stream waits for one), then
// go to the least-loaded one; SpreadConns 1 keeps them on one.
func TestPoolSpread(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	ts := startServer(t, m, "127.0.0.1", nil)
	var dials atomic.Int32
	d := m.newDialer(t, func(c *DialerConfig) { c.DialTCP = countingDial(&dials); c.SpreadConns = 3 })
	var conns []*Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func() {
		t.Helper()
		c, err := d.Dial(context.Background(), m.target(ts, up))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Stream 1 dials; stream 2 shares the connection and starts a spare.
	dial()
	dial()
	waitConns := func(n int) []int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			info := d.Conns()
			if len(info) == n || time.Now().After(deadline) {
				var streams []int
				for _, ci := range info {
					streams = append(streams, ci.Streams)
				}
				slices.Sort(streams)
				return streams
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if got := waitConns(2); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("after 2 streams: streams per connection %v, want [0 2] (a spare dialled)", got)
	}
	// Stream 3 takes the spare (least loaded); stream 4 starts the third.
	dial()
	dial()
	if got := waitConns(3); !slices.Equal(got, []int{0, 2, 2}) {
		t.Fatalf("after 4 streams: %v, want [0 2 2]", got)
	}
	for range 5 {
		dial()
	}
	if got := waitConns(3); !slices.Equal(got, []int{3, 3, 3}) || dials.Load() != 3 {
		t.Fatalf("after 9 streams: %v with %d dials, want [3 3 3] over 3", got, dials.Load())
	}
	for i, c := range conns {
		if sum := roundTrip(t, c, []byte{byte(i)}); sum != sha256.Sum256([]byte{byte(i)}) {
			t.Fatalf("stream %d echoed wrong data", i)
		}
	}
}
