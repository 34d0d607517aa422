package testapp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// GetConfig configures Get.
type GetConfig struct {
	// URL is fetched Count times.
	URL string
	// Method is the HTTP method; empty means GET.
	Method string
	// Headers are added to each request; a Host entry sets the Host header.
	Headers http.Header
	// Count is how many requests to send, one after the other.
	Count int
	// Interval is the pause between two requests.
	Interval time.Duration
	// Timeout bounds each request, from dial to the end of the body.
	Timeout time.Duration
	// ExpectStatus is the status code that counts as success.
	ExpectStatus int
	// Summary prints "N ok, M failed" after the last request.
	Summary bool
}

// GetResult is the outcome of one successful request.
type GetResult struct {
	// Local is the client's address on the connection that carried the request.
	Local string
	// Status is the response status code.
	Status int
	// Body is the whole response body.
	Body []byte
}

// NewHTTPClient returns the client Get uses: no proxy from the environment,
// and a new connection for every request so that each one is load balanced
// (and seen by the mesh) on its own.
func NewHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Fetch sends one request as cfg describes (ignoring Count, Interval and
// Summary) and fails unless the status is cfg.ExpectStatus.
func Fetch(ctx context.Context, client *http.Client, cfg GetConfig) (GetResult, error) {
	var res GetResult
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { res.Local = ci.Conn.LocalAddr().String() },
	})
	method := cfg.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, cfg.URL, nil)
	if err != nil {
		return res, fmt.Errorf("bad request %s %s: %w", method, cfg.URL, err)
	}
	for k, vs := range cfg.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = vs[len(vs)-1]
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return res, fmt.Errorf("%s %s: %w%s", method, cfg.URL, err, hint(err, cfg.Timeout))
	}
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	res.Body, err = io.ReadAll(resp.Body)
	if err != nil {
		return res, fmt.Errorf("%s %s: reading body after status %d: %w%s", method, cfg.URL, resp.StatusCode, err, hint(err, cfg.Timeout))
	}
	if resp.StatusCode != cfg.ExpectStatus {
		return res, fmt.Errorf("%s %s: status %d, want %d%s; body: %s", method, cfg.URL, resp.StatusCode, cfg.ExpectStatus,
			proxyHeaders(resp.Header), strings.TrimSpace(excerpt(res.Body)))
	}
	return res, nil
}

// proxyHeaders returns the x-envoy-* headers of a response as
// "; x-envoy-overloaded: true" (sorted), or "": they say why a proxy
// answered instead of the server (e.g. a circuit breaker).
func proxyHeaders(h http.Header) string {
	var out []string
	for k, vs := range h {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-envoy-") {
			out = append(out, lk+": "+strings.Join(vs, ","))
		}
	}
	if len(out) == 0 {
		return ""
	}
	slices.Sort(out)
	return "; " + strings.Join(out, "; ")
}

