package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
	"ambit.dev/ztunnel/internal/testtopo"
)

// Ports of the bench's servers in the server pod.
const (
	sinkPort = 5001 // reads and discards: throughput
	echoPort = 5002 // echoes: latency, connection rate, idle connections
)

// opTimeout bounds every single network operation of the load generators,
// so a broken path fails a phase instead of hanging it.
const opTimeout = 30 * time.Second

// dialFunc opens a connection from the client pod to a server port through
// the path under test.
type dialFunc func(ctx context.Context, port int) (net.Conn, error)

// servers are the sink and echo servers inside the server pod.
type servers struct {
	sinkBytes atomic.Int64
	sinkLast  atomic.Int64 // unix nanos of the last byte read
	sinkDone  atomic.Int64 // sink connections finished
	lns       []net.Listener
	wg        sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// peers records the client addresses the echo server saw.
	peers map[string]int
}

func startServers(topo *testtopo.Topology, pod *testtopo.Pod) (*servers, error) {
	s := &servers{conns: map[net.Conn]struct{}{}, peers: map[string]int{}}
	for _, p := range []struct {
		port    int
		handler func(net.Conn)
	}{{sinkPort, s.sink}, {echoPort, s.echo}} {
		ln, err := topo.Listen(pod.NetnsPath, "tcp4", fmt.Sprintf(":%d", p.port))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen on :%d in the server pod: %w", p.port, err)
		}
		s.lns = append(s.lns, ln)
		s.wg.Go(func() { s.accept(ln, p.handler) })
	}
	return s, nil
}

func (s *servers) accept(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			handle(c)
		})
	}
}

func (s *servers) sink(c net.Conn) {
	defer s.sinkDone.Add(1)
	buf := make([]byte, 256<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			s.sinkBytes.Add(int64(n))
			s.sinkLast.Store(time.Now().UnixNano())
		}
		if err != nil {
			return
		}
	}
}

func (s *servers) echo(c net.Conn) {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		s.mu.Lock()
		s.peers[ta.IP.String()]++
		s.mu.Unlock()
	}
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// takePeers returns and resets the client addresses the echo server saw.
func (s *servers) takePeers() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peers
	s.peers = map[string]int{}
	return p
}

// Close stops the listeners and every open connection.
func (s *servers) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// echoOnce sends one byte on c and waits for it to come back.
func echoOnce(c net.Conn) error {
	if err := c.SetDeadline(time.Now().Add(opTimeout)); err != nil {
		return err
	}
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	return c.SetDeadline(time.Time{})
}

// waitPath retries one echo round trip through the path until it works or
// timeout passes (proxies take a moment to open their listeners).
func waitPath(ctx context.Context, dial dialFunc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		c, err := dial(ctx, echoPort)
		if err == nil {
			err = echoOnce(c)
			c.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("no echo through the path within %v: %w", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// throughput streams data on `streams` connections for d and returns the
// bytes the sink received and the time from the start to the last byte.
func throughput(ctx context.Context, s *servers, dial dialFunc, streams int, d time.Duration) (int64, time.Duration, error) {
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := dial(ctx, sinkPort)
		if err != nil {
			return 0, 0, err
		}
		conns = append(conns, c)
	}
	doneBase := s.sinkDone.Load()
	s.sinkBytes.Store(0)
	t0 := time.Now()
	end := t0.Add(d)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			buf := make([]byte, 128<<10)
			_ = c.SetWriteDeadline(end)
			for time.Now().Before(end) && ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					break
				}
			}
			c.Close()
		})
	}
	wg.Wait()
	// Wait until every sink connection saw the end of its stream: data
	// still buffered in proxies when the writers stopped counts too.
	for s.sinkDone.Load()-doneBase < int64(streams) && time.Since(end) < opTimeout && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.sinkDone.Load() - doneBase; n < int64(streams) {
		return 0, 0, fmt.Errorf("only %d of %d streams reached the sink's end within %v (does the path propagate FIN?)", n, streams, opTimeout)
	}
	bytes := s.sinkBytes.Load()
	if bytes == 0 {
		return 0, 0, errors.New("the sink received no data")
	}
	return bytes, time.Unix(0, s.sinkLast.Load()).Sub(t0), ctx.Err()
}

// latencyResult is the outcome of one open-loop run.
type latencyResult struct {
	samples []time.Duration // sorted
	sent    int
	errs    int
	err     error // first error
}

// dialPersistent opens n connections to the echo server through the path
// and completes one round trip on each, so every hop (and TLS handshake)
// exists before they are used for timing.
func dialPersistent(ctx context.Context, dial dialFunc, n int) ([]net.Conn, error) {
	cs := make([]net.Conn, 0, n)
	for range n {
		c, err := dial(ctx, echoPort)
		if err == nil {
			if err = echoOnce(c); err != nil {
				c.Close()
			}
		}
		if err != nil {
			closeAll(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// latency sends rate req/s (size-byte request, size-byte echo) spread over
// the persistent connections cs for d with benchkit.OpenLoop. A connection
// that fails is closed and not used again.
func latency(ctx context.Context, cs []net.Conn, rate, size int, d time.Duration) latencyResult {
	reqs, resps := make([][]byte, len(cs)), make([][]byte, len(cs))
	for k := range cs {
		reqs[k], resps[k] = make([]byte, size), make([]byte, size)
	}
	r := benchkit.OpenLoop(ctx, len(cs), rate, d, func(k int) error {
		c := cs[k]
		err := c.SetDeadline(time.Now().Add(opTimeout))
		if err == nil {
			_, err = c.Write(reqs[k])
		}
		if err == nil {
			_, err = io.ReadFull(c, resps[k])
		}
		if err != nil {
			c.Close()
		}
		return err
	})
	return latencyResult{samples: r.Samples, sent: r.Sent, errs: r.Errs, err: r.Err}
}

// connRate opens, uses (one byte each way) and closes connections from
// `workers` goroutines for d; it returns the completed count and errors.
func connRate(ctx context.Context, dial dialFunc, workers int, d time.Duration) (int64, int64, error) {
	end := time.Now().Add(d)
	var ok, bad atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				c, err := dial(ctx, echoPort)
				if err == nil {
					err = echoOnce(c)
					c.Close()
				}
				if err != nil {
					bad.Add(1)
					once.Do(func() { firstErr = err })
					time.Sleep(time.Millisecond)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return ok.Load(), bad.Load(), firstErr
}

// openIdle opens n connections through the path (each completes one echo
// round trip, so every hop is established) with bounded parallelism, and
// returns them open. It stops early after 100 errors.
func openIdle(ctx context.Context, dial dialFunc, n, parallel int) ([]net.Conn, int, error) {
	var mu sync.Mutex
	conns := make([]net.Conn, 0, n)
	var bad atomic.Int64
	var firstErr error
	var once sync.Once
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && bad.Load() < 100 && ctx.Err() == nil {
				c, err := dial(ctx, echoPort)
				if err == nil {
					if err = echoOnce(c); err != nil {
						c.Close()
					}
				}
				if err != nil {
					bad.Add(1)
					once.Do(func() { firstErr = err })
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return conns, int(bad.Load()), firstErr
}
