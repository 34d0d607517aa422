package zds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	pkgzds "ambit.dev/pkg/zds"
	"ambit.dev/ztunnel/internal/socket"
)

func addReq(uid string) *zdsv1alpha1.WorkloadRequest {
	return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Add{Add: &zdsv1alpha1.AddWorkload{
		Uid: uid, WorkloadInfo: &zdsv1alpha1.WorkloadInfo{Name: "web-" + uid, Namespace: "demo", ServiceAccount: "web"}}}}
}

func keepReq(uid string) *zdsv1alpha1.WorkloadRequest {
	return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Keep{Keep: &zdsv1alpha1.KeepWorkload{Uid: uid}}}
}

func delReq(uid string) *zdsv1alpha1.WorkloadRequest {
	return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Del{Del: &zdsv1alpha1.DelWorkload{Uid: uid}}}
}

func snapshotReq() *zdsv1alpha1.WorkloadRequest {
	return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsv1alpha1.SnapshotSent{}}}
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name         string
		req          *zdsv1alpha1.WorkloadRequest
		fds          int
		snapshotDone bool
		want         opKind
		uid          string
		nackHas      string
	}{
		{name: "add with one fd", req: addReq("a"), fds: 1, want: opAdd, uid: "a"},
		{name: "add with one fd after the snapshot", req: addReq("a"), fds: 1, snapshotDone: true, want: opAdd, uid: "a"},
		{name: "add without fd", req: addReq("a"), fds: 0, want: opNack, nackHas: "carries 0 file descriptors"},
		{name: "add with two fds", req: addReq("a"), fds: 2, want: opNack, nackHas: "exactly one"},
		{name: "add without uid", req: addReq(""), fds: 1, want: opNack, nackHas: "without a uid"},
		{name: "keep during the replay", req: keepReq("a"), want: opKeep, uid: "a"},
		{name: "keep after the snapshot", req: keepReq("a"), snapshotDone: true, want: opNack, nackHas: "after SnapshotSent"},
		{name: "keep with an fd", req: keepReq("a"), fds: 1, want: opNack, nackHas: "must carry none"},
		{name: "keep without uid", req: keepReq(""), want: opNack, nackHas: "without a uid"},
		{name: "del during the replay", req: delReq("a"), want: opDel, uid: "a"},
		{name: "del after the snapshot", req: delReq("a"), snapshotDone: true, want: opDel, uid: "a"},
		{name: "del with an fd", req: delReq("a"), fds: 1, want: opNack, nackHas: "must carry none"},
		{name: "del without uid", req: delReq(""), want: opNack, nackHas: "without a uid"},
		{name: "snapshot", req: snapshotReq(), want: opSnapshot},
		{name: "second snapshot", req: snapshotReq(), snapshotDone: true, want: opNack, nackHas: "twice"},
		{name: "snapshot with an fd", req: snapshotReq(), fds: 1, want: opNack, nackHas: "must carry none"},
		{name: "empty request", req: &zdsv1alpha1.WorkloadRequest{}, want: opNack, nackHas: "empty WorkloadRequest"},
		{name: "empty request with an fd", req: &zdsv1alpha1.WorkloadRequest{}, fds: 1, want: opNack, nackHas: "empty WorkloadRequest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := decide(tc.req, tc.fds, tc.snapshotDone)
			if got.kind != tc.want || got.uid != tc.uid {
				t.Fatalf("decide = %+v, want kind %d uid %q", got, tc.want, tc.uid)
			}
			if (got.nack != "") != (tc.want == opNack) || !strings.Contains(got.nack, tc.nackHas) {
				t.Fatalf("nack %q, want one containing %q", got.nack, tc.nackHas)
			}
		})
	}
}

// fakeManager records pods in memory; the Netns handles it is given are
// real (tests send /proc/self/ns/net).
type fakeManager struct {
	mu       sync.Mutex
	pods     map[string]*socket.Netns // nil value: a pod preloaded by the test
	failAdd  map[string]error
	rejected []*socket.Netns // handles of failed AddPod calls
}

func newFakeManager(preloaded ...string) *fakeManager {
	f := &fakeManager{pods: map[string]*socket.Netns{}, failAdd: map[string]error{}}
	for _, uid := range preloaded {
		f.pods[uid] = nil
	}
	return f
}

func (f *fakeManager) AddPod(uid string, ns *socket.Netns) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failAdd[uid]; err != nil {
		f.rejected = append(f.rejected, ns)
		return err
	}
	if old := f.pods[uid]; old != nil {
		old.Close()
	}
	f.pods[uid] = ns
	return nil
}

