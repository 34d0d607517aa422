package hbone

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// TestDeadlineWakesWaitingRead checks that a deadline set while a Read
// waits ends that Read, as on a net.TCPConn.
func TestDeadlineWakesWaitingRead(t *testing.T) {
	m := newMesh(t)
	up := startUpstream(t, "127.0.0.1", echo)
	ts := startServer(t, m, "127.0.0.1", nil)
	d := m.newDialer(t, nil)
	c, err := d.Dial(context.Background(), m.target(ts, up))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		res <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the Read wait
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-res:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("waiting Read = %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a deadline set while the Read waited did not end it")
	}
}
