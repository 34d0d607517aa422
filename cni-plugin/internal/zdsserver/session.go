package zdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/zds"
)

type kind int

const (
	kindAdd kind = iota
	kindKeep
	kindDel
	kindSnapshot
)

func (k kind) String() string {
	return [...]string{"add", "keep", "del", "snapshot_sent"}[k]
}

// request is one WorkloadRequest queued for a session.
type request struct {
	kind kind
	w    Workload
	// f is this request's own duplicate of the netns (kindAdd); the
	// session closes it once sent or dropped.
	f   *os.File
	gen uint64
	// done, if set, receives the outcome: nil for an ack.
	done chan<- error
}

func (r *request) release() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

func (r *request) finish(err error) {
	r.release()
	if r.done != nil {
		r.done <- err
	}
}

func (r *request) proto() *zdsv1alpha1.WorkloadRequest {
	switch r.kind {
	case kindAdd:
		return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Add{Add: &zdsv1alpha1.AddWorkload{
			Uid: r.w.UID,
			WorkloadInfo: &zdsv1alpha1.WorkloadInfo{
				Name: r.w.Name, Namespace: r.w.Namespace, ServiceAccount: r.w.ServiceAccount,
			},
		}}}
	case kindKeep:
		return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Keep{Keep: &zdsv1alpha1.KeepWorkload{Uid: r.w.UID}}}
	case kindDel:
		return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_Del{Del: &zdsv1alpha1.DelWorkload{Uid: r.w.UID}}}
	default:
		return &zdsv1alpha1.WorkloadRequest{Payload: &zdsv1alpha1.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsv1alpha1.SnapshotSent{}}}
	}
}

// session is one ztunnel connection. Its fields below mu are guarded by
// the server's mutex (live, acked) or by mu (queue, closed).
type session struct {
	srv  *Server
	conn *zds.Conn
	log  *slog.Logger

	// Guarded by srv.mu.
	live  bool
	acked map[string]uint64

	mu     sync.Mutex
	queue  []*request
	closed bool
	wake   chan struct{}
}

func newSession(srv *Server, conn *zds.Conn, id int) *session {
	return &session{
		srv: srv, conn: conn,
		log:   srv.log.With("session", id),
		acked: map[string]uint64{},
		wake:  make(chan struct{}, 1),
	}
}

// enqueue appends r; after the session closed, r fails at once. Callers
// may hold srv.mu.
func (s *session) enqueue(r *request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		r.finish(errSessionClosed)
		return
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

var errSessionClosed = errors.New("the ztunnel session ended before it answered")

// ack is one answer read from ztunnel.
type ack struct {
	nack string
	err  error
}

// run serves the connection until it fails or ctx ends.
func (s *session) run(ctx context.Context) {
	s.srv.metrics.connections.Inc()
	defer s.conn.Close()
	err := s.serve(ctx)
	s.srv.unregister(s)
	s.mu.Lock()
	s.closed = true
	q := s.queue
	s.queue = nil
	s.mu.Unlock()
	for _, r := range q {
		r.finish(errSessionClosed)
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("ztunnel session ended; ztunnel reconnects and gets a full replay", "error", err)
	} else {
		s.log.Info("ztunnel session closed")
	}
}

func (s *session) serve(ctx context.Context) error {
	// Close the connection when ctx ends, to unblock reads.
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()

	if err := s.conn.UnixConn().SetReadDeadline(time.Now().Add(s.srv.timeout)); err != nil {
		return err
	}
	if err := s.conn.RecvHello(); err != nil {
		return fmt.Errorf("no valid hello within %s: %w", s.srv.timeout, err)
	}
	if err := s.conn.UnixConn().SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	s.log.Info("ztunnel connected")

	// Read every answer on its own goroutine, so a ztunnel that goes away
	// while nothing is in flight is noticed at once.
	acks := make(chan ack, 1)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer s.conn.Close()
	defer close(quit)
	wg.Go(func() {
		for {
			nack, err := s.conn.RecvAck()
			select {
			case acks <- ack{nack: nack, err: err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	})

	select {
	case <-s.srv.ready:
	case <-ctx.Done():
		return nil
	case a := <-acks:
		return unexpected(a)
	}
	if err := s.srv.register(s); err != nil {
		return err
	}
	s.log.Debug("replaying workloads")

	timer := time.NewTimer(s.srv.timeout)
	timer.Stop()
	for {
		r := s.next()
		if r == nil {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return nil
			case a := <-acks:
				return unexpected(a)
			}
		}
		if err := s.conn.SendRequest(r.proto(), r.f); err != nil {
			s.srv.metrics.requests.WithLabelValues(r.kind.String(), "error").Inc()
			r.finish(errSessionClosed)
			return fmt.Errorf("sending %s for uid %q: %w", r.kind, r.w.UID, err)
		}
		r.release() // the kernel holds its own reference now
		timer.Reset(s.srv.timeout)
		var a ack
		select {
		case a = <-acks:
			timer.Stop()
		case <-timer.C:
			s.srv.metrics.requests.WithLabelValues(r.kind.String(), "timeout").Inc()
			r.finish(errSessionClosed)
			return fmt.Errorf("ztunnel did not answer %s for uid %q within %s (is it stuck? check its logs)", r.kind, r.w.UID, s.srv.timeout)
		case <-ctx.Done():
			r.finish(errSessionClosed)
			return nil
		}
		if a.err != nil {
			s.srv.metrics.requests.WithLabelValues(r.kind.String(), "error").Inc()
			r.finish(errSessionClosed)
			return fmt.Errorf("reading the answer to %s for uid %q: %w", r.kind, r.w.UID, a.err)
		}
		if err := s.answered(r, a.nack); err != nil {
			return err
		}
	}
}

// answered handles ztunnel's answer to r.
func (s *session) answered(r *request, nack string) error {
	if nack != "" {
		s.srv.metrics.requests.WithLabelValues(r.kind.String(), "nack").Inc()
		s.log.Warn("ztunnel refused a request", "request", r.kind.String(), "uid", r.w.UID,
			"pod", r.w.Namespace+"/"+r.w.Name, "nack", nack)
		r.finish(fmt.Errorf("ztunnel refused %s: %s", r.kind, nack))
		if r.kind == kindSnapshot {
			return fmt.Errorf("ztunnel refused SnapshotSent: %s", nack)
		}
		return nil
	}
	s.srv.metrics.requests.WithLabelValues(r.kind.String(), "ack").Inc()
	switch r.kind {
	case kindAdd:
		s.srv.ackedAdd(s, r.w.UID, r.gen)
		s.log.Debug("ztunnel acked workload", "uid", r.w.UID, "pod", r.w.Namespace+"/"+r.w.Name)
	case kindDel:
		s.srv.mu.Lock()
		if _, ok := s.srv.entries[r.w.UID]; !ok {
			delete(s.acked, r.w.UID)
		}
		s.srv.mu.Unlock()
	case kindSnapshot:
		s.srv.setLive(s)
		s.log.Info("ztunnel acked the replay")
	}
	r.finish(nil)
	return nil
}

func (s *session) next() *request {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	r := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	return r
}

func unexpected(a ack) error {
	if a.err != nil {
		return fmt.Errorf("connection: %w", a.err)
	}
	return errors.New("ztunnel sent an answer while no request was in flight (protocol error)")
}
