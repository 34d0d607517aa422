// Package xds serves workload discovery to ztunnels: the Address and
// Authorization resources of api/workload/v1alpha1 over delta ADS
// (envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources).
//
// It is go-control-plane's delta server on top of deltaCache (cache.go), a
// cache made for many wildcard clients: a change to one resource sends that
// resource alone to every subscribed client at a cost independent of the
// number of resources, and a client that reconnects with
// initial_resource_versions gets only the resources whose version differs
// and the names that are gone. Versions are content hashes, so a client can
// reconnect to another replica or to a restarted control plane and still
// receive only the difference.
//
// State-of-the-world ADS is not served: it cannot express removals and
// would resend every resource on each change.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

// Server is the workload-discovery xDS server. Build it with New, register
// it on a gRPC server with Register, feed it with UpdateAddresses and
// UpdateAuthorizations, call MarkReady once the first complete state is in,
// and Run it.
type Server struct {
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time

	cache *deltaCache
	delta deltav3.Server

	// streamCtx ends every open stream when Run returns.
	streamCtx  context.Context
	stopStream context.CancelFunc

	ready     chan struct{}
	readyOnce sync.Once

	mu sync.Mutex
	// changes records, per type URL and resource name, when the resource
	// last changed, to measure push latency.
	changes map[string]map[string]change
	// removals counts removals since the last pruning of changes.
	removals int
	// streams records when each open stream was opened.
	streams map[int64]time.Time
}

type change struct {
	at      time.Time
	removed bool
}

// Option configures a Server.
type Option func(*Server)

// WithClock sets the server's clock (default time.Now); for tests.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// New returns a Server with empty caches for the Address and Authorization
// types. Its metrics are registered on reg (nil: not registered).
func New(log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Server, error) {
	if log == nil {
		return nil, errors.New("xds: a logger is required")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:     log,
		metrics: m,
		now:     time.Now,
		ready:   make(chan struct{}),
		changes: map[string]map[string]change{},
		streams: map[int64]time.Time{},
	}
	for _, o := range opts {
		o(s)
	}
	s.cache = newDeltaCache(workloadv1alpha1.AddressTypeURL, workloadv1alpha1.AuthorizationTypeURL)
	for t := range s.cache.types {
		s.changes[t] = map[string]change{}
	}
	s.streamCtx, s.stopStream = context.WithCancel(context.Background())
	s.delta = deltav3.NewServer(s.streamCtx, s.cache, callbacks{s}, deltav3.WithLogger(cacheLogger(log)))
	return s, nil
}

// Register registers the aggregated discovery service on r. Only the delta
// method is implemented; the state-of-the-world one answers Unimplemented.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	discovery.RegisterAggregatedDiscoveryServiceServer(r, adsServer{s: s})
}

// adsServer is the gRPC face of the Server.
type adsServer struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

// DeltaAggregatedResources serves one delta ADS stream.
func (a adsServer) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.s.delta.DeltaStreamHandler(stream, resource.AnyType)
}

// StreamAggregatedResources refuses state-of-the-world ADS.
func (adsServer) StreamAggregatedResources(discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "ambit serves workload discovery over delta xDS only: use DeltaAggregatedResources")
}

// Run blocks until ctx is done, then ends every open stream (so that a
// graceful stop of the gRPC server does not wait for clients to leave).
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.stopStream()
	return nil
}

// MarkReady lets clients be served. Until it is called, new streams wait:
// a ztunnel that reconnects with initial_resource_versions to a control
// plane that has not built its complete state yet would otherwise be told
// to remove every resource not built so far.
func (s *Server) MarkReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// Ready reports whether MarkReady was called.
func (s *Server) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// UpdateAddresses sets the Address resources in updated (by resource name)
// and removes the names in removed. Each changed resource is sent once to
// every client subscribed to it. The caller must only pass resources that
// changed: an unchanged one is not resent (its version is its content
// hash), but it still costs a comparison per client.
func (s *Server) UpdateAddresses(updated map[string]*workloadv1alpha1.Address, removed []string) error {
	res := make(map[string]types.Resource, len(updated))
	for name, a := range updated {
		res[name] = a
	}
	return s.update(workloadv1alpha1.AddressTypeURL, res, removed)
}

// UpdateAuthorizations is UpdateAddresses for Authorization resources.
func (s *Server) UpdateAuthorizations(updated map[string]*workloadv1alpha1.Authorization, removed []string) error {
	res := make(map[string]types.Resource, len(updated))
	for name, a := range updated {
		res[name] = a
	}
	return s.update(workloadv1alpha1.AuthorizationTypeURL, res, removed)
}

