// Package zds is ztunnel's side of ZDS, the protocol by which the node agent
// hands ztunnel the network namespaces of the enrolled pods of its node
// (api/proto/ambit/zds/v1alpha1/zds.proto; transport in ambit.dev/pkg/zds).
//
// The Client connects to the agent's socket, says hello, and serves the
// agent's requests one at a time, answering each with exactly one ack, in
// order: AddWorkload captures the pod in the netns it carries,
// KeepWorkload (during the replay) keeps a pod captured, SnapshotSent ends
// the replay and releases every pod the connection did not name,
// DelWorkload releases a pod. When the connection breaks, every captured
// pod keeps being served and the Client reconnects with capped, jittered
// exponential backoff; the agent's replay on the new connection then
// brings ztunnel back in line.
package zds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	zdsv1alpha1 "ambit.dev/api/zds/v1alpha1"
	"ambit.dev/pkg/reconnect"
	pkgzds "ambit.dev/pkg/zds"
	"ambit.dev/ztunnel/internal/socket"
)

// Default reconnect backoff bounds.
const (
	DefaultRetryBase = 100 * time.Millisecond
	DefaultRetryMax  = 5 * time.Second
)

// Manager is what the Client drives: ztunnel's in-pod listeners
// (inpod.Manager).
type Manager interface {
	// AddPod serves the pod uid in ns, and owns ns once it returns nil. It
	// returns after the pod's listeners are bound. A uid already served is
	// moved to ns, or kept if ns is the netns it is served in.
	AddPod(uid string, ns *socket.Netns) error
	// RemovePod stops serving the pod; an unknown uid is not an error.
	RemovePod(uid string) error
	// Pods lists the uids served now.
	Pods() []string
}

// Config configures a Client. Path and Manager are required.
type Config struct {
	// Path is the node agent's ZDS socket.
	Path    string
	Manager Manager
	// RetryBase and RetryMax bound the reconnect backoff (defaults 100ms
	// and 5s); each wait is jittered into [d/2, d).
	RetryBase, RetryMax time.Duration
	Logger              *slog.Logger
}

// Client is ztunnel's ZDS client.
type Client struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	running   bool
	connected bool
	synced    bool  // a SnapshotSent was acked (on any connection)
	lastErr   error // why the last connection ended or failed
}

// New validates cfg and fills defaults. It opens nothing.
func New(cfg Config) (*Client, error) {
	if cfg.Path == "" || cfg.Manager == nil {
		return nil, errors.New("zds: Config.Path and Manager are required")
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = cfg.RetryBase
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Client{cfg: cfg, log: cfg.Logger.With("component", "zds", "socket", cfg.Path)}, nil
}

// Ready returns nil once the node agent's first snapshot was acked, that
// is once ztunnel serves every enrolled pod of the node; it stays nil when
// the agent goes away afterwards (the pods keep being served). Otherwise
// it says what ztunnel waits for.
func (c *Client) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		return nil
	}
	msg := "waiting for the node agent's snapshot on " + c.cfg.Path
	switch {
	case c.connected:
		msg += " (connected; replay in progress)"
	case c.lastErr != nil:
		msg += fmt.Sprintf(" (last error: %v)", c.lastErr)
	}
	return errors.New(msg)
}

// Connected reports whether a connection to the node agent is open now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Run connects to the node agent and serves its requests until ctx is
// done, reconnecting with backoff whenever the connection fails or ends.
// It returns nil when ctx is done, with nothing it started still running;
// the pods stay with the Manager.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("zds: Client.Run called twice")
	}
	c.running = true
	c.mu.Unlock()

	reconnect.Loop(ctx, c.cfg.RetryBase, c.cfg.RetryMax, func(ctx context.Context) (bool, error) {
		progressed, err := c.session(ctx)
		c.mu.Lock()
		c.connected = false
		if ctx.Err() == nil {
			c.lastErr = err
		}
		c.mu.Unlock()
		return progressed, err
	}, func(e reconnect.Ended) {
		if e.Progressed {
			c.log.Warn("connection to the node agent ended; still serving every captured pod, reconnecting",
				"error", e.Err, "pods", len(c.cfg.Manager.Pods()), "retryIn", e.Wait.String())
		} else {
			// The agent is not up yet (start-up, or it restarts): expected,
			// and repeated at every attempt.
			c.log.Info("cannot reach the node agent; retrying", "error", e.Err, "retryIn", e.Wait.String(), "attempt", e.Attempt)
		}
	})
	return nil
}

