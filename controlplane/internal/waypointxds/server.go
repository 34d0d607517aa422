package waypointxds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Server serves waypoints their Envoy configuration over delta ADS.
//
// It is go-control-plane's delta server over a SnapshotCache whose key is
// the Gateway a waypoint serves (node metadata GATEWAY), so all replicas of
// a waypoint share one snapshot. Why a SnapshotCache: a waypoint's
// configuration is small (a few resources per bound service port) and is
// rebuilt as a whole by Build, so replacing a snapshot is the natural
// operation; for delta clients the cache compares per-resource content
// hashes with what each stream holds, so an update sends only the
// resources that changed (one endpoint change: one ClusterLoadAssignment),
// removals arrive as removed_resources, and a waypoint reconnecting with
// initial_resource_versions receives only the difference, from any
// replica. The cost of an update is O(resources of that waypoint), not of
// the cluster. (A LinearCache per type would have to be one per waypoint
// and type, and would lose the cross-type consistency of a snapshot.)
//
// A waypoint whose Gateway has no snapshot yet gets no response until
// Update is called for it: it is never told that nothing exists.
type Server struct {
	log     *slog.Logger
	metrics *metrics
	cache   cachev3.SnapshotCache
	delta   deltav3.Server

	// streamCtx ends every open stream when Run returns.
	streamCtx  context.Context
	stopStream context.CancelFunc

	mu sync.Mutex
	// versions is the content version set per waypoint key.
	versions map[string]string
	// streams maps an open stream id to its waypoint key ("" until the
	// first request).
	streams map[int64]string
}

// NewServer returns a Server with no waypoint configured. Its metrics are
// registered on reg (nil: not registered).
func NewServer(log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if log == nil {
		return nil, errors.New("waypointxds: a logger is required")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:      log,
		metrics:  m,
		cache:    cachev3.NewSnapshotCache(true, nodeHash{}, cacheLogger(log)),
		versions: map[string]string{},
		streams:  map[int64]string{},
	}
	s.streamCtx, s.stopStream = context.WithCancel(context.Background())
	s.delta = deltav3.NewServer(s.streamCtx, s.cache, callbacks{s})
	return s, nil
}

// Register registers the aggregated discovery service on r, for a gRPC
// server that serves waypoints only; to share the service with ztunnel's
// workload discovery, register a Dispatcher instead.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	discovery.RegisterAggregatedDiscoveryServiceServer(r, s)
}

// DeltaAggregatedResources serves one waypoint's delta ADS stream.
func (s *Server) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return s.delta.DeltaStreamHandler(stream, resource.AnyType)
}

// StreamAggregatedResources refuses state-of-the-world ADS.
func (s *Server) StreamAggregatedResources(discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "ambit serves waypoint configuration over delta xDS only: use DeltaAggregatedResources (Envoy: api_type DELTA_GRPC)")
}

// Run blocks until ctx is done, then ends every open stream.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.stopStream()
	return nil
}

// Update builds the configuration of waypoint ("<namespace>/<name>", which
// must be in.Waypoint.Key()) from in, checks it and serves it. On error the
// waypoint keeps its previous configuration. Each connected replica of the
// waypoint receives only the resources that changed.
func (s *Server) Update(waypoint string, in Input) error {
	if waypoint != in.Waypoint.Key() {
		return fmt.Errorf("waypointxds: Update(%q) given the input of waypoint %q", waypoint, in.Waypoint.Key())
	}
	r, err := Build(in)
	if err != nil {
		return fmt.Errorf("waypointxds: waypoint %s keeps its previous configuration: %w", waypoint, err)
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("waypointxds: waypoint %s keeps its previous configuration (this is a bug in the builder): %w", waypoint, err)
	}
	snap, err := r.Snapshot()
	if err != nil {
		return fmt.Errorf("waypointxds: waypoint %s: %w", waypoint, err)
	}
	v := snap.GetVersion(resource.ListenerType)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.versions[waypoint] == v {
		return nil
	}
	if err := s.cache.SetSnapshot(context.Background(), waypoint, snap); err != nil {
		return fmt.Errorf("waypointxds: serving the configuration of waypoint %s: %w", waypoint, err)
	}
	s.versions[waypoint] = v
	s.metrics.waypoints.Set(float64(len(s.versions)))
	return nil
}

