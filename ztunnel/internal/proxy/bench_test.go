package proxy

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
)

// echoServer accepts on a loopback listener and echoes every connection.
func echoServer(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln
}

// spliced returns a client connection that reaches an echo server through
// Splice.
func spliced(b *testing.B, echo, front net.Listener) net.Conn {
	c, err := net.Dial("tcp4", front.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	a, err := front.Accept()
	if err != nil {
		b.Fatal(err)
	}
	up, err := net.Dial("tcp4", echo.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	go Splice(context.Background(), a, up, func(int64) {}, func(int64) {})
	return c
}

func frontListener(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}

// BenchmarkSpliceRequestResponse measures a 1 KiB request echoed as a
// 1 KiB response through Splice on loopback.
func BenchmarkSpliceRequestResponse(b *testing.B) {
	c := spliced(b, echoServer(b), frontListener(b))
	defer c.Close()
	req, resp := make([]byte, 1024), make([]byte, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSpliceIdle reports the heap and stack each idle spliced
// connection holds (after a 1-byte echo), echo server included.
func BenchmarkSpliceIdle(b *testing.B) {
	const n = 500
	echo, front := echoServer(b), frontListener(b)
	var mem float64
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		conns := make([]net.Conn, 0, n)
		one := make([]byte, 1)
		for range n {
			c := spliced(b, echo, front)
			c.Write(one)
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		mem += float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / n
		for _, c := range conns {
			c.Close()
		}
	}
	b.ReportMetric(mem/float64(b.N), "heap+stack-B/conn")
}
