package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T, network, addr string) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestSpliceHalfCloseAndCounts(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"IPv4", "tcp4", "127.0.0.1:0"},
		{"IPv6", "tcp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// client ⇄ (a | proxy | b) ⇄ server
			client, a := tcpPair(t, tc.network, tc.addr)
			b, server := tcpPair(t, tc.network, tc.addr)
			var up, down atomic.Int64
			done := make(chan error, 1)
			go func() {
				done <- Splice(context.Background(), a, b, func(n int64) { up.Add(n) }, func(n int64) { down.Add(n) })
			}()

			req := make([]byte, 1<<20)
			rand.Read(req)
			go func() {
				client.Write(req)
				client.CloseWrite() // half-close: the server must see EOF...
			}()
			got, err := io.ReadAll(server)
			if err != nil || !bytes.Equal(got, req) {
				t.Fatalf("server read %d bytes (%v), want the %d sent", len(got), err, len(req))
			}
			// ...and can still answer.
			resp := []byte("response after the client's half-close")
			if _, err := server.Write(resp); err != nil {
				t.Fatal(err)
			}
			server.CloseWrite()
			back, err := io.ReadAll(client)
			if err != nil || !bytes.Equal(back, resp) {
				t.Fatalf("client read %q (%v), want %q", back, err, resp)
			}
			if err := <-done; err != nil {
				t.Fatalf("Splice: %v", err)
			}
			if up.Load() != int64(len(req)) || down.Load() != int64(len(resp)) {
				t.Fatalf("counted %d up / %d down, want %d / %d", up.Load(), down.Load(), len(req), len(resp))
			}
		})
	}
}

func TestSpliceContextCancelClosesBoth(t *testing.T) {
	client, a := tcpPair(t, "tcp", "127.0.0.1:0")
	b, server := tcpPair(t, "tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Splice(ctx, a, b, nil, nil) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Splice after cancel: %v", err)
	}
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: read after cancel = %v, want EOF or reset", name, err)
		}
	}
}

func TestCountingConn(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c2.Close()
	var w, r, closed atomic.Int64
	cc := &CountingConn{Conn: c1, OnWrite: func(n int64) { w.Add(n) }, OnRead: func(n int64) { r.Add(n) }, OnClose: func() { closed.Add(1) }}
	go func() {
		buf := make([]byte, 5)
		io.ReadFull(c2, buf)
		c2.Write([]byte("abc"))
	}()
	cc.Write([]byte("hello"))
	io.ReadFull(cc, make([]byte, 3))
	cc.Close()
	cc.Close()
	if w.Load() != 5 || r.Load() != 3 || closed.Load() != 1 {
		t.Fatalf("wrote %d read %d closed %d, want 5 3 1", w.Load(), r.Load(), closed.Load())
	}
}

func TestTracker(t *testing.T) {
	tr := NewTracker()
	if err := tr.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	d1, d2 := tr.Add(), tr.Add()
	d1()
	d1() // idempotent
	if tr.Len() != 1 {
		t.Fatalf("Len = %d, want 1", tr.Len())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a connection open and ctx done = %v", err)
	}
	go d2()
	if err := tr.Wait(context.Background()); err != nil || tr.Len() != 0 {
		t.Fatalf("Wait = %v, Len %d", err, tr.Len())
	}
}

// TestSpliceReportsReset checks that a reset on one leg is returned (not
// taken for a clean EOF) and closes the other leg.
func TestSpliceReportsReset(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"IPv4", "tcp4", "127.0.0.1:0"},
		{"IPv6", "tcp6", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, a := tcpPair(t, tc.network, tc.addr)
			b, server := tcpPair(t, tc.network, tc.addr)
			done := make(chan error, 1)
			go func() { done <- Splice(context.Background(), a, b, nil, nil) }()
			server.SetLinger(0)
			server.Close() // RST
			if err := <-done; !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("Splice = %v, want ECONNRESET", err)
			}
			if _, err := io.ReadAll(client); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read = %v, want EOF or reset", err)
			}
		})
	}
}

// delivering is a TCP conn with a DeliverTo like an HBONE stream's: a
// goroutine of its own copies what it receives to dst (unit-test stand-in
// for hbone.Conn's reader).
type delivering struct {
	*net.TCPConn
	wg *sync.WaitGroup
}

