package zdsserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/zds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout only guards against a hung test; no test asserts on time.
const waitTimeout = 20 * time.Second

// quiet is how long a test waits to see that NO datagram comes; a bug
// (an early send) would show well within it.
const quiet = 300 * time.Millisecond

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type env struct {
	t    *testing.T
	srv  *Server
	path string
	live chan struct{}
}

// start runs a Server on a temporary socket until the test ends.
func start(t *testing.T, opts Options, ready bool) *env {
	t.Helper()
	e := &env{t: t, path: filepath.Join(t.TempDir(), "zds.sock"), live: make(chan struct{}, 16)}
	opts.OnLive = func() { e.live <- struct{}{} }
	srv, err := New(discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	l, err := zds.Listen(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if ready {
		srv.SetReady()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// ztunnel is a ZDS client written for the tests.
type ztunnel struct {
	t    *testing.T
	conn *zds.Conn
}

func (e *env) dial() *ztunnel {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := zds.Dial(ctx, e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.SendHello(); err != nil {
		e.t.Fatal(err)
	}
	return &ztunnel{t: e.t, conn: c}
}

// msg is a received request, summarised.
type msg struct {
	kind string
	uid  string
	fds  int
	ino  uint64
	name string
}

func (z *ztunnel) recv() msg {
	z.t.Helper()
	m, err := z.tryRecv(waitTimeout)
	if err != nil {
		z.t.Fatalf("ztunnel: receive: %v", err)
	}
	return m
}

func (z *ztunnel) tryRecv(d time.Duration) (msg, error) {
	if err := z.conn.UnixConn().SetReadDeadline(time.Now().Add(d)); err != nil {
		return msg{}, err
	}
	req, fds, err := z.conn.RecvRequest()
	defer func() {
		for _, f := range fds {
			f.Close()
		}
	}()
	if err != nil {
		return msg{}, err
	}
	m := msg{fds: len(fds)}
	if len(fds) == 1 {
		var st unix.Stat_t
		if err := unix.Fstat(int(fds[0].Fd()), &st); err != nil {
			return msg{}, err
		}
		m.ino = st.Ino
	}
	switch p := req.GetPayload().(type) {
	case *zdsv1alpha1.WorkloadRequest_Add:
		m.kind, m.uid, m.name = "add", p.Add.GetUid(), p.Add.GetWorkloadInfo().GetNamespace()+"/"+p.Add.GetWorkloadInfo().GetName()+"@"+p.Add.GetWorkloadInfo().GetServiceAccount()
	case *zdsv1alpha1.WorkloadRequest_Keep:
		m.kind, m.uid = "keep", p.Keep.GetUid()
	case *zdsv1alpha1.WorkloadRequest_Del:
		m.kind, m.uid = "del", p.Del.GetUid()
	case *zdsv1alpha1.WorkloadRequest_SnapshotSent:
		m.kind = "snapshot"
	default:
		m.kind = "empty"
	}
	return m, nil
}

// expectNothing checks that no request arrives for a while.
func (z *ztunnel) expectNothing() {
	z.t.Helper()
	m, err := z.tryRecv(quiet)
	if err == nil {
		z.t.Fatalf("ztunnel received %+v while it expected nothing", m)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		z.t.Fatalf("ztunnel: %v", err)
	}
}

func (z *ztunnel) ack(nack string) {
	z.t.Helper()
	if err := z.conn.SendAck(nack); err != nil {
		z.t.Fatal(err)
	}
}

// expect receives one request, checks its kind and uid, and answers it.
func (z *ztunnel) expect(kind, uid, nack string) msg {
	z.t.Helper()
	m := z.recv()
	if m.kind != kind || m.uid != uid {
		z.t.Fatalf("ztunnel received %s %q, want %s %q", m.kind, m.uid, kind, uid)
	}
	if kind == "add" && m.fds != 1 {
		z.t.Fatalf("add of %q carried %d fds, want 1", uid, m.fds)
	}
	if kind != "add" && m.fds != 0 {
		z.t.Fatalf("%s carried %d fds, want 0", kind, m.fds)
	}
	z.ack(nack)
	return m
}

// replay consumes a full replay of adds and keeps (in order) and acks it.
func (z *ztunnel) replay(want ...string) {
	z.t.Helper()
	for _, w := range want {
		kind, uid, _ := strings.Cut(w, ":")
		z.expect(kind, uid, "")
	}
	z.expect("snapshot", "", "")
}

// nsFile opens a netns file (our own: no privilege needed) and returns it
// with its inode.
func nsFile(t *testing.T) (*os.File, uint64) {
	t.Helper()
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, st.Ino
}

// otherFile is a non-netns file with another inode, standing for another
// pod's netns (zds does not look at what the descriptor is).
func otherFile(t *testing.T) (*os.File, uint64) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "other-netns"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, st.Ino
}

func wl(uid string) Workload {
	return Workload{UID: uid, Name: "pod-" + uid, Namespace: "demo", ServiceAccount: "sa-" + uid}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) waitLive() {
	e.t.Helper()
	select {
	case <-e.live:
	case <-time.After(waitTimeout):
		e.t.Fatal("no session became live")
	}
}

func TestReplayAddsWithFdKeepsWithoutThenSnapshot(t *testing.T) {
	e := start(t, Options{}, false)
	f, ino := nsFile(t)
	// Before any session: recorded, ErrNoZtunnel.
	if err := e.srv.Add(ctxT(t), wl("b"), f); !errors.Is(err, ErrNoZtunnel) {
		t.Fatalf("Add without ztunnel = %v, want ErrNoZtunnel", err)
	}
	e.srv.Keep(wl("a"))
	e.srv.Keep(wl("b")) // b has a netns: the Keep changes nothing
	e.srv.Keep(wl("c"))
	e.srv.SetReady()

	z := e.dial()
	m := z.expect("keep", "a", "")
	m = z.expect("add", "b", "")
	if m.ino != ino || m.name != "demo/pod-b@sa-b" {
		t.Fatalf("replayed add = %+v, want inode %d and demo/pod-b@sa-b", m, ino)
	}
	z.expect("keep", "c", "")
	z.expect("snapshot", "", "")
	e.waitLive()
	if err := e.srv.WaitLive(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !e.srv.Acked("b") || e.srv.Acked("a") {
		t.Fatalf("Acked(b)=%v Acked(a)=%v; want true, false", e.srv.Acked("b"), e.srv.Acked("a"))
	}
	// The replay acked b's netns: Add of the same returns without sending.
	if err := e.srv.Add(ctxT(t), wl("b"), f); err != nil {
		t.Fatalf("Add of an acked workload: %v", err)
	}
	e.srv.Del("c")
	z.expect("del", "c", "") // the next request is the Del: the Add sent nothing
}

func TestSessionWaitsForReady(t *testing.T) {
	e := start(t, Options{}, false)
	e.srv.Keep(wl("a"))
	z := e.dial()
	z.expectNothing()
	e.srv.SetReady()
	z.replay("keep:a")
}

func TestAddAfterSnapshotWaitsForAck(t *testing.T) {
	e := start(t, Options{}, true)
	z := e.dial()
	z.replay()
	e.waitLive()
	f, ino := nsFile(t)
	done := make(chan error, 1)
	go func() { done <- e.srv.Add(ctxT(t), wl("u1"), f) }()
	m := z.recv()
	if m.kind != "add" || m.uid != "u1" || m.ino != ino {
		t.Fatalf("got %+v, want add u1 with inode %d", m, ino)
	}
	select {
	case err := <-done:
		t.Fatalf("Add returned %v before the ack", err)
	case <-time.After(quiet):
	}
	z.ack("")
	if err := <-done; err != nil {
		t.Fatalf("Add: %v", err)
	}

	// A new netns for the same uid (sandbox recreated) is sent again.
	g, ino2 := otherFile(t)
	go func() { done <- e.srv.Add(ctxT(t), wl("u1"), g) }()
	if m := z.expect("add", "u1", ""); m.ino != ino2 {
		t.Fatalf("second add carried inode %d, want %d", m.ino, ino2)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNackIsReportedAndRetried(t *testing.T) {
	e := start(t, Options{}, true)
	z := e.dial()
	z.replay()
	e.waitLive()
	f, _ := nsFile(t)
	done := make(chan error, 1)
	go func() { done <- e.srv.Add(ctxT(t), wl("u1"), f) }()
	z.expect("add", "u1", "cannot bind 15008 in netns of pod demo/pod-u1: address in use")
	err := <-done
	if !errors.Is(err, ErrNotAcked) || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("Add = %v, want ErrNotAcked with the nack", err)
	}
	if e.srv.Acked("u1") {
		t.Fatal("a nacked workload counts as acked")
	}
	// The session survives a nack; a retry sends the Add again.
	go func() { done <- e.srv.Add(ctxT(t), wl("u1"), f) }()
	z.expect("add", "u1", "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestOneRequestInFlight(t *testing.T) {
	e := start(t, Options{}, true)
	z := e.dial()
	z.replay()
	e.waitLive()
	f, _ := nsFile(t)
	done := make(chan error, 2)
	go func() { done <- e.srv.Add(ctxT(t), wl("u1"), f) }()
	if m := z.recv(); m.kind != "add" {
		t.Fatalf("got %+v", m)
	}
	e.srv.Keep(wl("k")) // not sent: Keep only matters for replays
	go func() { done <- e.srv.Add(ctxT(t), wl("u2"), f) }()
	e.srv.Del("u1")
	z.expectNothing() // u2 and the Del wait for the first ack
	z.ack("")
	// Order of the two later requests depends on the goroutine; both come,
	// one at a time.
	seen := map[string]bool{}
	for range 2 {
		m := z.recv()
		seen[m.kind+":"+m.uid] = true
		z.expectNothing()
		z.ack("")
	}
	if !seen["add:u2"] || !seen["del:u1"] {
		t.Fatalf("got %v, want add:u2 and del:u1", seen)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnansweredRequestClosesTheSession(t *testing.T) {
	e := start(t, Options{RequestTimeout: 200 * time.Millisecond}, true)
	z := e.dial()
	z.replay()
	e.waitLive()
	f, _ := nsFile(t)
	err := e.srv.Add(ctxT(t), wl("u1"), f)
	if !errors.Is(err, ErrNotAcked) {
		t.Fatalf("Add to a silent ztunnel = %v, want ErrNotAcked", err)
	}
	// ztunnel got the add, then the agent hung up.
	if m := z.recv(); m.kind != "add" {
		t.Fatalf("got %+v", m)
	}
	if _, err := z.tryRecv(waitTimeout); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the timeout the session should be closed; recv = %v", err)
	}
	// A new connection gets the full replay, the unacked add included.
	z2 := e.dial()
	z2.replay("add:u1")
}

func TestTwoSessionsEachGetEverything(t *testing.T) {
	e := start(t, Options{}, true)
	f, _ := nsFile(t)
	_ = e.srv.Add(ctxT(t), wl("a"), f)
	old := e.dial()
	old.replay("add:a")
	e.waitLive()
	neu := e.dial()
	neu.replay("add:a")
	e.waitLive()
	if n := e.srv.Live(); n != 2 {
		t.Fatalf("Live = %d, want 2", n)
	}

	g, _ := otherFile(t)
	done := make(chan error, 1)
	go func() { done <- e.srv.Add(ctxT(t), wl("b"), g) }()
	old.expect("add", "b", "old ztunnel is draining")
	neu.expect("add", "b", "")
	if err := <-done; err != nil {
		t.Fatalf("Add with one ack and one nack: %v", err)
	}
	e.srv.Del("a")
	old.expect("del", "a", "")
	neu.expect("del", "a", "")

	// The old ztunnel leaves; the new one keeps being served.
	old.conn.Close()
	e.srv.Del("b")
	neu.expect("del", "b", "")
}

func TestReconnectReplaysCurrentState(t *testing.T) {
	e := start(t, Options{}, true)
	f, _ := nsFile(t)
	_ = e.srv.Add(ctxT(t), wl("a"), f)
	_ = e.srv.Add(ctxT(t), wl("b"), f)
	z := e.dial()
	z.replay("add:a", "add:b")
	e.waitLive()
	e.srv.Del("a")
	z.expect("del", "a", "")
	z.conn.Close()
	e.srv.Keep(wl("c"))
	z2 := e.dial()
	z2.replay("add:b", "keep:c")
}

func TestBadHelloClosesTheSession(t *testing.T) {
	e := start(t, Options{}, true)
	ctx := ctxT(t)
	c, err := zds.Dial(ctx, e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// An ack where the hello should be does not decode as a V1 hello.
	if err := c.SendAck("not a hello"); err != nil {
		t.Fatal(err)
	}
	if err := c.UnixConn().SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.RecvRequest(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after a bad hello the agent should hang up; recv = %v", err)
	}
}
