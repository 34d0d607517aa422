// Package testapp is the logic of ambit-testapp, the one binary the e2e suites
// run in pods as both server and client: an HTTP and a TCP echo server that
// report the peer address they saw, and clients that check the answers.
package testapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits on what a request may ask the server to do.
const (
	MaxBytes = 1 << 34 // /bytes/<n>
	MaxDelay = 10 * time.Minute
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// HTTPAddr is the HTTP listen address, e.g. ":8080"; empty disables HTTP.
	HTTPAddr string
	// TCPAddr is the TCP echo listen address, e.g. ":9000"; empty disables TCP.
	TCPAddr string
	// Name is reported in every HTTP answer.
	Name string
	// Hostname is reported in every HTTP answer.
	Hostname string
	// PodIP is reported in every HTTP answer when set.
	PodIP string
	// ShutdownTimeout bounds how long Serve waits for open requests and
	// connections once its context is done, before it closes them.
	ShutdownTimeout time.Duration
	// Upstream, if set, is an http:// URL the server GETs for every request
	// to "/" before answering; the upstream's answer is embedded in the
	// reply (Info.Upstream), so one request shows a chain of services.
	Upstream string
	// UpstreamTimeout bounds each upstream request (default 5s).
	UpstreamTimeout time.Duration
	// FailRate is the fraction (0 to 1) of requests to "/" answered with
	// 503, at random: a flaky backend for retry tests.
	FailRate float64
}

// Info is the JSON body of every HTTP answer except /healthz and /bytes.
type Info struct {
	Name     string            `json:"name"`
	Hostname string            `json:"hostname"`
	PodIP    string            `json:"pod_ip,omitempty"`
	Peer     string            `json:"peer"`
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Host     string            `json:"host"`
	Headers  map[string]string `json:"headers"`
	// Upstream is the answer of ServerConfig.Upstream, when set.
	Upstream *Info `json:"upstream,omitempty"`
	// UpstreamError says why the upstream could not be reached (the reply
	// is then 502).
	UpstreamError string `json:"upstream_error,omitempty"`
}

// Server is the HTTP and TCP echo server of `ambit-testapp serve`.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// upstream is the client for ServerConfig.Upstream (nil without).
	upstream *http.Client
}

// NewServer validates cfg and returns a Server that logs to log.
func NewServer(cfg ServerConfig, log *slog.Logger) (*Server, error) {
	if cfg.HTTPAddr == "" && cfg.TCPAddr == "" {
		return nil, errors.New("serve needs --http or --tcp (or both)")
	}
	if cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("shutdown timeout %v is negative", cfg.ShutdownTimeout)
	}
	if cfg.Upstream != "" {
		u, err := url.Parse(cfg.Upstream)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("upstream %q is not an http://host[:port]/path URL", cfg.Upstream)
		}
	}
	if cfg.UpstreamTimeout == 0 {
		cfg.UpstreamTimeout = 5 * time.Second
	}
	if !(cfg.FailRate >= 0 && cfg.FailRate <= 1) {
		return nil, fmt.Errorf("fail rate %v is not a fraction from 0 to 1", cfg.FailRate)
	}
	s := &Server{cfg: cfg, log: log, conns: map[net.Conn]struct{}{}}
	if cfg.Upstream != "" {
		s.upstream = NewHTTPClient()
	}
	return s, nil
}

// Run listens on the configured addresses and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	var httpLn, tcpLn net.Listener
	if s.cfg.HTTPAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", s.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listening for HTTP on %s: %w (is the port already in use?)", s.cfg.HTTPAddr, err)
		}
		httpLn = ln
	}
	if s.cfg.TCPAddr != "" {
		ln, err := lc.Listen(ctx, "tcp", s.cfg.TCPAddr)
		if err != nil {
			if httpLn != nil {
				httpLn.Close()
			}
			return fmt.Errorf("listening for TCP on %s: %w (is the port already in use?)", s.cfg.TCPAddr, err)
		}
		tcpLn = ln
	}
	return s.Serve(ctx, httpLn, tcpLn)
}

// Serve serves HTTP on httpLn and TCP echo on tcpLn (either may be nil) until
// ctx is done, then shuts down gracefully. It closes both listeners, and when
// it returns every goroutine and connection it started has ended.
func (s *Server) Serve(ctx context.Context, httpLn, tcpLn net.Listener) error {
	if httpLn == nil && tcpLn == nil {
		return errors.New("serve needs an HTTP or a TCP listener")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	var hs *http.Server
	if httpLn != nil {
		hs = &http.Server{
			Handler:           s.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		}
		s.log.Info("listening", "proto", "http", "addr", httpLn.Addr().String())
		wg.Go(func() {
			if err := hs.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving HTTP on %s: %w", httpLn.Addr(), err)
				cancel()
			}
		})
	}
	var tcpWG sync.WaitGroup
	if tcpLn != nil {
		s.log.Info("listening", "proto", "tcp", "addr", tcpLn.Addr().String())
		wg.Go(func() {
			if err := s.acceptTCP(ctx, tcpLn, &tcpWG); err != nil {
				errc <- err
				cancel()
			}
		})
	}

	<-ctx.Done()
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	sctx, scancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer scancel()
	if tcpLn != nil {
		tcpLn.Close()
	}
	if hs != nil {
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
	}
	wg.Wait()
	if !waitTimeout(&tcpWG, sctx) {
		s.closeConns()
		tcpWG.Wait()
	}
	close(errc)
	err := <-errc
	s.log.Info("stopped")
	return err
}

