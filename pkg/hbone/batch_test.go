package hbone

import (
	"bytes"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// frames returns the bytes x/net's Framer writes for each frame written by
// write.
func frames(t *testing.T, write func(*http2.Framer) error) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := write(http2.NewFramer(&b, nil)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestOnlyWindowUpdates(t *testing.T) {
	wu := frames(t, func(f *http2.Framer) error { return f.WriteWindowUpdate(0, 4096) })
	wu2 := frames(t, func(f *http2.Framer) error {
		if err := f.WriteWindowUpdate(0, 8192); err != nil {
			return err
		}
		return f.WriteWindowUpdate(3, 8192)
	})
	data := frames(t, func(f *http2.Framer) error { return f.WriteData(1, false, []byte("hi")) })
	ping := frames(t, func(f *http2.Framer) error { return f.WritePing(true, [8]byte{}) })
	for _, tc := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, false},
		{"one window update", wu, true},
		{"two window updates", wu2, true},
		{"data", data, false},
		{"ping ack", ping, false},
		{"window update then data", append(append([]byte{}, wu...), data...), false},
		{"data then window update", append(append([]byte{}, data...), wu...), false},
		{"truncated window update", wu[:len(wu)-1], false},
		{"window update header only", wu[:9], false},
		{"window update and a partial frame", append(append([]byte{}, wu...), 0, 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := onlyWindowUpdates(tc.p); got != tc.want {
				t.Errorf("onlyWindowUpdates(% x) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

// recordingConn records each Write as one element.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	wrote  chan struct{}
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), p...))
	c.mu.Unlock()
	select {
	case c.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *recordingConn) Close() error                         { return nil }
func (c *recordingConn) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }

func (c *recordingConn) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

func TestBatchConnWritesDataAtOnce(t *testing.T) {
	rc := &recordingConn{wrote: make(chan struct{}, 1)}
	c := newBatchConn(rc)
	defer c.Close()
	data := frames(t, func(f *http2.Framer) error { return f.WriteData(1, false, []byte("x")) })
	if n, err := c.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
	}
	if got := rc.got(); len(got) != 1 || !bytes.Equal(got[0], data) {
		t.Fatalf("a single small DATA write was not written at once: writes %q", got)
	}
}

func TestBatchConnMergesWindowUpdatesIntoNextWrite(t *testing.T) {
	rc := &recordingConn{wrote: make(chan struct{}, 1)}
	c := newBatchConn(rc)
	defer c.Close()
	wu := frames(t, func(f *http2.Framer) error { return f.WriteWindowUpdate(0, 4096) })
	data := frames(t, func(f *http2.Framer) error { return f.WriteData(1, false, []byte("x")) })
	if n, err := c.Write(wu); n != len(wu) || err != nil {
		t.Fatalf("Write(window update) = %d, %v", n, err)
	}
	if n, err := c.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write(data) = %d, %v; want %d, nil", n, err, len(data))
	}
	want := append(append([]byte{}, wu...), data...)
	if got := rc.got(); len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("writes %q, want the window update and the data in one write %q", got, want)
	}
	// Nothing is written again when the timer would have fired.
	time.Sleep(3 * windowUpdateDelay)
	if got := rc.got(); len(got) != 1 {
		t.Fatalf("%d writes after the delay, want 1", len(got))
	}
}

func TestBatchConnFlushesLoneWindowUpdate(t *testing.T) {
	rc := &recordingConn{wrote: make(chan struct{}, 1)}
	c := newBatchConn(rc)
	defer c.Close()
	wu := frames(t, func(f *http2.Framer) error { return f.WriteWindowUpdate(3, 4096) })
	start := time.Now()
	if _, err := c.Write(wu); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rc.wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("a lone window update was never written")
	}
	if d := time.Since(start); d < windowUpdateDelay {
		t.Errorf("window update written after %v, want it held for %v", d, windowUpdateDelay)
	}
	if got := rc.got(); len(got) != 1 || !bytes.Equal(got[0], wu) {
		t.Fatalf("writes %q, want %q", got, wu)
	}
}

func TestBatchConnLargeWriteAfterHeldCredit(t *testing.T) {
	rc := &recordingConn{wrote: make(chan struct{}, 1)}
	c := newBatchConn(rc)
	defer c.Close()
	wu := frames(t, func(f *http2.Framer) error { return f.WriteWindowUpdate(0, 4096) })
	big := frames(t, func(f *http2.Framer) error { return f.WriteData(1, false, make([]byte, maxMergedWrite)) })
	c.Write(wu)
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write(big) = %d, %v; want %d, nil", n, err, len(big))
	}
	got := rc.got()
	if len(got) != 2 || !bytes.Equal(got[0], wu) || !bytes.Equal(got[1], big) {
		t.Fatalf("got %d writes, want the held window update then the large write, in order", len(got))
	}
}

// hangingTLSConn's Close blocks until its socket is closed, like a
// *tls.Conn whose close_notify cannot be written to a peer that stopped
// reading.
type hangingTLSConn struct {
	recordingConn
	sock *closeRecorder
}

type closeRecorder struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *closeRecorder) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

func (c *hangingTLSConn) NetConn() net.Conn { return c.sock }
func (c *hangingTLSConn) Close() error      { <-c.sock.closed; return nil }

func TestBatchConnCloseClosesTheSocketWhenTLSCloseHangs(t *testing.T) {
	hc := &hangingTLSConn{sock: &closeRecorder{closed: make(chan struct{})}}
	c := newBatchConn(hc)
	done := make(chan struct{})
	start := time.Now()
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung although the TLS close was stuck: the socket was not closed")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("socket closed after %v: want the TLS close given 250 ms first", d)
	}
}