// conn is the state of one connection.
type conn struct {
	// named holds the uids an AddWorkload or KeepWorkload named on this
	// connection.
	named        map[string]bool
	snapshotDone bool
}

// session runs one connection until it fails, the agent closes it, or ctx
// is done; progressed reports whether a request arrived.
func (c *Client) session(ctx context.Context) (progressed bool, err error) {
	zc, err := pkgzds.Dial(ctx, c.cfg.Path)
	if err != nil {
		return false, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		zc.Close() // unblocks RecvRequest
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()
	c.mu.Lock()
	c.connected = true // before the hello, which the agent may act on at once
	c.mu.Unlock()
	if err := zc.SendHello(); err != nil {
		return false, fmt.Errorf("sending the ZDS hello: %w", err)
	}
	c.log.Info("connected to the node agent; waiting for its replay")

	st := &conn{named: map[string]bool{}}
	for {
		req, files, err := zc.RecvRequest()
		if err != nil {
			closeFiles(files)
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return progressed, fmt.Errorf("the node agent closed the connection: %w", err)
			}
			return progressed, fmt.Errorf("reading a request from the node agent (protocol error or broken connection; reconnecting): %w", err)
		}
		progressed = true
		nack, snapshot := c.handle(st, req, files)
		if snapshot {
			// Ready before the ack leaves: the pods are in line with the
			// agent's state already, and the agent may check readiness as
			// soon as it reads the ack.
			c.mu.Lock()
			first := !c.synced
			c.synced = true
			c.mu.Unlock()
			if first {
				c.log.Info("node agent snapshot received: serving the node's pods; ZDS ready", "pods", len(c.cfg.Manager.Pods()))
			}
		}
		if err := zc.SendAck(nack); err != nil {
			return progressed, fmt.Errorf("answering the node agent: %w", err)
		}
	}
}

// handle carries out one request and returns the ack's error text (empty:
// success) and whether it was an acked SnapshotSent. It closes every file
// in files (a captured netns is held through its own descriptor).
func (c *Client) handle(st *conn, req *zdsv1alpha1.WorkloadRequest, files []*os.File) (nack string, snapshot bool) {
	defer closeFiles(files)
	o := decide(req, len(files), st.snapshotDone)
	switch o.kind {
	case opNack:
		c.log.Warn("nacking a node agent request", "request", describe(req), "fds", len(files), "reason", o.nack)
		return o.nack, false

	case opAdd:
		st.named[o.uid] = true
		info := req.GetAdd().GetWorkloadInfo()
		log := c.log.With("uid", o.uid, "pod", info.GetNamespace()+"/"+info.GetName())
		ns, err := netnsFromFile(files[0])
		if err != nil {
			nack := fmt.Sprintf("AddWorkload %s (pod %s/%s): the descriptor is not a usable network namespace: %v",
				o.uid, info.GetNamespace(), info.GetName(), err)
			log.Warn("nacking AddWorkload", "reason", nack)
			return nack, false
		}
		if err := c.cfg.Manager.AddPod(o.uid, ns); err != nil {
			ns.Close()
			log.Warn("nacking AddWorkload: cannot capture the pod", "error", err)
			return err.Error(), false
		}
		log.Info("AddWorkload: pod captured")
		return "", false

	case opKeep:
		st.named[o.uid] = true
		c.log.Debug("KeepWorkload", "uid", o.uid)
		return "", false

	case opDel:
		if err := c.cfg.Manager.RemovePod(o.uid); err != nil {
			c.log.Warn("nacking DelWorkload", "uid", o.uid, "error", err)
			return err.Error(), false
		}
		c.log.Debug("DelWorkload: pod released", "uid", o.uid)
		return "", false

	case opSnapshot:
		var removed []string
		var errs []string
		for _, uid := range c.cfg.Manager.Pods() {
			if st.named[uid] {
				continue
			}
			if err := c.cfg.Manager.RemovePod(uid); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			removed = append(removed, uid)
		}
		if len(errs) > 0 {
			nack := "SnapshotSent: cannot release pods the node agent no longer names: " + strings.Join(errs, "; ")
			c.log.Warn("nacking SnapshotSent", "reason", nack)
			return nack, false
		}
		st.snapshotDone = true
		c.log.Info("SnapshotSent: released the pods the replay did not name", "released", removed, "named", len(st.named))
		return "", true
	}
	return fmt.Sprintf("internal error: unhandled operation %d", o.kind), false
}

