// Package xdsclient is the waypoint's xDS client: one delta ADS stream
// (envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources)
// to the control plane, per waypoint/XDS.md. It subscribes to LDS and CDS
// with a wildcard, and to EDS and RDS by the names the accepted clusters
// and listeners reference, following them as they change.
//
// Every resource is decoded and checked on its own (ParseListener,
// ParseCluster, ParseAssignment, ParseRoute). A resource the waypoint
// cannot honour is NACKed, with an error_detail naming it and saying why,
// and its previous version (if any) is kept; the rest of the response
// applies. After each response the accepted resources are assembled into
// a new immutable model.Config (Build) and handed to Config.OnConfig.
//
// When the stream breaks, the client reconnects with capped, jittered
// exponential backoff (ambit.dev/pkg/reconnect), sending the versions it
// holds in initial_resource_versions; meanwhile the last config keeps
// serving.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"ambit.dev/pkg/deltaxds"
	"ambit.dev/waypoint/internal/model"
)

// Type URLs of XDS.md §2.
const (
	TypeListener   = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeCluster    = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeAssignment = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	TypeRoute      = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// typeURLs in subscription order; LDS and CDS are wildcards, EDS and RDS
// follow the names CDS and LDS reference.
var typeURLs = []string{TypeListener, TypeCluster, TypeAssignment, TypeRoute}

func wildcard(typeURL string) bool { return typeURL == TypeListener || typeURL == TypeCluster }

// Defaults of Config.
const (
	DefaultRetryBase = 500 * time.Millisecond
	DefaultRetryMax  = 30 * time.Second
)

// Config configures a Client. Conn, Node, TrustDomain and OnConfig are
// required.
type Config struct {
	// Conn is the gRPC connection to the control plane.
	Conn grpc.ClientConnInterface
	// Node is sent on the first request of each stream.
	Node *corev3.Node
	// TrustDomain is the mesh trust domain; endpoint identities and peer
	// SAN prefixes must be in it.
	TrustDomain string
	// OnConfig receives every new Config, in order, from the stream
	// goroutine. It must not block for long.
	OnConfig func(*model.Config)
	// RetryBase and RetryMax bound the reconnect backoff.
	RetryBase, RetryMax time.Duration
	Logger              *slog.Logger
}

// entry is one accepted resource.
type entry struct {
	version string
	value   any // Listener, Cluster, []model.Endpoint or *model.RouteTable
}

// Client is the delta ADS client. Build it with New and call Run.
type Client struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex
	held       map[string]map[string]entry // type URL -> name -> entry
	subscribed map[string][]string         // EDS/RDS names subscribed, sorted
	current    *model.Config
	complete   bool // a complete config was published once
	connected  bool
	lastErr    error
	lastNACK   string
}

// New validates cfg and returns a Client; it does not connect.
func New(cfg Config) (*Client, error) {
	if cfg.Conn == nil || cfg.Node == nil || cfg.OnConfig == nil || cfg.TrustDomain == "" {
		return nil, errors.New("xdsclient: Config.Conn, Node, TrustDomain and OnConfig are required")
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryBase {
		return nil, fmt.Errorf("xdsclient: RetryMax %s is below RetryBase %s", cfg.RetryMax, cfg.RetryBase)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "xds"),
		held:       map[string]map[string]entry{},
		subscribed: map[string][]string{},
	}
	for _, t := range typeURLs {
		c.held[t] = map[string]entry{}
	}
	return c, nil
}

// Ready returns nil once a complete configuration (every referenced
// cluster, assignment and route received) has been published; it stays
// ready while disconnected, as the last config keeps serving.
func (c *Client) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.complete {
		return nil
	}
	err := errors.New("xds: no complete configuration from the control plane yet")
	if c.current != nil {
		err = fmt.Errorf("xds: configuration incomplete, waiting for %s", strings.Join(c.current.Missing, ", "))
	}
	if c.lastNACK != "" {
		err = fmt.Errorf("%w (last NACK: %s)", err, c.lastNACK)
	}
	if c.lastErr != nil {
		err = fmt.Errorf("%w (last stream error: %v)", err, c.lastErr)
	}
	return err
}