func (f *fakeManager) RemovePod(uid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ns := f.pods[uid]; ns != nil {
		ns.Close()
	}
	delete(f.pods, uid)
	return nil
}

func (f *fakeManager) Pods() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for uid := range f.pods {
		out = append(out, uid)
	}
	slices.Sort(out)
	return out
}

func (f *fakeManager) has(uids ...string) bool { return slices.Equal(f.Pods(), uids) }

func (f *fakeManager) closeAll() {
	for _, uid := range f.Pods() {
		f.RemovePod(uid)
	}
}

// harness runs a Client against a socket in a temp dir; the test plays the
// node agent.
type harness struct {
	t      *testing.T
	path   string
	l      *pkgzds.Listener
	mgr    *fakeManager
	client *Client
}

func startClient(t *testing.T, mgr *fakeManager, listen bool) *harness {
	t.Helper()
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "ztunnel.sock"), mgr: mgr}
	if listen {
		h.listen()
	}
	var err error
	h.client, err = New(Config{Path: h.path, Manager: mgr, RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.client.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		if h.l != nil {
			h.l.Close()
		}
		mgr.closeAll()
	})
	return h
}

func (h *harness) listen() {
	h.t.Helper()
	l, err := pkgzds.Listen(h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	h.l = l
}

// accept waits (bounded) for the client's next connection and reads its
// hello.
func (h *harness) accept() *pkgzds.Conn {
	h.t.Helper()
	type result struct {
		c   *pkgzds.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := h.l.Accept()
		ch <- result{c, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(10 * time.Second):
		h.l.Close()
		<-ch
		h.t.Fatal("ztunnel did not connect within 10s")
	}
	if r.err != nil {
		h.t.Fatal(r.err)
	}
	h.t.Cleanup(func() { r.c.Close() })
	r.c.UnixConn().SetDeadline(time.Now().Add(30 * time.Second))
	if err := r.c.RecvHello(); err != nil {
		h.t.Fatalf("hello: %v", err)
	}
	return r.c
}

// call sends one request with the given descriptors and returns the nack.
func call(t *testing.T, c *pkgzds.Conn, req *zdsv1alpha1.WorkloadRequest, files ...*os.File) string {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return callRaw(t, c, b, files...)
}

// callRaw sends one datagram with the given descriptors and returns the
// nack.
func callRaw(t *testing.T, c *pkgzds.Conn, b []byte, files ...*os.File) string {
	t.Helper()
	var fds []int
	for _, f := range files {
		fds = append(fds, int(f.Fd()))
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.UnixConn().WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatal(err)
	}
	nack, err := c.RecvAck()
	if err != nil {
		t.Fatalf("waiting for the ack: %v", err)
	}
	return nack
}

func openNetns(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// pipe returns a pipe whose write end the test sends to ztunnel; eof
// checks ztunnel closed its copy (the read end sees EOF once every copy of
// the write end is closed).
func pipe(t *testing.T) (w *os.File, eof func()) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return w, func() {
		t.Helper()
		w.Close()
		r.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := r.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("ztunnel kept the received descriptor open (read = %d, %v)", n, err)
		}
	}
}

func TestClientExchange(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after the client stopped
	mgr := newFakeManager("stale", "kept", "readded")
	mgr.failAdd["bad"] = errors.New("cannot bind 15008 in netns of pod demo/web-bad: address in use")
	h := startClient(t, mgr, true)
	c := h.accept()

	if err := h.client.Ready(); err == nil || !strings.Contains(err.Error(), "waiting for the node agent's snapshot on "+h.path) {
		t.Fatalf("Ready before the snapshot = %v", err)
	}
	t.Run("add with one netns fd is acked after AddPod", func(t *testing.T) {
		if nack := call(t, c, addReq("a"), openNetns(t)); nack != "" {
			t.Fatalf("nack %q", nack)
		}
		if !slices.Contains(mgr.Pods(), "a") {
			t.Fatalf("acked before AddPod: pods %v", mgr.Pods())
		}
	})
	t.Run("add of a known uid is acked", func(t *testing.T) {
		if nack := call(t, c, addReq("readded"), openNetns(t)); nack != "" {
			t.Fatalf("nack %q", nack)
		}
	})
	t.Run("add without fd", func(t *testing.T) {
		if nack := call(t, c, addReq("b")); !strings.Contains(nack, "exactly one") {
			t.Fatalf("nack %q", nack)
		}
	})
	t.Run("add with two fds closes both", func(t *testing.T) {
		w1, eof1 := pipe(t)
		w2, eof2 := pipe(t)
		if nack := call(t, c, addReq("b"), w1, w2); !strings.Contains(nack, "carries 2 file descriptors") {
			t.Fatalf("nack %q", nack)
		}
		eof1()
		eof2()
	})
	t.Run("add with a descriptor that is no netns", func(t *testing.T) {
		w, eof := pipe(t)
		if nack := call(t, c, addReq("b"), w); !strings.Contains(nack, "not a usable network namespace") {
			t.Fatalf("nack %q", nack)
		}
		eof()
	})
	t.Run("add that the manager refuses", func(t *testing.T) {
		if nack := call(t, c, addReq("bad"), openNetns(t)); nack != mgr.failAdd["bad"].Error() {
			t.Fatalf("nack %q, want the manager's error", nack)
		}
		// Whether its netns handle was closed is checked after the
		// snapshot: the client's next call into the manager orders the
		// close before the check for the race detector.
	})
	if !mgr.has("a", "kept", "readded", "stale") {
		t.Fatalf("pods before the snapshot %v", mgr.Pods())
	}
	t.Run("keep of an unknown uid is acked", func(t *testing.T) {
		if nack := call(t, c, keepReq("unknown")); nack != "" {
			t.Fatalf("nack %q", nack)
		}
	})
	t.Run("keep with an fd closes it", func(t *testing.T) {
		w, eof := pipe(t)
		if nack := call(t, c, keepReq("kept"), w); nack == "" {
			t.Fatal("acked")
		}
		eof()
	})
	t.Run("keep", func(t *testing.T) {
		if nack := call(t, c, keepReq("kept")); nack != "" {
			t.Fatalf("nack %q", nack)
		}
	})
	t.Run("empty request", func(t *testing.T) {
		// A zero-byte datagram reads as the end of the connection (see
		// TestClientProtocolErrors), so an empty request reaches ztunnel
		// only with fields it does not know (from a newer agent).
		unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)
		if nack := callRaw(t, c, unknown); !strings.Contains(nack, "empty") {
			t.Fatalf("nack %q", nack)
		}
	})
	t.Run("snapshot releases what the connection did not name", func(t *testing.T) {
		if nack := call(t, c, snapshotReq()); nack != "" {
			t.Fatalf("nack %q", nack)
		}
		if !mgr.has("a", "kept", "readded") {
			t.Fatalf("pods after the snapshot %v, want a, kept, readded", mgr.Pods())
		}
		if err := h.client.Ready(); err != nil {
			t.Fatalf("Ready after the snapshot = %v", err)
		}
		mgr.mu.Lock()
		defer mgr.mu.Unlock()
		if len(mgr.rejected) != 1 || mgr.rejected[0].Fd() != -1 {
			t.Fatal("the netns handle of a failed AddPod was not closed")
		}
	})
	t.Run("keep after the snapshot", func(t *testing.T) {
		if nack := call(t, c, keepReq("kept")); !strings.Contains(nack, "after SnapshotSent") {
			t.Fatalf("nack %q", nack)
		}
	})
	t.Run("second snapshot", func(t *testing.T) {
		if nack := call(t, c, snapshotReq()); nack == "" {
			t.Fatal("acked")
		}
		if !mgr.has("a", "kept", "readded") {
			t.Fatalf("pods %v", mgr.Pods())
		}
	})
	t.Run("add after the snapshot", func(t *testing.T) {
		if nack := call(t, c, addReq("c"), openNetns(t)); nack != "" || !mgr.has("a", "c", "kept", "readded") {
			t.Fatalf("nack %q, pods %v", nack, mgr.Pods())
		}
	})
	t.Run("del is idempotent", func(t *testing.T) {
		for i := range 2 {
			if nack := call(t, c, delReq("a")); nack != "" {
				t.Fatalf("del #%d: nack %q", i+1, nack)
			}
		}
		if nack := call(t, c, delReq("never-seen")); nack != "" {
			t.Fatalf("del of an unknown uid: nack %q", nack)
		}
		if !mgr.has("c", "kept", "readded") {
			t.Fatalf("pods %v", mgr.Pods())
		}
	})
}

