// Package zdsserver is the node agent's side of ZDS (see
// api/proto/ambit/zds/v1alpha1/zds.proto): it holds the workloads the agent
// hands to ztunnel and serves them to every connected ztunnel.
//
// The Server keeps a table of workloads, each with a duplicate of its
// netns descriptor (an Add) or without one (a Keep: the agent knows the
// pod is enrolled but cannot open its netns now). Each ztunnel connection is
// a session goroutine: it reads the hello, replays the table (AddWorkload
// with the fd, or KeepWorkload), sends SnapshotSent, then forwards every
// later Add and Del, one request in flight: send, wait for the ack (bounded
// by the request timeout, after which the session is closed), next. Several
// sessions may be connected at once (a ztunnel upgrade); each gets the full
// replay and every later request.
//
// Add returns once some session acked that exact netns for the workload,
// which is what a CNI ADD waits for.
package zdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"ambit.dev/pkg/zds"
)

// ErrNoZtunnel means no ztunnel is connected to the agent.
var ErrNoZtunnel = errors.New("no ztunnel is connected to the node agent")

// ErrNotAcked means every connected ztunnel refused the request (nack) or
// its session ended before it answered.
var ErrNotAcked = errors.New("no ztunnel acked")

// DefaultRequestTimeout bounds the answer to one request.
const DefaultRequestTimeout = 10 * time.Second

// Workload identifies the pod behind a netns.
type Workload struct {
	UID, Name, Namespace, ServiceAccount string
}

// Options configures a Server.
type Options struct {
	// RequestTimeout bounds the wait for ztunnel's answer to one request
	// (and for its hello); on expiry the session is closed (ztunnel
	// reconnects). Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Registerer, if set, receives the server's metrics.
	Registerer prometheus.Registerer
	// OnLive, if set, is called (on its own goroutine) each time a
	// session's SnapshotSent was acked, so the caller can retry what
	// failed for lack of a ztunnel.
	OnLive func()
}

// Server serves ZDS. Build it with New; Serve runs it.
type Server struct {
	log     *slog.Logger
	timeout time.Duration
	onLive  func()
	metrics *metrics

	ready     chan struct{}
	readyOnce sync.Once

	mu       sync.Mutex
	entries  map[string]*entry
	sessions map[*session]struct{}
	gen      uint64
	nextID   int
	// liveCh is closed (and replaced) whenever a session becomes live.
	liveCh chan struct{}
}

// entry is one workload of the table.
type entry struct {
	w Workload
	// f is the server's own duplicate of the netns descriptor; nil for a
	// Keep.
	f   *os.File
	key fileKey
	gen uint64
}

type fileKey struct{ dev, ino uint64 }

// New builds a Server. Sessions accepted before SetReady wait (their
// ztunnel keeps what it has) so that the first replay is complete.
func New(log *slog.Logger, opts Options) (*Server, error) {
	if log == nil {
		return nil, errors.New("zdsserver: a logger is required")
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{
		log:      log,
		timeout:  opts.RequestTimeout,
		onLive:   opts.OnLive,
		metrics:  m,
		ready:    make(chan struct{}),
		entries:  map[string]*entry{},
		sessions: map[*session]struct{}{},
		liveCh:   make(chan struct{}),
	}, nil
}

// SetReady lets sessions replay: call it once the table holds every
// workload the agent knows (an Add or a Keep for each enrolled pod), so
// that no ztunnel drops a workload at SnapshotSent only because the agent
// had not looked at it yet.
func (s *Server) SetReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// Add records w with its netns (the server keeps its own duplicate of
// netns; the caller keeps ownership of netns), sends an AddWorkload to every
// session, and waits until one session acked it. If a live session already
// acked this same netns for w, it returns at once without sending. The
// record stays, and is replayed to future sessions, whatever Add returns:
//
//   - ErrNoZtunnel: no session is connected (a later one will get it);
//   - ErrNotAcked (wrapped, with the nacks): every session nacked it or
//     ended before answering;
//   - ctx's error: no ack before ctx ended.
func (s *Server) Add(ctx context.Context, w Workload, netns *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(netns.Fd()), &st); err != nil {
		return fmt.Errorf("zdsserver: stat netns of pod %s/%s: %w", w.Namespace, w.Name, err)
	}
	key := fileKey{dev: st.Dev, ino: st.Ino}

	s.mu.Lock()
	e := s.entries[w.UID]
	if e != nil && e.f != nil && e.key == key && e.w == w {
		for sess := range s.sessions {
			if sess.live && sess.acked[w.UID] == e.gen {
				s.mu.Unlock()
				return nil
			}
		}
	} else {
		dup, err := dupFile(netns)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("zdsserver: duplicate netns descriptor of pod %s/%s: %w", w.Namespace, w.Name, err)
		}
		if e != nil && e.f != nil {
			e.f.Close()
		}
		s.gen++
		e = &entry{w: w, f: dup, key: key, gen: s.gen}
		s.entries[w.UID] = e
		s.metrics.workloads.Set(float64(len(s.entries)))
	}
	if len(s.sessions) == 0 {
		s.mu.Unlock()
		return ErrNoZtunnel
	}
	done := make(chan error, len(s.sessions))
	n := 0
	for sess := range s.sessions {
		r, err := addRequest(e, done)
		if err != nil {
			done <- err
		} else {
			sess.enqueue(r)
		}
		n++
	}
	s.mu.Unlock()

	var errs []error
	for range n {
		select {
		case err := <-done:
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		case <-ctx.Done():
			return fmt.Errorf("zdsserver: waiting for ztunnel to ack pod %s/%s: %w", w.Namespace, w.Name, ctx.Err())
		}
	}
	return fmt.Errorf("zdsserver: %w pod %s/%s: %w", ErrNotAcked, w.Namespace, w.Name, errors.Join(errs...))
}