func (d delivering) DeliverTo(dst *net.TCPConn, count func(int64), done func(error)) bool {
	d.wg.Go(func() {
		n, err := io.Copy(dst, d.TCPConn)
		if count != nil && n > 0 {
			count(n)
		}
		if err == nil {
			err = dst.CloseWrite()
		}
		done(err)
	})
	return true
}

// spliceAsync runs SpliceAsync and returns a channel with done's result.
func spliceAsync(t *testing.T, ctx context.Context, a, b *net.TCPConn, up, down *atomic.Int64) chan error {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	res := make(chan error, 2)
	count := func(c *atomic.Int64) func(int64) {
		if c == nil {
			return nil
		}
		return func(n int64) { c.Add(n) }
	}
	if !SpliceAsync(ctx, a, delivering{b, &wg}, count(up), count(down), func(f func()) { wg.Go(f) }, func(err error) { res <- err }) {
		t.Fatal("SpliceAsync refused a TCP conn and a deliverer")
	}
	return res
}

// TestSpliceAsync: the same contract as Splice — half-close both ways,
// counts, cancel closes both, a reset is reported — with done called once;
// a conn without DeliverTo is refused.
func TestSpliceAsync(t *testing.T) {
	t.Run("half-close and counts", func(t *testing.T) {
		client, a := tcpPair(t, "tcp4", "127.0.0.1:0")
		b, server := tcpPair(t, "tcp4", "127.0.0.1:0")
		var up, down atomic.Int64
		done := spliceAsync(t, context.Background(), a, b, &up, &down)
		req := make([]byte, 1<<20)
		rand.Read(req)
		go func() {
			// In bursts with pauses, so the pump waits between them.
			for p := req; len(p) > 0; p = p[min(len(p), 100_000):] {
				client.Write(p[:min(len(p), 100_000)])
				time.Sleep(time.Millisecond)
			}
			client.CloseWrite()
		}()
		got, err := io.ReadAll(server)
		if err != nil || !bytes.Equal(got, req) {
			t.Fatalf("server read %d bytes (%v), want the %d sent", len(got), err, len(req))
		}
		resp := []byte("response after the client's half-close")
		server.Write(resp)
		server.CloseWrite()
		if back, err := io.ReadAll(client); err != nil || !bytes.Equal(back, resp) {
			t.Fatalf("client read %q (%v), want %q", back, err, resp)
		}
		if err := <-done; err != nil {
			t.Fatalf("SpliceAsync: %v", err)
		}
		if up.Load() != int64(len(req)) || down.Load() != int64(len(resp)) {
			t.Fatalf("counted %d up / %d down, want %d / %d", up.Load(), down.Load(), len(req), len(resp))
		}
		select {
		case err := <-done:
			t.Fatalf("done called twice (second: %v)", err)
		case <-time.After(20 * time.Millisecond):
		}
	})
	t.Run("cancel closes both", func(t *testing.T) {
		client, a := tcpPair(t, "tcp4", "127.0.0.1:0")
		b, server := tcpPair(t, "tcp4", "127.0.0.1:0")
		ctx, cancel := context.WithCancel(context.Background())
		done := spliceAsync(t, ctx, a, b, nil, nil)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("SpliceAsync after cancel: %v", err)
		}
		for name, c := range map[string]net.Conn{"client": client, "server": server} {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: read after cancel = %v, want EOF or reset", name, err)
			}
		}
	})
	t.Run("client reset is reported", func(t *testing.T) {
		client, a := tcpPair(t, "tcp4", "127.0.0.1:0")
		b, _ := tcpPair(t, "tcp4", "127.0.0.1:0")
		done := spliceAsync(t, context.Background(), a, b, nil, nil)
		client.SetLinger(0)
		client.Close() // RST to the pumped side
		if err := <-done; !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("SpliceAsync = %v, want ECONNRESET", err)
		}
	})
	t.Run("no deliverer", func(t *testing.T) {
		_, a := tcpPair(t, "tcp4", "127.0.0.1:0")
		b, _ := tcpPair(t, "tcp4", "127.0.0.1:0")
		if SpliceAsync(context.Background(), a, b, nil, nil, func(func()) { t.Fatal("spawned") }, func(error) { t.Fatal("done") }) {
			t.Fatal("SpliceAsync took a conn without DeliverTo")
		}
	})
}
