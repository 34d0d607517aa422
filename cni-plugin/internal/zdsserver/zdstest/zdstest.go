// Package zdstest is a ztunnel for tests of the node agent: it connects to
// a ZDS socket, says hello, answers every request (ack, or a nack chosen by
// the test) and reports what it received.
package zdstest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/zds"
)

// Msg is one request the ztunnel received.
type Msg struct {
	// Kind is add, keep, del or snapshot.
	Kind string
	UID  string
	// Name is "namespace/name" and SA the service account (add only).
	Name, SA string
	// FDs is the number of descriptors attached; Dev/Ino identify the
	// first one (add only).
	FDs      int
	Dev, Ino uint64
}

// String is "kind:uid".
func (m Msg) String() string { return m.Kind + ":" + m.UID }

// Ztunnel is a connected test ztunnel.
type Ztunnel struct {
	// Msgs receives every request, in order (buffered).
	Msgs chan Msg

	conn *zds.Conn
	mu   sync.Mutex
	nack func(Msg) string
	done chan struct{}
}

// Dial connects to the agent at path and serves until the test ends (or
// Close). nack, if set, returns the nack for a request ("" acks).
func Dial(t testing.TB, path string, nack func(Msg) string) *Ztunnel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := zds.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendHello(); err != nil {
		c.Close()
		t.Fatal(err)
	}
	z := &Ztunnel{Msgs: make(chan Msg, 1024), conn: c, nack: nack, done: make(chan struct{})}
	go z.serve()
	t.Cleanup(z.Close)
	return z
}

// SetNack replaces the nack function.
func (z *Ztunnel) SetNack(nack func(Msg) string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.nack = nack
}

// Close disconnects and waits for the serving goroutine.
func (z *Ztunnel) Close() {
	z.conn.Close()
	<-z.done
}

func (z *Ztunnel) serve() {
	defer close(z.done)
	defer close(z.Msgs)
	for {
		req, fds, err := z.conn.RecvRequest()
		if err != nil {
			for _, f := range fds {
				f.Close()
			}
			return
		}
		m := summarise(req, fds)
		for _, f := range fds {
			f.Close()
		}
		z.mu.Lock()
		nack := ""
		if z.nack != nil {
			nack = z.nack(m)
		}
		z.mu.Unlock()
		z.Msgs <- m
		if err := z.conn.SendAck(nack); err != nil {
			return
		}
	}
}

func summarise(req *zdsv1alpha1.WorkloadRequest, fds []*os.File) Msg {
	m := Msg{FDs: len(fds)}
	if len(fds) > 0 {
		var st unix.Stat_t
		if unix.Fstat(int(fds[0].Fd()), &st) == nil {
			m.Dev, m.Ino = st.Dev, st.Ino
		}
	}
	switch p := req.GetPayload().(type) {
	case *zdsv1alpha1.WorkloadRequest_Add:
		wi := p.Add.GetWorkloadInfo()
		m.Kind, m.UID, m.Name, m.SA = "add", p.Add.GetUid(), wi.GetNamespace()+"/"+wi.GetName(), wi.GetServiceAccount()
	case *zdsv1alpha1.WorkloadRequest_Keep:
		m.Kind, m.UID = "keep", p.Keep.GetUid()
	case *zdsv1alpha1.WorkloadRequest_Del:
		m.Kind, m.UID = "del", p.Del.GetUid()
	case *zdsv1alpha1.WorkloadRequest_SnapshotSent:
		m.Kind = "snapshot"
	default:
		m.Kind = "empty"
	}
	return m
}

// Next returns the next request, failing the test after timeout.
func (z *Ztunnel) Next(t testing.TB, timeout time.Duration) Msg {
	t.Helper()
	select {
	case m, ok := <-z.Msgs:
		if !ok {
			t.Fatal("ztunnel: the agent closed the connection")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("ztunnel: no request within %s", timeout)
	}
	return Msg{}
}

// WaitFor returns the first request matching want (skipping others),
// failing the test after timeout.
func (z *Ztunnel) WaitFor(t testing.TB, timeout time.Duration, want func(Msg) bool) Msg {
	t.Helper()
	deadline := time.After(timeout)
	var skipped []string
	for {
		select {
		case m, ok := <-z.Msgs:
			if !ok {
				t.Fatalf("ztunnel: the agent closed the connection (skipped %v)", skipped)
			}
			if want(m) {
				return m
			}
			skipped = append(skipped, m.String())
		case <-deadline:
			t.Fatalf("ztunnel: no matching request within %s (skipped %v)", timeout, skipped)
		}
	}
}

// Is returns a matcher of kind and uid.
func Is(kind, uid string) func(Msg) bool {
	return func(m Msg) bool { return m.Kind == kind && m.UID == uid }
}

// InodeOf returns the device and inode of f.
func InodeOf(f *os.File) (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return st.Dev, st.Ino, nil
}