// opKind is what the Client does with one request.
type opKind int

const (
	opNack opKind = iota
	opAdd
	opKeep
	opDel
	opSnapshot
)

// op is the decision for one request.
type op struct {
	kind opKind
	uid  string
	nack string // opNack: the ack's error text
}

// decide is the protocol's decision for one request, from the request, the
// number of descriptors that came with it and whether this connection's
// SnapshotSent was already handled. It does no I/O.
func decide(req *zdsv1alpha1.WorkloadRequest, fds int, snapshotDone bool) op {
	nack := func(format string, args ...any) op { return op{kind: opNack, nack: fmt.Sprintf(format, args...)} }
	noFDs := func(what string, o op) op {
		if fds != 0 {
			return nack("%s carries %d file descriptors; it must carry none", what, fds)
		}
		return o
	}
	switch p := req.GetPayload().(type) {
	case *zdsv1alpha1.WorkloadRequest_Add:
		uid := p.Add.GetUid()
		if uid == "" {
			return nack("AddWorkload without a uid")
		}
		if fds != 1 {
			return nack("AddWorkload %s carries %d file descriptors; it must carry exactly one, the pod's network namespace", uid, fds)
		}
		return op{kind: opAdd, uid: uid}
	case *zdsv1alpha1.WorkloadRequest_Keep:
		uid := p.Keep.GetUid()
		if uid == "" {
			return nack("KeepWorkload without a uid")
		}
		if snapshotDone {
			return nack("KeepWorkload %s after SnapshotSent; KeepWorkload is only valid during the replay", uid)
		}
		return noFDs("KeepWorkload "+uid, op{kind: opKeep, uid: uid})
	case *zdsv1alpha1.WorkloadRequest_Del:
		uid := p.Del.GetUid()
		if uid == "" {
			return nack("DelWorkload without a uid")
		}
		return noFDs("DelWorkload "+uid, op{kind: opDel, uid: uid})
	case *zdsv1alpha1.WorkloadRequest_SnapshotSent:
		if snapshotDone {
			return nack("SnapshotSent twice on one connection; the replay ended at the first")
		}
		return noFDs("SnapshotSent", op{kind: opSnapshot})
	default:
		return nack("empty WorkloadRequest (no known payload; is the node agent newer than this ztunnel?)")
	}
}

// describe names a request for logs.
func describe(req *zdsv1alpha1.WorkloadRequest) string {
	switch p := req.GetPayload().(type) {
	case *zdsv1alpha1.WorkloadRequest_Add:
		return "AddWorkload " + p.Add.GetUid()
	case *zdsv1alpha1.WorkloadRequest_Keep:
		return "KeepWorkload " + p.Keep.GetUid()
	case *zdsv1alpha1.WorkloadRequest_Del:
		return "DelWorkload " + p.Del.GetUid()
	case *zdsv1alpha1.WorkloadRequest_SnapshotSent:
		return "SnapshotSent"
	default:
		return "empty request"
	}
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