// waitTimeout waits for wg and reports whether it finished before ctx.
func waitTimeout(wg *sync.WaitGroup, ctx context.Context) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) acceptTCP(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting TCP on %s: %w", ln.Addr(), err)
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Go(func() {
			s.echo(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		})
	}
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// echo writes the peer line, then echoes until the client half-closes, then
// half-closes its own side.
func (s *Server) echo(c net.Conn) {
	defer c.Close()
	start := time.Now()
	peer := c.RemoteAddr().String()
	var in, out int64
	var err error
	if _, err = fmt.Fprintf(c, "peer=%s\n", peer); err == nil {
		// Plain reader/writer wrappers: echo byte for byte, no splice tricks.
		in, err = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
		out = in
		if cw, ok := c.(interface{ CloseWrite() error }); ok && err == nil {
			err = cw.CloseWrite()
		}
	}
	attrs := []any{"proto", "tcp", "peer", peer, "local", c.LocalAddr().String(),
		"bytes_in", in, "bytes_out", out, "duration_ms", time.Since(start).Milliseconds()}
	if err != nil {
		s.log.Warn("tcp connection", append(attrs, "err", err.Error())...)
		return
	}
	s.log.Info("tcp connection", attrs...)
}

// Handler returns the HTTP handler of the server, with request logging.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.PathValue("code"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, fmt.Sprintf("status %q is not an HTTP status code in 200-599", r.PathValue("code")), http.StatusBadRequest)
			return
		}
		s.writeInfo(w, r, code)
	})
	mux.HandleFunc("/bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(w, fmt.Sprintf("byte count %q is not a number in 0-%d", r.PathValue("n"), int64(MaxBytes)), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			writePattern(w, n)
		}
	})
	mux.HandleFunc("/delay/{ms}", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.ParseInt(r.PathValue("ms"), 10, 64)
		if err != nil || ms < 0 || time.Duration(ms)*time.Millisecond > MaxDelay {
			http.Error(w, fmt.Sprintf("delay %q is not a number of milliseconds in 0-%d", r.PathValue("ms"), MaxDelay.Milliseconds()), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			s.writeInfo(w, r, http.StatusOK)
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && s.cfg.FailRate > 0 && rand.Float64() < s.cfg.FailRate {
			s.writeInfo(w, r, http.StatusServiceUnavailable)
			return
		}
		if s.upstream == nil || r.URL.Path != "/" {
			s.writeInfo(w, r, http.StatusOK)
			return
		}
		info := s.NewInfo(r)
		code := http.StatusOK
		up, err := s.callUpstream(r.Context())
		if err != nil {
			info.UpstreamError = err.Error()
			code = http.StatusBadGateway
		} else {
			info.Upstream = up
		}
		writeJSON(w, info, code)
	})
	return s.logRequests(mux)
}

// NewInfo returns what the server reports about r.
func (s *Server) NewInfo(r *http.Request) Info {
	h := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		h[k] = strings.Join(v, ", ")
	}
	return Info{
		Name:     s.cfg.Name,
		Hostname: s.cfg.Hostname,
		PodIP:    s.cfg.PodIP,
		Peer:     r.RemoteAddr,
		Method:   r.Method,
		Path:     r.URL.Path,
		Host:     r.Host,
		Headers:  h,
	}
}

// callUpstream GETs ServerConfig.Upstream and decodes its Info.
func (s *Server) callUpstream(ctx context.Context) (*Info, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.UpstreamTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.Upstream, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.upstream.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", s.cfg.Upstream, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading the answer: %w", s.cfg.Upstream, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", s.cfg.Upstream, resp.StatusCode)
	}
	var up Info
	if err := json.Unmarshal(body, &up); err != nil {
		return nil, fmt.Errorf("GET %s: the answer is not ambit-testapp JSON: %w", s.cfg.Upstream, err)
	}
	return &up, nil
}

func (s *Server) writeInfo(w http.ResponseWriter, r *http.Request, code int) {
	writeJSON(w, s.NewInfo(r), code)
}

func writeJSON(w http.ResponseWriter, info Info, code int) {
	b, err := json.Marshal(info)
	if err != nil { // cannot happen: Info has only strings and nested Infos
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writePattern writes n bytes of a repeating printable pattern.
func writePattern(w io.Writer, n int64) {
	const pattern = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
	chunk := []byte(strings.Repeat(pattern, 32*1024/len(pattern)))
	for n > 0 {
		c := chunk
		if int64(len(c)) > n {
			c = c[:n]
		}
		m, err := w.Write(c)
		if err != nil {
			return
		}
		n -= int64(m)
	}
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		s.log.Info("http request", "proto", "http", "peer", r.RemoteAddr, "method", r.Method,
			"host", r.Host, "path", r.URL.Path, "status", rec.status, "bytes_out", rec.bytes,
			"duration_ms", time.Since(start).Milliseconds())
	})
}
