// Package cniserver serves the node agent's side of the plugin ↔ agent
// protocol (internal/cniapi): JSON over HTTP on a Unix socket. It
// identifies each caller by the socket's peer credentials (SO_PEERCRED), so
// that the netns path in a request is opened as the calling plugin sees it
// (through /proc/<pid>/root), and hands the requests to a Handler (the
// agent). It records how long ADDs take.
package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"ambit.dev/cni-plugin/internal/cniapi"
)

// OpenFunc opens a netns path as the calling plugin sees it.
type OpenFunc = func(path string) (*os.File, error)

// Handler answers the three calls; *agent.Agent is one (through an
// adapter in internal/app).
type Handler interface {
	CNIAdd(ctx context.Context, req cniapi.PodRequest, open OpenFunc) (cniapi.PodResponse, error)
	CNIDel(ctx context.Context, req cniapi.PodRequest, open OpenFunc) (cniapi.PodResponse, error)
	CNICheck(ctx context.Context, req cniapi.PodRequest, open OpenFunc) (cniapi.PodResponse, error)
}

// Options configures a Server.
type Options struct {
	// Registerer, if set, receives the server's metrics.
	Registerer prometheus.Registerer
	// OpenInRootOf opens path inside the root of process pid; the default
	// is netns.OpenInRootOf.
	OpenInRootOf func(pid int, path string) (*os.File, error)
}

// Server serves the CNI plugin. Build it with New; Serve runs it.
type Server struct {
	log     *slog.Logger
	h       Handler
	open    func(pid int, path string) (*os.File, error)
	metrics *metrics
}

// shutdownGrace bounds how long Serve waits for calls in flight after ctx
// ended.
const shutdownGrace = 5 * time.Second

// maxBody bounds a request body.
const maxBody = 1 << 20

// New builds a Server.
func New(log *slog.Logger, h Handler, opts Options) (*Server, error) {
	if log == nil || h == nil {
		return nil, errors.New("cniserver: a logger and a handler are required")
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	open := opts.OpenInRootOf
	if open == nil {
		open = openInRootOf
	}
	return &Server{log: log, h: h, open: open, metrics: m}, nil
}

// Listen creates the socket's directory (0750) if needed, replaces a
// socket file left by an earlier run, and listens on path. The socket is
// 0600: only root (the container runtime running the plugin) may call.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("cniserver: create the socket directory %s: %w (is the hostPath mounted?)", filepath.Dir(path), err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("cniserver: %s exists and is not a socket; remove it or pick another --cni-socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("cniserver: remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("cniserver: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("cniserver: chmod %s: %w", path, err)
	}
	return l, nil
}

type pidKey struct{}

// Serve serves on l until ctx ends, then stops accepting, waits (briefly)
// for calls in flight and returns. l is closed.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cniapi.PathAdd, s.handle("add", s.h.CNIAdd))
	mux.HandleFunc("POST "+cniapi.PathDel, s.handle("del", s.h.CNIDel))
	mux.HandleFunc("POST "+cniapi.PathCheck, s.handle("check", s.h.CNICheck))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			pid, err := peerPID(c)
			if err != nil {
				s.log.Warn("cannot read the CNI caller's credentials", "error", err)
				return ctx
			}
			return context.WithValue(ctx, pidKey{}, pid)
		},
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("cniserver: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}

func (s *Server) handle(op string, call func(context.Context, cniapi.PodRequest, OpenFunc) (cniapi.PodResponse, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var req cniapi.PodRequest
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			s.metrics.requests.WithLabelValues(op, "error").Inc()
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad %s request: %v", op, err))
			return
		}
		pid, _ := r.Context().Value(pidKey{}).(int)
		open := func(path string) (*os.File, error) {
			if pid <= 0 {
				return nil, errors.New("the caller's pid is unknown (SO_PEERCRED failed), so its netns path cannot be resolved")
			}
			return s.open(pid, path)
		}
		log := s.log.With("op", op, "pod", req.PodNamespace+"/"+req.PodName, "sandbox", req.ContainerID)
		resp, err := call(r.Context(), req, open)
		if err != nil {
			s.metrics.requests.WithLabelValues(op, "error").Inc()
			log.Warn("CNI call failed", "error", err, "took", time.Since(start))
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.metrics.requests.WithLabelValues(op, "ok").Inc()
		if op == "add" {
			s.metrics.addDuration.WithLabelValues(strconv.FormatBool(resp.Enrolled)).Observe(time.Since(start).Seconds())
		}
		log.Debug("CNI call answered", "enrolled", resp.Enrolled, "reason", resp.Reason, "took", time.Since(start))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(cniapi.ErrorResponse{Error: msg})
}
