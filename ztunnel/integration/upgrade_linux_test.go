package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ambit.dev/ztunnel/internal/testtopo"
)

// clientLoop runs `loopWorkers` goroutines that each open short
// connections from pod to dst back to back until stopped, counting
// successes and keeping the failures.
type clientLoop struct {
	name     string
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
	stop     chan struct{}
	done     chan struct{}
}

func (m *mesh) startLoop(name string, pod *testtopo.Pod, dst netip.AddrPort) *clientLoop {
	l := &clientLoop{name: name, stop: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	for w := range loopWorkers {
		wg.Go(func() { l.run(m, w, pod, dst) })
	}
	go func() {
		wg.Wait()
		close(l.done)
	}()
	return l
}

// loopWorkers is the number of concurrent clients per loop: several, so
// that connections are in every state (queued, handshaking, streaming)
// when the old ztunnel closes its listeners.
const loopWorkers = 4

func (l *clientLoop) run(m *mesh, worker int, pod *testtopo.Pod, dst netip.AddrPort) {
	{
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			got, sent, err := m.sendSHA(ctx, pod, dst, 4<<10)
			cancel()
			switch {
			case err != nil:
				l.fail(fmt.Sprintf("worker %d connection %d: %v", worker, i, err))
			case got.Sum != sent || got.ClientIP != pod.IP:
				l.fail(fmt.Sprintf("worker %d connection %d: app saw %s/%s, want %s/%s", worker, i, got.ClientIP, got.Sum, pod.IP, sent))
			default:
				l.ok.Add(1)
			}
		}
	}
}

func (l *clientLoop) fail(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, s)
}

func (l *clientLoop) halt() {
	close(l.stop)
	<-l.done
}

// waitProgress waits until the loop has n more successes than now.
func (l *clientLoop) waitProgress(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	waitFor(t, 60*time.Second, func() bool { return l.ok.Load() >= target },
		"%s: stuck at %d successful connections (want %d); failures: %v", l.name, l.ok.Load(), target, l.failuresCopy())
}

func (l *clientLoop) failuresCopy() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.failures...)
}

func TestPrivilegedUpgradeHandover(t *testing.T) {
	const drain = 30 * time.Second
	m, r := standardMesh(t, drain)
	node2 := r.strict.Node
	old := m.zt[node2]
	m.startApp(r.strict, 8080, shaApp)
	m.startApp(r.strict, 9090, echoApp)
	m.startApp(r.api, 8080, shaApp)

	// A long connection through the old ztunnel (inbound side on node2).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	long, err := m.dial(ctx, r.client, netip.AddrPortFrom(r.strict.IP, 9090))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	long.SetDeadline(time.Now().Add(2 * time.Minute))
	var echoed int
	exchange := func(i int) {
		t.Helper()
		msg := []byte(fmt.Sprintf("message %04d through the draining ztunnel\n", i))
		if _, err := long.Write(msg); err != nil {
			t.Fatalf("long connection write %d: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(long, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("long connection echo %d = %q, %v", i, got, err)
		}
		echoed++
	}
	exchange(0)

	// New connections across the handover, in both directions of node2:
	// inbound (node1 client -> node2 pod) and outbound (node2 pod -> node1).
	in := m.startLoop("node1 client -> node2 pod (inbound handover)", r.client, netip.AddrPortFrom(r.strict.IP, 8080))
	out := m.startLoop("node2 pod -> node1 pod (outbound handover)", r.web, netip.AddrPortFrom(r.api.IP, 8080))
	loops := []*clientLoop{in, out}
	halted := false
	haltAll := func() {
		if !halted {
			halted = true
			for _, l := range loops {
				l.halt()
			}
		}
	}
	defer haltAll()
	for _, l := range loops {
		l.waitProgress(t, 20)
	}

	// The new ztunnel binds the same pod ports next to the old one.
	nu := m.startZtunnel(node2, 100, drain)
	for _, l := range loops {
		l.waitProgress(t, 20)
	}
	exchange(1)

	if err := old.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The old ztunnel stops being ready, and new connections keep working.
	waitFor(t, 10*time.Second, func() bool {
		code, _, err := m.get(node2, fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", old.rdy))
		return err != nil || code != 200
	}, "old ztunnel still ready after SIGTERM")
	for _, l := range loops {
		l.waitProgress(t, 50)
	}
	// The established connection keeps flowing through the draining one.
	for i := 2; i < 20; i++ {
		exchange(i)
		time.Sleep(50 * time.Millisecond)
	}
	if old.proc.Exited() {
		t.Fatalf("old ztunnel exited while a connection through it was open:\n%s", tail(old.proc.Output(), 3000))
	}
	long.CloseWrite()
	if rest, err := io.ReadAll(long); err != nil || len(rest) != 0 {
		t.Fatalf("long connection end: %q, %v", rest, err)
	}
	long.Close()

	// With its last connection done, the old ztunnel exits cleanly, well
	// within the drain period.
	if err := old.proc.Wait(drain + 10*time.Second); err != nil {
		t.Fatalf("old ztunnel exit: %v\n%s", err, tail(old.proc.Output(), 3000))
	}
	for _, l := range loops {
		l.waitProgress(t, 20)
	}
	haltAll()
	for _, l := range loops {
		if f := l.failuresCopy(); len(f) > 0 {
			t.Errorf("%s: %d of %d connections failed across the handover; first: %v\nztunnel log lines about failures:\n%s",
				l.name, len(f), int64(len(f))+l.ok.Load(), f[:min(len(f), 5)], failureLines(m.zt[r.client.Node], old, nu))
		} else {
			t.Logf("%s: %d connections, 0 failures", l.name, l.ok.Load())
		}
	}
	t.Logf("long connection: %d echoes, the last ones after SIGTERM", echoed)
	if nu.proc.Exited() {
		t.Fatalf("new ztunnel exited: %v", nu.proc.Err())
	}
}

// failureLines returns the log lines of the ztunnels that report a failure
// or a refusal (at most 40 per process), to tell a failed handover's cause.
func failureLines(zts ...*ztunnel) string {
	var b strings.Builder
	for _, z := range zts {
		n := 0
		for line := range strings.Lines(z.proc.Output()) {
			if n < 40 && (strings.Contains(line, "fail") || strings.Contains(line, "refus") || strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) {
				fmt.Fprintf(&b, "%s: %s", z.node.Name, line)
				n++
			}
		}
	}
	return b.String()
}