// Remove stops serving waypoint. Connected replicas are told that every
// resource is gone; the cache then keeps an empty snapshot for the key
// (a few bytes) until the next Update. Without connected replicas the
// key is forgotten, and a replica that connects later waits for an Update.
func (s *Server) Remove(waypoint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.versions, waypoint)
	s.metrics.waypoints.Set(float64(len(s.versions)))
	if !slices.Contains(s.openStreamKeys(), waypoint) {
		s.cache.ClearSnapshot(waypoint)
		return
	}
	empty, _ := cachev3.NewSnapshot("removed", nil)
	if err := s.cache.SetSnapshot(context.Background(), waypoint, empty); err != nil {
		s.log.Warn("telling waypoint replicas their configuration is gone failed", "waypoint", waypoint, "error", err)
	}
}

// openStreamKeys returns the waypoint keys of open streams; s.mu is held.
func (s *Server) openStreamKeys() []string {
	out := make([]string, 0, len(s.streams))
	for _, k := range s.streams {
		out = append(out, k)
	}
	return out
}

// Resources returns the configuration served to waypoint, nil if none.
func (s *Server) Resources(waypoint string) Resources {
	snap, err := s.cache.GetSnapshot(waypoint)
	if err != nil {
		return nil
	}
	out := Resources{}
	for _, t := range servedTypes {
		out[t] = snap.GetResources(t)
	}
	return out
}

// nodeHash keys the cache by the Gateway a waypoint serves. Nodes are
// checked by the callbacks before a watch is created.
type nodeHash struct{}

func (nodeHash) ID(n *corev3.Node) string {
	info, err := ParseNode(n)
	if err != nil {
		return ""
	}
	return info.Gateway
}

// callbacks check waypoint nodes and type URLs and keep the metrics.
type callbacks struct{ s *Server }

func (c callbacks) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	c.s.metrics.clients.Inc()
	c.s.mu.Lock()
	c.s.streams[id] = ""
	c.s.mu.Unlock()
	return nil
}

func (c callbacks) OnDeltaStreamClosed(id int64, node *corev3.Node) {
	c.s.metrics.clients.Dec()
	c.s.mu.Lock()
	delete(c.s.streams, id)
	c.s.mu.Unlock()
	c.s.log.Debug("waypoint stream closed", "stream", id, "node", node.GetId())
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	s := c.s
	s.mu.Lock()
	key := s.streams[id]
	s.mu.Unlock()
	if key == "" {
		// First request of the stream: it must carry the node.
		info, err := ParseNode(req.GetNode())
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.mu.Lock()
		s.streams[id] = info.Gateway
		s.mu.Unlock()
		key = info.Gateway
		s.log.Debug("waypoint stream opened", "stream", id, "node", req.GetNode().GetId(), "waypoint", key)
	} else if n := req.GetNode(); n != nil && (nodeHash{}).ID(n) != key {
		return status.Errorf(codes.InvalidArgument, "node %q changed its GATEWAY within a stream", n.GetId())
	}
	if !slices.Contains(servedTypes, req.GetTypeUrl()) {
		return status.Errorf(codes.InvalidArgument, "type URL %q is not served to waypoints: subscribe to %v", req.GetTypeUrl(), servedTypes)
	}
	if d := req.GetErrorDetail(); d != nil {
		s.metrics.nacks.WithLabelValues(shortType(req.GetTypeUrl())).Inc()
		s.log.Warn("waypoint rejected configuration (NACK)", "stream", id, "waypoint", key,
			"type", shortType(req.GetTypeUrl()), "nonce", req.GetResponseNonce(), "error", d.GetMessage())
	}
	return nil
}

func (c callbacks) OnStreamDeltaResponse(_ int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	t := shortType(resp.GetTypeUrl())
	c.s.metrics.pushes.WithLabelValues(t).Inc()
	c.s.metrics.resources.WithLabelValues(t).Add(float64(len(resp.GetResources()) + len(resp.GetRemovedResources())))
	c.s.metrics.bytes.WithLabelValues(t).Add(float64(proto.Size(resp)))
}

// shortType returns the message name of a type URL ("Listener").
func shortType(typeURL string) string {
	for i := len(typeURL) - 1; i >= 0; i-- {
		if typeURL[i] == '.' {
			return typeURL[i+1:]
		}
	}
	return typeURL
}

// cacheLogger sends go-control-plane's logs to log, its Info lines at
// Debug level.
func cacheLogger(log *slog.Logger) gcplog.Logger {
	log = log.With("lib", "go-control-plane")
	debug := func(f string, a ...any) {
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