// Connected reports whether a stream is open now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// Run keeps a stream open until ctx is done, reconnecting with backoff
// (ambit.dev/pkg/deltaxds) and serving the last config meanwhile. It
// returns nil when ctx is done.
func (c *Client) Run(ctx context.Context) error {
	deltaxds.Run(ctx, deltaxds.Session{
		Conn: c.cfg.Conn, RetryBase: c.cfg.RetryBase, RetryMax: c.cfg.RetryMax,
		Initial: c.initialRequests,
		Handle:  c.Apply,
		Opened: func() {
			c.mu.Lock()
			c.connected = true
			c.mu.Unlock()
			c.log.Info("xDS stream open", "node", c.cfg.Node.GetId())
		},
		Closed: func(err error) {
			c.mu.Lock()
			c.connected = false
			if err != nil {
				c.lastErr = err
			}
			c.mu.Unlock()
		},
		OpenHint: "is the control plane reachable at --xds-address and its certificate signed by the mesh root?",
		RecvHint: "the control plane refuses a node without a valid GATEWAY with InvalidArgument",
		Log:      c.log,
	})
	return nil
}

// initialRequests are the first requests of a stream: wildcard LDS (with
// the node) and CDS, then EDS and RDS for the names already referenced,
// each with the versions held.
func (c *Client) initialRequests() []*discovery.DeltaDiscoveryRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*discovery.DeltaDiscoveryRequest
	for _, t := range typeURLs {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: map[string]string{}}
		for name, e := range c.held[t] {
			req.InitialResourceVersions[name] = e.version
		}
		if wildcard(t) {
			req.ResourceNamesSubscribe = []string{"*"}
		} else {
			// An empty first request would be a (legacy) wildcard: send
			// none until a name is referenced.
			if len(c.subscribed[t]) == 0 {
				continue
			}
			req.ResourceNamesSubscribe = slices.Clone(c.subscribed[t])
		}
		if len(out) == 0 {
			req.Node = c.cfg.Node
		}
		out = append(out, req)
	}
	return out
}

// Apply applies one response: it decodes and checks each resource, keeps
// the accepted ones, publishes the new config, and returns the ACK (or
// NACK) followed by any EDS/RDS subscription change.
func (c *Client) Apply(resp *discovery.DeltaDiscoveryResponse) []*discovery.DeltaDiscoveryRequest {
	t := resp.GetTypeUrl()
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}
	c.mu.Lock()
	held, known := c.held[t]
	if !known {
		c.mu.Unlock()
		ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: fmt.Sprintf("type %q was not subscribed", t)}
		c.log.Warn("NACK: response for a type not subscribed", "typeUrl", t)
		return []*discovery.DeltaDiscoveryRequest{ack}
	}
	var bad []string
	for _, r := range resp.GetResources() {
		if !wildcard(t) && !slices.Contains(c.subscribed[t], r.GetName()) {
			c.log.Debug("ignoring a resource not subscribed", "type", deltaxds.TypeName(t), "name", r.GetName())
			continue
		}
		v, err := c.decode(t, r)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s %q: %v", deltaxds.TypeName(t), r.GetName(), err))
			continue
		}
		held[r.GetName()] = entry{version: r.GetVersion(), value: v}
	}
	for _, name := range resp.GetRemovedResources() {
		delete(held, name)
	}
	var follow []*discovery.DeltaDiscoveryRequest
	switch t {
	case TypeCluster:
		follow = c.resubscribeLocked(TypeAssignment, c.edsNamesLocked())
	case TypeListener:
		follow = c.resubscribeLocked(TypeRoute, c.rdsNamesLocked())
	}
	cfg := Build(c.resourcesLocked())
	c.current = cfg
	if cfg.Complete() {
		c.complete = true
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		msg := fmt.Sprintf("%d of %d resources rejected, previous versions kept: %s", len(bad), len(resp.GetResources()), strings.Join(bad, "; "))
		ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: msg}
		c.lastNACK = msg
	}
	c.mu.Unlock()

	if ack.ErrorDetail != nil {
		c.log.Warn("NACK", "type", deltaxds.TypeName(t), "nonce", resp.GetNonce(), "error", ack.ErrorDetail.GetMessage())
	}
	c.log.Debug("xDS response applied", "type", deltaxds.TypeName(t), "resources", len(resp.GetResources()),
		"removed", len(resp.GetRemovedResources()), "rejected", len(bad), "missing", cfg.Missing)
	c.cfg.OnConfig(cfg)
	return append([]*discovery.DeltaDiscoveryRequest{ack}, follow...)
}