// TestClientReconnect: the agent goes away; the pods stay; the agent's
// replay on the next connection releases what it no longer names.
func TestClientReconnect(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after the client stopped
	mgr := newFakeManager()
	h := startClient(t, mgr, true)
	c1 := h.accept()
	for _, uid := range []string{"a", "b", "c"} {
		if nack := call(t, c1, addReq(uid), openNetns(t)); nack != "" {
			t.Fatalf("add %s: nack %q", uid, nack)
		}
	}
	if nack := call(t, c1, snapshotReq()); nack != "" {
		t.Fatalf("snapshot: nack %q", nack)
	}
	c1.Close()

	c2 := h.accept()
	// The client saw the loss (it reconnected) and kept every pod.
	if !mgr.has("a", "b", "c") {
		t.Fatalf("pods after the agent went away: %v", mgr.Pods())
	}
	if err := h.client.Ready(); err != nil {
		t.Fatalf("Ready after a reconnect = %v, want it kept", err)
	}
	if nack := call(t, c2, addReq("a"), openNetns(t)); nack != "" {
		t.Fatalf("replayed add: nack %q", nack)
	}
	if nack := call(t, c2, keepReq("b")); nack != "" {
		t.Fatalf("keep: nack %q", nack)
	}
	if !mgr.has("a", "b", "c") {
		t.Fatalf("pods during the replay: %v", mgr.Pods())
	}
	if nack := call(t, c2, snapshotReq()); nack != "" {
		t.Fatalf("snapshot: nack %q", nack)
	}
	if !mgr.has("a", "b") {
		t.Fatalf("pods after the second snapshot: %v, want a, b", mgr.Pods())
	}
}

