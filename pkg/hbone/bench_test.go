package hbone

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkHBONEThroughput measures one stream carrying data one way to an
// upstream that discards it, over loopback with real TLS.
func BenchmarkHBONEThroughput(b *testing.B) {
	for _, frame := range []uint32{0, 1 << 20} {
		b.Run(fmt.Sprintf("maxReadFrame=%d", frame), func(b *testing.B) {
			m := newMesh(b)
			up := startUpstream(b, "127.0.0.1", func(c *net.TCPConn) {
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprint(c, n)
			})
			ts := startServer(b, m, "127.0.0.1", func(c *ServerConfig) { c.MaxReadFrameSize = frame })
			d := m.newDialer(b, func(c *DialerConfig) { c.MaxReadFrameSize = frame })
			c, err := d.Dial(context.Background(), m.target(ts, up))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			chunk := make([]byte, 64<<10)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			got, err := io.ReadAll(c)
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