// resubscribeLocked changes the subscription of an EDS/RDS type to want
// and returns the request saying so (none if unchanged). Resources whose
// name is unsubscribed are dropped.
func (c *Client) resubscribeLocked(t string, want []string) []*discovery.DeltaDiscoveryRequest {
	have := c.subscribed[t]
	var sub, unsub []string
	for _, n := range want {
		if !slices.Contains(have, n) {
			sub = append(sub, n)
		}
	}
	for _, n := range have {
		if !slices.Contains(want, n) {
			unsub = append(unsub, n)
			delete(c.held[t], n)
		}
	}
	if len(sub) == 0 && len(unsub) == 0 {
		return nil
	}
	c.subscribed[t] = want
	return []*discovery.DeltaDiscoveryRequest{{TypeUrl: t, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}}
}

func (c *Client) edsNamesLocked() []string {
	var out []string
	for _, e := range c.held[TypeCluster] {
		if cl := e.value.(Cluster); !cl.Fixed && !slices.Contains(out, cl.EDSName) {
			out = append(out, cl.EDSName)
		}
	}
	slices.Sort(out)
	return out
}

func (c *Client) rdsNamesLocked() []string {
	var out []string
	for _, e := range c.held[TypeListener] {
		for _, n := range e.value.(Listener).RouteNames() {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

func (c *Client) resourcesLocked() Resources {
	r := Resources{
		Listeners:   map[string]Listener{},
		Clusters:    map[string]Cluster{},
		Assignments: map[string][]model.Endpoint{},
		Routes:      map[string]*model.RouteTable{},
		Versions:    map[string]string{},
	}
	for t, m := range c.held {
		for name, e := range m {
			r.Versions[deltaxds.TypeName(t)+"/"+name] = e.version
			switch v := e.value.(type) {
			case Listener:
				r.Listeners[name] = v
			case Cluster:
				r.Clusters[name] = v
			case []model.Endpoint:
				r.Assignments[name] = v
			case *model.RouteTable:
				r.Routes[name] = v
			}
		}
	}
	return r
}

// decode unmarshals and parses one resource.
func (c *Client) decode(t string, r *discovery.Resource) (any, error) {
	if r.GetName() == "" {
		return nil, errors.New("resource has no name")
	}
	body := r.GetResource()
	if body == nil {
		return nil, errors.New("resource has no body")
	}
	if body.GetTypeUrl() != t {
		return nil, fmt.Errorf("body is a %q, not a %q", body.GetTypeUrl(), t)
	}
	var (
		m    proto.Message
		name func() string
	)
	switch t {
	case TypeListener:
		l := &listenerv3.Listener{}
		m, name = l, l.GetName
	case TypeCluster:
		cl := &clusterv3.Cluster{}
		m, name = cl, cl.GetName
	case TypeAssignment:
		cla := &endpointv3.ClusterLoadAssignment{}
		m, name = cla, cla.GetClusterName
	case TypeRoute:
		rc := &routev3.RouteConfiguration{}
		m, name = rc, rc.GetName
	}
	if err := proto.Unmarshal(body.GetValue(), m); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if name() != r.GetName() {
		return nil, fmt.Errorf("the resource is named %q inside", name())
	}
	switch v := m.(type) {
	case *listenerv3.Listener:
		return ParseListener(v, c.cfg.TrustDomain)
	case *clusterv3.Cluster:
		return ParseCluster(v)
	case *endpointv3.ClusterLoadAssignment:
		return ParseAssignment(v, c.cfg.TrustDomain)
	default:
		return ParseRoute(m.(*routev3.RouteConfiguration))
	}
}

// Current returns the last published config (nil before the first).
func (c *Client) Current() *model.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// Subscriptions returns the EDS and RDS names subscribed (admin output).
func (c *Client) Subscriptions() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for t, names := range c.subscribed {
		out[deltaxds.TypeName(t)] = slices.Clone(names)
	}
	return maps.Clone(out)
}