// Keep records w as enrolled without a netns, so replays send a
// KeepWorkload for it (ztunnel keeps what it already has). It changes
// nothing if w is already recorded, and sends nothing now.
func (s *Server) Keep(w Workload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[w.UID]; ok {
		return
	}
	s.gen++
	s.entries[w.UID] = &entry{w: w, gen: s.gen}
	s.metrics.workloads.Set(float64(len(s.entries)))
}

// Has reports whether uid is recorded (as an Add or a Keep).
func (s *Server) Has(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.entries[uid]
	return ok
}

// Del forgets uid and sends a DelWorkload for it to every session, without
// waiting for the answers (they are logged). Unknown uids are ignored.
func (s *Server) Del(uid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[uid]
	if !ok {
		return
	}
	delete(s.entries, uid)
	s.metrics.workloads.Set(float64(len(s.entries)))
	if e.f != nil {
		e.f.Close()
	}
	for sess := range s.sessions {
		delete(sess.acked, uid)
		sess.enqueue(&request{kind: kindDel, w: e.w})
	}
}

// Live returns the number of sessions whose replay ztunnel acked.
func (s *Server) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for sess := range s.sessions {
		if sess.live {
			n++
		}
	}
	return n
}

// WaitLive returns once at least one session is live, or ctx's error.
func (s *Server) WaitLive(ctx context.Context) error {
	for {
		s.mu.Lock()
		live := false
		for sess := range s.sessions {
			live = live || sess.live
		}
		ch := s.liveCh
		s.mu.Unlock()
		if live {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Serve accepts ztunnel connections on l until ctx ends, then closes l and
// every session and returns once they all stopped. It sends nothing on the
// way out: ztunnel keeps serving what it has and replays on reconnect.
func (s *Server) Serve(ctx context.Context, l *zds.Listener) error {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var err error
	for {
		conn, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("zdsserver: accept on %s: %w", l.Addr(), aerr)
			}
			break
		}
		s.mu.Lock()
		s.nextID++
		id := s.nextID
		s.mu.Unlock()
		sess := newSession(s, conn, id)
		wg.Go(func() { sess.run(ctx) })
	}
	cancel()
	wg.Wait()
	s.mu.Lock()
	for _, e := range s.entries {
		if e.f != nil {
			e.f.Close()
			e.f = nil
		}
	}
	s.mu.Unlock()
	return err
}

// register adds sess and queues the replay of the table followed by
// SnapshotSent, atomically with respect to Add and Del, so each change is
// either in the replay or queued after it, never both or neither.
func (s *Server) register(sess *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var reqs []*request
	for _, uid := range slices.Sorted(maps.Keys(s.entries)) {
		e := s.entries[uid]
		if e.f == nil {
			reqs = append(reqs, &request{kind: kindKeep, w: e.w, gen: e.gen})
			continue
		}
		r, err := addRequest(e, nil)
		if err != nil {
			for _, r := range reqs {
				r.release()
			}
			return err
		}
		reqs = append(reqs, r)
	}
	reqs = append(reqs, &request{kind: kindSnapshot})
	sess.queue = reqs
	s.sessions[sess] = struct{}{}
	s.metrics.sessions.Set(float64(len(s.sessions)))
	return nil
}

// unregister removes sess; what it still had queued fails.
func (s *Server) unregister(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.metrics.sessions.Set(float64(len(s.sessions)))
	s.metrics.liveSessions.Set(float64(s.liveLocked()))
	s.mu.Unlock()
}

func (s *Server) liveLocked() int {
	n := 0
	for sess := range s.sessions {
		if sess.live {
			n++
		}
	}
	return n
}

// setLive marks sess live after its SnapshotSent was acked.
func (s *Server) setLive(sess *session) {
	s.mu.Lock()
	sess.live = true
	close(s.liveCh)
	s.liveCh = make(chan struct{})
	s.metrics.liveSessions.Set(float64(s.liveLocked()))
	s.mu.Unlock()
	if s.onLive != nil {
		go s.onLive()
	}
}

// acked records that sess acked the Add of generation gen of uid.
func (s *Server) ackedAdd(sess *session, uid string, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[uid]; ok && e.gen == gen {
		sess.acked[uid] = gen
	}
}

func addRequest(e *entry, done chan<- error) (*request, error) {
	dup, err := dupFile(e.f)
	if err != nil {
		return nil, fmt.Errorf("duplicate netns descriptor of pod %s/%s: %w", e.w.Namespace, e.w.Name, err)
	}
	return &request{kind: kindAdd, w: e.w, f: dup, gen: e.gen, done: done}, nil
}

func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// Acked reports whether a live session acked uid's current netns.
func (s *Server) Acked(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[uid]
	if !ok || e.f == nil {
		return false
	}
	for sess := range s.sessions {
		if sess.live && sess.acked[uid] == e.gen {
			return true
		}
	}
	return false
}