func (s *Server) update(typeURL string, updated map[string]types.Resource, removed []string) error {
	if len(updated) == 0 && len(removed) == 0 {
		return nil
	}
	now := s.now()
	s.mu.Lock()
	ch := s.changes[typeURL]
	for name := range updated {
		ch[name] = change{at: now}
	}
	for _, name := range removed {
		ch[name] = change{at: now, removed: true}
	}
	s.removals += len(removed)
	if s.removals > 4096 {
		// Forget removals older than a minute: a client that has not
		// received them by then is reconnecting, and that is not a push.
		for _, c := range s.changes {
			for name, r := range c {
				if r.removed && now.Sub(r.at) > time.Minute {
					delete(c, name)
				}
			}
		}
		s.removals = 0
	}
	s.mu.Unlock()
	if err := s.cache.types[typeURL].update(updated, removed); err != nil {
		return fmt.Errorf("xds: updating %s resources: %w", typeName(typeURL), err)
	}
	return nil
}

// Resources returns the resources of typeURL currently served, by name.
func (s *Server) Resources(typeURL string) map[string]proto.Message {
	tc, ok := s.cache.types[typeURL]
	if !ok {
		return nil
	}
	return tc.snapshot()
}

// typeName returns the short name of an Ambit type URL ("Address").
func typeName(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}

// callbacks hooks the server's metrics and readiness into go-control-plane.
type callbacks struct{ s *Server }

func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	s := c.s
	s.metrics.clients.Inc()
	select {
	case <-s.ready:
	case <-ctx.Done():
		return status.Error(codes.Canceled, "client went away before the control plane had synced")
	case <-s.streamCtx.Done():
		return status.Error(codes.Unavailable, "control plane is shutting down")
	}
	s.mu.Lock()
	s.streams[id] = s.now()
	s.mu.Unlock()
	s.log.Debug("delta ADS stream opened", "stream", id)
	return nil
}

func (c callbacks) OnDeltaStreamClosed(id int64, node *corev3.Node) {
	s := c.s
	s.metrics.clients.Dec()
	s.cache.forgetStream(id)
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
	s.log.Debug("delta ADS stream closed", "stream", id, "node", node.GetId())
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	if _, ok := c.s.cache.types[req.GetTypeUrl()]; !ok {
		return status.Errorf(codes.InvalidArgument, "type URL %q is not served here: subscribe to %s or %s",
			req.GetTypeUrl(), workloadv1alpha1.AddressTypeURL, workloadv1alpha1.AuthorizationTypeURL)
	}
	c.s.cache.noteRequest(id, req)
	if d := req.GetErrorDetail(); d != nil {
		c.s.log.Warn("client rejected a response (NACK)", "stream", id, "node", req.GetNode().GetId(),
			"type", typeName(req.GetTypeUrl()), "nonce", req.GetResponseNonce(), "error", d.GetMessage())
	}
	return nil
}

func (c callbacks) OnStreamDeltaResponse(id int64, req *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	s := c.s
	typ := typeName(resp.GetTypeUrl())
	s.metrics.pushes.WithLabelValues(typ).Inc()
	s.metrics.resources.WithLabelValues(typ).Add(float64(len(resp.GetResources()) + len(resp.GetRemovedResources())))
	s.metrics.bytes.WithLabelValues(typ).Add(float64(proto.Size(resp)))

	// Push latency: from the oldest change in this response that happened
	// while the stream was open (older ones are initial state, not pushes).
	now := s.now()
	s.mu.Lock()
	opened, ok := s.streams[id]
	ch := s.changes[resp.GetTypeUrl()]
	var oldest time.Time
	note := func(name string) {
		if r, found := ch[name]; found && !r.at.Before(opened) && (oldest.IsZero() || r.at.Before(oldest)) {
			oldest = r.at
		}
	}
	if ok {
		for _, r := range resp.GetResources() {
			note(r.GetName())
		}
		for _, name := range resp.GetRemovedResources() {
			note(name)
		}
	}
	s.mu.Unlock()
	if !oldest.IsZero() {
		s.metrics.pushLatency.WithLabelValues(typ).Observe(now.Sub(oldest).Seconds())
	}
}

// cacheLogger sends go-control-plane's logs to log: its Info lines (one per
// watch) at Debug level.
func cacheLogger(log *slog.Logger) gcplog.Logger {
	log = log.With("lib", "go-control-plane")
	debug := func(f string, a ...any) {
		// Format only when enabled: some lines print whole version maps.
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug(fmt.Sprintf(f, a...))
		}
	}
	return gcplog.LoggerFuncs{
		DebugFunc: debug,
		InfoFunc:  debug,
		WarnFunc:  func(f string, a ...any) { log.Warn(fmt.Sprintf(f, a...)) },
		ErrorFunc: func(f string, a ...any) { log.Error(fmt.Sprintf(f, a...)) },
	}
}
