package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ambit.dev/ztunnel/bench/benchkit"
)

// opTimeout bounds every single request, so a broken path fails a phase
// instead of hanging it.
const opTimeout = 10 * time.Second

// bodySize is the size of every response body (the request has none).
const bodySize = 1024

// host is the Host header of every request: the Service's name.
const host = "web.bench.svc.cluster.local"

// backend is the HTTP server in a server pod: GET answers 200 with a
// bodySize body, on every listener it serves.
type backend struct {
	srv      *http.Server
	requests atomic.Int64
	wg       sync.WaitGroup
}

func startBackend(topo *benchkit.Topology, pod *benchkit.Pod, ports ...int) (*backend, error) {
	body := []byte(strings.Repeat("x", bodySize))
	b := &backend{}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.requests.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: opTimeout,
		ErrorLog:          slog.NewLogLogger(slog.New(slog.DiscardHandler).Handler(), slog.LevelDebug),
	}
	for _, port := range ports {
		ln, err := topo.Listen(pod.NetnsPath, "tcp4", fmt.Sprintf(":%d", port))
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("listen on :%d in %s: %w", port, pod.Name, err)
		}
		b.wg.Go(func() { _ = b.srv.Serve(ln) })
	}
	return b, nil
}

// Close stops the server and its connections.
func (b *backend) Close() {
	_ = b.srv.Close()
	b.wg.Wait()
}

// request is the bytes of one GET with keep-alive (HTTP/1.1 default).
func request(hostHeader string) []byte {
	return []byte("GET /bench HTTP/1.1\r\nHost: " + hostHeader + "\r\nUser-Agent: ambit-bench-l7\r\nAccept: */*\r\n\r\n")
}

// client is one persistent HTTP/1.1 connection of the load generator: one
// request at a time (no pipelining), the response read whole.
type client struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
	bad bool
}

func newClient(c net.Conn, hostHeader string) *client {
	return &client{c: c, br: bufio.NewReaderSize(c, 8<<10), req: request(hostHeader)}
}

// errClosed is a request on a connection an earlier failure closed.
var errClosed = errors.New("connection closed after an earlier failure")

// do sends one request and reads its response: 200, the full body, and
// the connection kept alive. On failure the connection is closed.
func (cl *client) do() error {
	if cl.bad {
		return errClosed
	}
	err := cl.roundTrip()
	if err != nil {
		cl.bad = true
		cl.c.Close()
	}
	return err
}

func (cl *client) roundTrip() error {
	if err := cl.c.SetDeadline(time.Now().Add(opTimeout)); err != nil {
		return err
	}
	if _, err := cl.c.Write(cl.req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return fmt.Errorf("read the response body: %w", err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %s", resp.Status)
	case n != bodySize:
		return fmt.Errorf("body of %d bytes, want %d", n, bodySize)
	case resp.Close:
		return errors.New("the response closes the connection (no keep-alive)")
	}
	return nil
}

// dialFunc opens a connection from the client pod through a path.
type dialFunc func(ctx context.Context) (net.Conn, error)

// openClients opens n persistent connections and completes one request
// on each, so every hop (and TLS handshake) exists before timing starts.
func openClients(ctx context.Context, dial dialFunc, n int) ([]*client, error) {
	var cs []*client
	for range n {
		c, err := dial(ctx)
		if err != nil {
			closeClients(cs)
			return nil, err
		}
		cl := newClient(c, host)
		if err := cl.do(); err != nil {
			closeClients(cs)
			return nil, fmt.Errorf("first request: %w", err)
		}
		cs = append(cs, cl)
	}
	return cs, nil
}

func closeClients(cs []*client) {
	for _, c := range cs {
		c.c.Close()
	}
}

// waitPath retries one request through a fresh connection until it works
// or timeout passes (proxies take a moment to be ready).
func waitPath(ctx context.Context, dial dialFunc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cs, err := openClients(ctx, dial, 1)
		if err == nil {
			closeClients(cs)
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("no HTTP answer through the path within %v: %w", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// load runs benchkit.OpenLoop at rate over the first conns clients.
func load(ctx context.Context, cs []*client, conns, rate int, d time.Duration) benchkit.LoadResult {
	conns = min(conns, len(cs))
	return benchkit.OpenLoop(ctx, conns, rate, d, func(k int) error { return cs[k].do() })
}