// Get sends cfg.Count requests and prints each body as one line to stdout and
// each failure to stderr. It returns an error if any request failed.
func Get(ctx context.Context, client *http.Client, cfg GetConfig, stdout, stderr io.Writer) error {
	if cfg.Count < 1 {
		return fmt.Errorf("count %d must be at least 1", cfg.Count)
	}
	var ok, failed int
	var lastErr error
	for i := range cfg.Count {
		if i > 0 && cfg.Interval > 0 {
			t := time.NewTimer(cfg.Interval)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		if ctx.Err() != nil {
			failed += cfg.Count - i
			lastErr = fmt.Errorf("stopped before request %d of %d: %w", i+1, cfg.Count, ctx.Err())
			fmt.Fprintln(stderr, lastErr)
			break
		}
		res, err := Fetch(ctx, client, cfg)
		if err != nil {
			failed++
			lastErr = err
			if cfg.Count > 1 {
				fmt.Fprintf(stderr, "request %d/%d failed: %v\n", i+1, cfg.Count, err)
			}
			continue
		}
		ok++
		line := bytes.TrimSuffix(res.Body, []byte("\n"))
		fmt.Fprintf(stdout, "%s\n", line)
	}
	if cfg.Summary {
		fmt.Fprintf(stdout, "%d ok, %d failed\n", ok, failed)
	}
	switch {
	case failed == 0:
		return nil
	case cfg.Count == 1:
		return lastErr
	default:
		return fmt.Errorf("%d of %d requests to %s failed; last error: %w", failed, cfg.Count, cfg.URL, lastErr)
	}
}

// TCPConfig configures TCP.
type TCPConfig struct {
	// Addr is the host:port to connect to.
	Addr string
	// Send is written after the peer line is read, then the client half-closes.
	Send string
	// Timeout bounds the whole exchange.
	Timeout time.Duration
}

// TCPResult is what one TCP exchange saw.
type TCPResult struct {
	// Local is the client's address on the connection.
	Local string
	// Peer is the client address as the server saw it (its peer= line).
	Peer string
	// Echo is everything the server sent after the peer line.
	Echo string
}

// TCPExchange connects to cfg.Addr, reads the server's peer= line, sends
// cfg.Send, half-closes, and reads the echo until the server closes. It fails
// unless the echo equals what was sent.
func TCPExchange(ctx context.Context, cfg TCPConfig) (TCPResult, error) {
	var res TCPResult
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return res, fmt.Errorf("connecting to %s: %w%s", cfg.Addr, err, hint(err, cfg.Timeout))
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	res.Local = c.LocalAddr().String()

	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return res, fmt.Errorf("reading peer line from %s: %w%s", cfg.Addr, err, hint(ctxErr(ctx, err), cfg.Timeout))
	}
	peer, found := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "peer=")
	if !found {
		return res, fmt.Errorf("first line from %s is %q, want peer=<ip:port> (is it an ambit-testapp TCP port?)", cfg.Addr, line)
	}
	res.Peer = peer

	if _, err := io.WriteString(c, cfg.Send); err != nil {
		return res, fmt.Errorf("sending to %s: %w%s", cfg.Addr, err, hint(ctxErr(ctx, err), cfg.Timeout))
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return res, fmt.Errorf("half-closing connection to %s: %w", cfg.Addr, err)
	}
	echo, err := io.ReadAll(br)
	res.Echo = string(echo)
	if err != nil {
		return res, fmt.Errorf("reading echo from %s: %w%s", cfg.Addr, err, hint(ctxErr(ctx, err), cfg.Timeout))
	}
	if res.Echo != cfg.Send {
		return res, fmt.Errorf("echo from %s is %q, want %q", cfg.Addr, excerpt(echo), excerpt([]byte(cfg.Send)))
	}
	return res, nil
}

// TCP runs TCPExchange and prints the peer= line and then the echo to stdout.
func TCP(ctx context.Context, cfg TCPConfig, stdout io.Writer) error {
	res, err := TCPExchange(ctx, cfg)
	if res.Peer != "" {
		fmt.Fprintf(stdout, "peer=%s\n", res.Peer)
	}
	if res.Echo != "" {
		fmt.Fprint(stdout, res.Echo)
		if !strings.HasSuffix(res.Echo, "\n") {
			fmt.Fprintln(stdout)
		}
	}
	return err
}

// ctxErr prefers the context's error over err when the context ended the I/O
// by moving the deadline.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// hint says what to check for common network failures.
func hint(err error, timeout time.Duration) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return " (is the server listening on that port, and does the Service target it?)"
	case errors.Is(err, syscall.ECONNRESET):
		return " (the connection was reset: did a proxy or policy reject it?)"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Sprintf(" (no answer within %v: is a NetworkPolicy, a mesh policy or a missing route dropping the traffic?)", timeout)
	case errors.Is(err, context.Canceled):
		return " (interrupted)"
	default:
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return " (does the Service name resolve from this pod?)"
		}
		return ""
	}
}

// excerpt returns at most 200 bytes of b for error messages.
func excerpt(b []byte) string {
	const max = 200
	s := string(b)
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
