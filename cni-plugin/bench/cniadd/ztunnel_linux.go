package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/zds"
)

// ztunnelPorts are the listeners ztunnel opens in every pod it is handed:
// outbound, inbound plaintext, HBONE.
var ztunnelPorts = []int{15001, 15006, 15008}

// ztunnel is the ztunnel side of ZDS, doing on AddWorkload what ztunnel
// does before it acks: enter the pod's netns and listen on its three ports
// there (plain bind + listen; the real one also sets SO_REUSEPORT and its
// mark). DelWorkload closes them.
type ztunnel struct {
	conn *zds.Conn
	live chan struct{}
	done chan struct{}

	mu        sync.Mutex
	listeners map[string][]net.Listener // by pod uid
	handled   []time.Duration           // per AddWorkload: receive to ack
	err       error
	closed    bool
}

// dialZtunnel connects to the agent's ZDS socket and serves until close.
func dialZtunnel(ctx context.Context, path string) (*ztunnel, error) {
	c, err := zds.Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := c.SendHello(); err != nil {
		c.Close()
		return nil, fmt.Errorf("ztunnel: send hello: %w", err)
	}
	z := &ztunnel{conn: c, live: make(chan struct{}), done: make(chan struct{}), listeners: map[string][]net.Listener{}}
	go z.serve()
	return z, nil
}

// waitLive returns once the agent's snapshot was acked.
func (z *ztunnel) waitLive(ctx context.Context) error {
	select {
	case <-z.live:
		return nil
	case <-z.done:
		return fmt.Errorf("ztunnel: the agent closed the ZDS connection before its snapshot: %w", z.failure())
	case <-ctx.Done():
		return fmt.Errorf("ztunnel: no snapshot from the agent: %w", ctx.Err())
	}
}

func (z *ztunnel) serve() {
	defer close(z.done)
	var liveOnce sync.Once
	for {
		req, fds, err := z.conn.RecvRequest()
		if err != nil {
			closeFiles(fds)
			z.setErr(fmt.Errorf("ztunnel: read request: %w", err))
			return
		}
		start := time.Now()
		var nack string
		switch p := req.GetPayload().(type) {
		case *zdsv1alpha1.WorkloadRequest_Add:
			nack = z.add(p.Add.GetUid(), fds)
		case *zdsv1alpha1.WorkloadRequest_Del:
			z.drop(p.Del.GetUid())
		case *zdsv1alpha1.WorkloadRequest_SnapshotSent:
			liveOnce.Do(func() { close(z.live) })
		}
		closeFiles(fds)
		err = z.conn.SendAck(nack)
		if _, ok := req.GetPayload().(*zdsv1alpha1.WorkloadRequest_Add); ok && nack == "" {
			z.mu.Lock()
			z.handled = append(z.handled, time.Since(start))
			z.mu.Unlock()
		}
		if err != nil {
			z.setErr(fmt.Errorf("ztunnel: send ack: %w", err))
			return
		}
	}
}

// add listens on the ports in the received netns; the answer is the nack
// ("" acks).
func (z *ztunnel) add(uid string, fds []*os.File) string {
	if len(fds) != 1 {
		return fmt.Sprintf("AddWorkload of %s carried %d descriptors, want 1", uid, len(fds))
	}
	ls, err := listenIn(fds[0])
	if err != nil {
		return err.Error()
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	closeListeners(z.listeners[uid])
	z.listeners[uid] = ls
	return ""
}

func (z *ztunnel) drop(uid string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	closeListeners(z.listeners[uid])
	delete(z.listeners, uid)
}

// listenIn listens on ztunnelPorts in the netns f, from a thread that
// enters it and comes back (or, if it cannot come back, is discarded).
func listenIn(f *os.File) ([]net.Listener, error) {
	type result struct {
		ls  []net.Listener
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("get own netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(netns.NsHandle(int(f.Fd()))); err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("enter the pod netns: %w", err)}
			return
		}
		var r result
		for _, p := range ztunnelPorts {
			l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
			if err != nil {
				r.err = fmt.Errorf("listen on :%d in the pod netns: %w", p, err)
				break
			}
			r.ls = append(r.ls, l)
		}
		if r.err != nil {
			closeListeners(r.ls)
			r.ls = nil
		}
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			closeListeners(r.ls)
			resc <- result{err: errors.Join(r.err, fmt.Errorf("return from the pod netns: %w", err))}
			return
		}
		runtime.UnlockOSThread()
		resc <- r
	}()
	r := <-resc
	return r.ls, r.err
}

// holds reports whether the listeners of pod uid are open.
func (z *ztunnel) holds(uid string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return len(z.listeners[uid]) == len(ztunnelPorts)
}

// held returns the number of pods whose listeners are open.
func (z *ztunnel) held() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return len(z.listeners)
}

// handleTimes returns the time of each acked AddWorkload from receive to
// ack.
func (z *ztunnel) handleTimes() []time.Duration {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]time.Duration(nil), z.handled...)
}

func (z *ztunnel) setErr(err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if !z.closed && z.err == nil {
		z.err = err
	}
}

func (z *ztunnel) failure() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.err
}

// close disconnects, closes every listener and returns the error that
// ended the session early, if any.
func (z *ztunnel) close() error {
	z.mu.Lock()
	z.closed = true
	z.mu.Unlock()
	z.conn.Close()
	<-z.done
	z.mu.Lock()
	defer z.mu.Unlock()
	for uid, ls := range z.listeners {
		closeListeners(ls)
		delete(z.listeners, uid)
	}
	return z.err
}

func closeListeners(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
