package hbone

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHBONEThroughput measures one stream carrying data one way to an
// upstream that discards it, over loopback with real TLS.
func BenchmarkHBONEThroughput(b *testing.B) {
	for _, f := range []struct{ server, client uint32 }{{0, 0}, {1 << 20, 1 << 20}} {
		b.Run(fmt.Sprintf("maxReadFrame=server:%d/client:%d", f.server, f.client), func(b *testing.B) {
			m := newMesh(b)
			up := startUpstream(b, "127.0.0.1", func(c *net.TCPConn) {
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprint(c, n)
			})
			ts := startServer(b, m, "127.0.0.1", func(c *ServerConfig) { c.MaxReadFrameSize = f.server })
			d := m.newDialer(b, func(c *DialerConfig) { c.MaxReadFrameSize = f.client })
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			chunk := make([]byte, 64<<10)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			cpu0 := cpuTime()
			for range b.N {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			got, err := io.ReadAll(c)
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*len(chunk))*1e3, "cpu-ns/KB")
			b.StopTimer()
			if want := fmt.Sprint(b.N * len(chunk)); err != nil || string(got) != want {
				b.Fatalf("upstream counted %q bytes (%v), want %s", got, err, want)
			}
		})
	}
}

// BenchmarkHBONENewStream measures opening a CONNECT stream on a warm pooled
// connection (including the server's upstream dial) and closing it.
func BenchmarkHBONENewStream(b *testing.B) {
	m := newMesh(b)
	up := startUpstream(b, "127.0.0.1", func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	ts := startServer(b, m, "127.0.0.1", nil)
	d := m.newDialer(b, nil)
	warm, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		b.Fatal(err)
	}
	warm.Close()
	b.ResetTimer()
	for range b.N {
		c, err := d.Dial(context.Background(), m.target(ts, up))
		if err != nil {
			b.Fatal(err)
		}
		c.CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
	b.StopTimer()
	if n := len(d.Conns()); n != 1 {
		b.Fatalf("%d pooled connections, want 1", n)
	}
}

// BenchmarkHBONERequestResponse measures a 1 KiB request echoed as a 1 KiB
// response on one warm stream (client, HBONE server and upstream all in
// this process): the cost per request of the bench's latency phase.
func BenchmarkHBONERequestResponse(b *testing.B) {
	m := newMesh(b)
	up := startUpstream(b, "127.0.0.1", echo)
	ts := startServer(b, m, "127.0.0.1", nil)
	var writes atomic.Int64 // write(2)s of the client's HBONE connection
	d := m.newDialer(b, func(c *DialerConfig) {
		c.DialTCP = func(ctx context.Context, t Target) (net.Conn, error) {
			var nd net.Dialer
			raw, err := nd.DialContext(ctx, "tcp", t.HBONEAddr.String())
			return countingConn{raw, &writes}, err
		}
	})
	c, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := make([]byte, 1024)
	resp := make([]byte, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, writes0 := cpuTime(), writes.Load()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(writes.Load()-writes0)/float64(b.N), "client-writes/op")
	b.StopTimer()
	c.CloseWrite()
	io.Copy(io.Discard, c)
}

// BenchmarkHBONEIdleStreams opens idle streams (each after a 1-byte echo,
// so every hop exists) and reports the heap and goroutines each one holds
// in the client, the server and the upstream together.
func BenchmarkHBONEIdleStreams(b *testing.B) {
	const n = 200
	m := newMesh(b)
	up := startUpstream(b, "127.0.0.1", echo)
	ts := startServer(b, m, "127.0.0.1", func(c *ServerConfig) { c.MaxConcurrentStreams = 1000 })
	d := m.newDialer(b, func(c *DialerConfig) { c.MaxStreamsPerConn = 1000 })
	warm, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		b.Fatal(err)
	}
	defer warm.Close()
	var heap, gor float64
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		conns := make([]*Conn, 0, n)
		one := make([]byte, 1)
		for range n {
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(one); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / n
		gor += float64(runtime.NumGoroutine()-g0) / n
		for _, c := range conns {
			c.Close()
		}
	}
	b.ReportMetric(heap/float64(b.N), "heap+stack-B/stream")
	b.ReportMetric(gor/float64(b.N), "goroutines/stream")
}

// cpuTime is the process's user+system CPU time: less sensitive than wall
// time to other load on the machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingConn counts the Writes made on a connection.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}
