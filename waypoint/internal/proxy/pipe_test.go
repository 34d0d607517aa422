package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestPipeHalfCloseAndDeadlines(t *testing.T) {
	closed := 0
	outer, inner := newPipe(&net.TCPAddr{IP: net.ParseIP("10.96.0.10"), Port: 80}, &net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 4000}, func() { closed++ })
	if inner.LocalAddr().String() != "10.96.0.10:80" || inner.RemoteAddr().String() != "[fd00::1]:4000" || outer.RemoteAddr().String() != "10.96.0.10:80" {
		t.Fatalf("addresses: inner %s→%s, outer %s→%s", inner.RemoteAddr(), inner.LocalAddr(), outer.LocalAddr(), outer.RemoteAddr())
	}
	// The source sends a request and half-closes.
	go func() {
		io.WriteString(outer, "request")
		outer.CloseWrite()
	}()
	got, err := io.ReadAll(inner)
	if err != nil || string(got) != "request" {
		t.Fatalf("inner read %q, %v", got, err)
	}
	// The answer still flows back, and its end is seen.
	go func() {
		io.WriteString(inner, "answer")
		inner.CloseWrite()
	}()
	if got, err := io.ReadAll(outer); err != nil || string(got) != "answer" {
		t.Fatalf("outer read %q, %v", got, err)
	}
	// A read deadline stops a blocked read (net/http depends on it).
	a, b := newPipe(&net.TCPAddr{}, &net.TCPAddr{}, nil)
	a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	a.Close()
	b.Close()
	inner.Close()
	inner.Close()
	outer.Close()
	if closed != 1 {
		t.Fatalf("onClose ran %d times, want 1", closed)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
