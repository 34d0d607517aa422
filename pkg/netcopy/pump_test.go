package netcopy

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pumpResult is what Pump's done got.
type pumpResult struct{ rerr, werr error }

// startPump pumps src into dst and returns the spawn count and done's
// result channel.
func startPump(t *testing.T, dst interface{ Write([]byte) (int, error) }, src any, count func(int64)) (*atomic.Int32, chan pumpResult) {
	t.Helper()
	var spawns atomic.Int32
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	res := make(chan pumpResult, 2)
	r, ok := src.(interface{ Read([]byte) (int, error) })
	if !ok || !Pump(dst, r, count, func(f func()) { spawns.Add(1); wg.Go(f) }, func(rerr, werr error) { res <- pumpResult{rerr, werr} }) {
		t.Fatal("Pump refused a TCP source")
	}
	return &spawns, res
}

func waitResult(t *testing.T, res chan pumpResult) pumpResult {
	t.Helper()
	select {
	case r := <-res:
		select {
		case r2 := <-res:
			t.Fatalf("done called twice: %v, then %v", r, r2)
		case <-time.After(20 * time.Millisecond):
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Pump never finished")
		return pumpResult{}
	}
}

// lockedBuffer is a bytes.Buffer safe for the pump's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// TestPump: bursts separated by idle time arrive whole and in order,
// each idle wait on a new goroutine; a bulk transfer of several buffers
// arrives whole; EOF, counts, a closed source and a failing destination
// end the pump with Copy's results, once.
func TestPump(t *testing.T) {
	t.Run("bursts and EOF", func(t *testing.T) {
		c, s := tcpPair(t, "tcp4", "127.0.0.1:0")
		var out lockedBuffer
		var counted atomic.Int64
		spawns, res := startPump(t, &out, s, func(n int64) { counted.Add(n) })
		var want []byte
		burst := func(i int, idle time.Duration) {
			b := bytes.Repeat([]byte{byte('a' + i)}, 1000+i)
			want = append(want, b...)
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(out.bytes()) < len(want) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(idle)
		}
		// Busy: bursts closer than IdleHandoff stay on one goroutine.
		for i := range 5 {
			burst(i, time.Millisecond)
		}
		if n := spawns.Load(); n != 1 {
			t.Fatalf("%d goroutines started for bursts %v apart, want the first only", n, time.Millisecond)
		}
		// Idle longer than IdleHandoff: the wait moves to a new goroutine.
		for i := range 2 {
			burst(5+i, IdleHandoff+50*time.Millisecond)
		}
		if n := spawns.Load(); n != 3 {
			t.Fatalf("%d goroutines started after 2 idle gaps, want 3", n)
		}
		big := bytes.Repeat([]byte("bulk"), 3*BufSize/4+5) // three buffers and a bit
		want = append(want, big...)
		if _, err := c.Write(big); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		if r := waitResult(t, res); r.rerr != nil || r.werr != nil {
			t.Fatalf("done(%v, %v), want EOF (nil, nil)", r.rerr, r.werr)
		}
		if got := out.bytes(); !bytes.Equal(got, want) {
			t.Fatalf("copied %d bytes, want %d in order", len(got), len(want))
		}
		if counted.Load() != int64(len(want)) {
			t.Fatalf("counted %d, want %d", counted.Load(), len(want))
		}
	})
	t.Run("source closed while idle", func(t *testing.T) {
		_, s := tcpPair(t, "tcp4", "127.0.0.1:0")
		_, res := startPump(t, &lockedBuffer{}, s, nil)
		time.Sleep(20 * time.Millisecond)
		s.Close()
		if r := waitResult(t, res); !errors.Is(r.rerr, net.ErrClosed) || r.werr != nil {
			t.Fatalf("done(%v, %v), want the closed source's error", r.rerr, r.werr)
		}
	})
	t.Run("destination fails", func(t *testing.T) {
		c, s := tcpPair(t, "tcp4", "127.0.0.1:0")
		_, res := startPump(t, failWriter{}, s, nil)
		c.Write([]byte("x"))
		if r := waitResult(t, res); r.rerr != nil || r.werr == nil {
			t.Fatalf("done(%v, %v), want the write error", r.rerr, r.werr)
		}
	})
	t.Run("not a TCP source", func(t *testing.T) {
		if Pump(&lockedBuffer{}, bytes.NewReader(nil), nil, func(func()) { t.Fatal("spawned") }, nil) {
			t.Fatal("Pump took a non-TCP source")
		}
	})
}