// TestClientProtocolErrors: a datagram that does not decode or is
// truncated ends the connection; the client reconnects and keeps its pods.
func TestClientProtocolErrors(t *testing.T) {
	cases := []struct {
		name    string
		payload []byte
		withFD  bool
	}{
		{name: "does not decode", payload: []byte{0xff, 0xff, 0xff}},
		{name: "does not decode, with a descriptor", payload: []byte{0xff, 0xff, 0xff}, withFD: true},
		// SOCK_SEQPACKET cannot tell a zero-byte datagram from the end of
		// the connection.
		{name: "zero bytes with a descriptor", payload: nil, withFD: true},
		{name: "truncated (over the 4096-byte limit)", payload: func() []byte {
			b, err := proto.Marshal(addReq(strings.Repeat("x", pkgzds.MaxMessage)))
			if err != nil {
				panic(err)
			}
			return b
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after the client stopped
			mgr := newFakeManager("a")
			h := startClient(t, mgr, true)
			c := h.accept()
			var oob []byte
			eof := func() {}
			if tc.withFD {
				var w *os.File
				w, eof = pipe(t)
				oob = unix.UnixRights(int(w.Fd()))
			}
			if _, _, err := c.UnixConn().WriteMsgUnix(tc.payload, oob, nil); err != nil {
				t.Fatal(err)
			}
			if nack, err := c.RecvAck(); err == nil {
				t.Fatalf("ztunnel answered a bad datagram (nack %q) instead of closing the connection", nack)
			}
			eof()
			c2 := h.accept()
			if !mgr.has("a") {
				t.Fatalf("pods %v", mgr.Pods())
			}
			if nack := call(t, c2, snapshotReq()); nack != "" {
				t.Fatalf("snapshot on the new connection: nack %q", nack)
			}
			if !mgr.has() {
				t.Fatalf("pods %v, want none", mgr.Pods())
			}
		})
	}
}

// TestClientWaitsForAgent: ztunnel starts before the agent listens; it
// says why it is not ready and connects once the socket exists.
func TestClientWaitsForAgent(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs after the client stopped
	h := startClient(t, newFakeManager(), false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := h.client.Ready()
		if err != nil && strings.Contains(err.Error(), "last error") {
			if !strings.Contains(err.Error(), "is ambit-node-agent running") {
				t.Fatalf("Ready = %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready = %v, want the connect error", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.listen()
	c := h.accept()
	if err := h.client.Ready(); err == nil || !strings.Contains(err.Error(), "replay in progress") {
		t.Fatalf("Ready while connected = %v", err)
	}
	if nack := call(t, c, snapshotReq()); nack != "" {
		t.Fatalf("nack %q", nack)
	}
	if err := h.client.Ready(); err != nil {
		t.Fatal(err)
	}
}

func TestNewErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no path":    {Manager: newFakeManager()},
		"no manager": {Path: "/x"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(cfg); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}
