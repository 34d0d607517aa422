package netcopy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T, network, addr string) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// waitReader counts WaitRead calls so the test sees the wait path used.
type waitReader struct {
	io.Reader
	waits int
}

func (w *waitReader) WaitRead() error { w.waits++; return nil }

func TestCopy(t *testing.T) {
	payload := bytes.Repeat([]byte("ambit"), 3*BufSize/5+7) // several buffers
	for _, fam := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run("TCP source (poller path) "+fam.network, func(t *testing.T) {
			c, s := tcpPair(t, fam.network, fam.addr)
			go func() { c.Write(payload); c.CloseWrite() }()
			var out bytes.Buffer
			var counted int64
			rerr, werr := Copy(&out, s, Waiter(s), func(n int64) { counted += n })
			if rerr != nil || werr != nil {
				t.Fatalf("Copy = %v, %v", rerr, werr)
			}
			if !bytes.Equal(out.Bytes(), payload) || counted != int64(len(payload)) {
				t.Fatalf("copied %d bytes (counted %d), want %d", out.Len(), counted, len(payload))
			}
		})
	}
	t.Run("reader with WaitRead", func(t *testing.T) {
		src := &waitReader{Reader: bytes.NewReader(payload)}
		var out bytes.Buffer
		if rerr, werr := Copy(&out, src, Waiter(src), nil); rerr != nil || werr != nil {
			t.Fatalf("Copy = %v, %v", rerr, werr)
		}
		if !bytes.Equal(out.Bytes(), payload) || src.waits == 0 {
			t.Fatalf("copied %d bytes with %d waits", out.Len(), src.waits)
		}
	})
	t.Run("plain reader, no waiter", func(t *testing.T) {
		if w := Waiter(bytes.NewReader(nil)); w != nil {
			t.Fatal("a plain reader has no way to wait")
		}
		var out bytes.Buffer
		if rerr, werr := Copy(&out, bytes.NewReader(payload), nil, nil); rerr != nil || werr != nil || out.Len() != len(payload) {
			t.Fatalf("Copy = %v, %v, %d bytes", rerr, werr, out.Len())
		}
	})
	t.Run("write error is returned as such", func(t *testing.T) {
		rerr, werr := Copy(failWriter{}, bytes.NewReader(payload), nil, nil)
		if rerr != nil || werr == nil || werr.Error() != "disk full" {
			t.Fatalf("Copy = %v, %v; want the write error", rerr, werr)
		}
	})
	t.Run("reset source is a read error", func(t *testing.T) {
		c, s := tcpPair(t, "tcp4", "127.0.0.1:0")
		c.SetLinger(0)
		c.Write([]byte("x"))
		c.Close() // RST
		rerr, werr := Copy(io.Discard, s, Waiter(s), nil)
		if rerr == nil || werr != nil {
			t.Fatalf("Copy = %v, %v; want a read error after a reset", rerr, werr)
		}
	})
}
