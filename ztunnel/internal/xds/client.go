// Package xds is ztunnel's workload-discovery client: a delta ADS stream
// (envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources)
// to the control plane, subscribed with a wildcard to the Address and
// Authorization resources of ambit.dev/api/workload/v1alpha1.
//
// The client keeps every accepted resource by name, applies each response
// incrementally (added/updated resources replace their name, removed names
// are dropped), rebuilds the state snapshot and stores it with
// state.Store.Replace, then ACKs the response with its nonce. A resource
// that does not convert is NACKed (error_detail names it) and its previous
// version, if any, is kept; the rest of the response is applied.
//
// When the stream breaks, the client reconnects with capped, jittered
// exponential backoff and lists what it holds in initial_resource_versions,
// so the server sends only the difference. Meanwhile the last state keeps
// being served.
package xds

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

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/pkg/deltaxds"
	"ambit.dev/pkg/identity"
	"ambit.dev/ztunnel/internal/state"
)

// Defaults of Config.
const (
	DefaultRetryBase = 500 * time.Millisecond
	DefaultRetryMax  = 30 * time.Second
)

// typeURLs are the subscribed resource types, in subscription order.
var typeURLs = []string{workloadv1alpha1.AddressTypeURL, workloadv1alpha1.AuthorizationTypeURL}

// Config configures a Client. Conn and Store are required.
type Config struct {
	// Conn is the gRPC connection to the control plane (its transport
	// security is the caller's choice: TLS verified with the mesh root in
	// production).
	Conn grpc.ClientConnInterface
	// Store receives every new snapshot.
	Store *state.Store
	// NodeID identifies this ztunnel to the control plane (xDS Node.id).
	NodeID string
	// TrustDomain fills a workload's empty trust_domain.
	TrustDomain string
	// RetryBase and RetryMax bound the reconnect backoff (defaults
	// DefaultRetryBase, DefaultRetryMax).
	RetryBase, RetryMax time.Duration
	Logger              *slog.Logger
}

// entry is one accepted resource.
type entry struct {
	version string
	addr    address                         // Address resources
	auth    *workloadv1alpha1.Authorization // Authorization resources
}

// Client is the delta ADS client. Build it with New and call Run.
type Client struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	resources map[string]map[string]entry // type URL -> name -> entry
	synced    map[string]bool             // type URLs with a first response
	connected bool
	lastErr   error
}

// New validates cfg and returns a Client; it does not connect.
func New(cfg Config) (*Client, error) {
	if cfg.Conn == nil || cfg.Store == nil {
		return nil, errors.New("xds: Config.Conn and Store are required")
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryBase {
		return nil, fmt.Errorf("xds: RetryMax %s is below RetryBase %s", cfg.RetryMax, cfg.RetryBase)
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = identity.DefaultTrustDomain
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "xds"),
		resources: map[string]map[string]entry{},
		synced:    map[string]bool{},
	}
	for _, t := range typeURLs {
		c.resources[t] = map[string]entry{}
	}
	return c, nil
}

// Ready returns nil once a first response of every subscribed type has
// been applied (since start; a later disconnection keeps it ready, as the
// last state keeps being served).
func (c *Client) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var missing []string
	for _, t := range typeURLs {
		if !c.synced[t] {
			missing = append(missing, deltaxds.TypeName(t))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	err := fmt.Errorf("xds: no response from the control plane yet for %s", strings.Join(missing, ", "))
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
// (ambit.dev/pkg/deltaxds) and serving the last state meanwhile. It returns
// nil when ctx is done.
func (c *Client) Run(ctx context.Context) error {
	deltaxds.Run(ctx, deltaxds.Session{
		Conn: c.cfg.Conn, RetryBase: c.cfg.RetryBase, RetryMax: c.cfg.RetryMax,
		Initial: c.initialRequests,
		Handle: func(resp *discovery.DeltaDiscoveryResponse) []*discovery.DeltaDiscoveryRequest {
			return []*discovery.DeltaDiscoveryRequest{c.apply(resp)}
		},
		Opened: func() {
			c.mu.Lock()
			c.connected = true
			c.mu.Unlock()
			c.log.Info("xDS stream open", "versionsHeld", c.count())
		},
		Closed: func(err error) {
			c.mu.Lock()
			c.connected = false
			if err != nil {
				c.lastErr = err
			}
			c.mu.Unlock()
		},
		OpenHint: "is the control plane reachable and its certificate signed by the mesh root?",
		Log:      c.log,
	})
	return nil
}

// initialRequests subscribes to every type with a wildcard, with the
// versions held; the first request carries the node.
func (c *Client) initialRequests() []*discovery.DeltaDiscoveryRequest {
	out := make([]*discovery.DeltaDiscoveryRequest, 0, len(typeURLs))
	for i, t := range typeURLs {
		req := &discovery.DeltaDiscoveryRequest{
			TypeUrl:                 t,
			ResourceNamesSubscribe:  []string{"*"},
			InitialResourceVersions: c.versions(t),
		}
		if i == 0 {
			req.Node = &corev3.Node{Id: c.cfg.NodeID}
		}
		out = append(out, req)
	}
	return out
}

// versions lists the accepted resources of typeURL and their versions.
func (c *Client) versions(typeURL string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.resources[typeURL]))
	for name, e := range c.resources[typeURL] {
		out[name] = e.version
	}
	return out
}

func (c *Client) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.resources {
		n += len(m)
	}
	return n
}

// apply applies one response and returns its ACK or NACK.
func (c *Client) apply(resp *discovery.DeltaDiscoveryResponse) *discovery.DeltaDiscoveryRequest {
	t := resp.GetTypeUrl()
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}
	c.mu.Lock()
	defer c.mu.Unlock()
	held, known := c.resources[t]
	if !known {
		ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: fmt.Sprintf("type %q was not subscribed", t)}
		c.log.Warn("NACK: response for a type not subscribed", "typeUrl", t)
		return ack
	}
	var bad []string
	for _, r := range resp.GetResources() {
		e, err := c.convert(t, r)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", r.GetName(), err))
			continue
		}
		held[r.GetName()] = e
	}
	for _, name := range resp.GetRemovedResources() {
		delete(held, name)
	}
	c.synced[t] = true
	if err := c.publish(); err != nil {
		bad = append(bad, err.Error())
	}
	c.log.Debug("xDS response applied", "type", deltaxds.TypeName(t), "updated", len(resp.GetResources())-len(bad),
		"removed", len(resp.GetRemovedResources()), "rejected", len(bad), "nonce", resp.GetNonce())
	if len(bad) > 0 {
		slices.Sort(bad)
		msg := fmt.Sprintf("%d of %d %s resources rejected (previous versions kept): %s",
			len(bad), len(resp.GetResources()), deltaxds.TypeName(t), strings.Join(bad, "; "))
		ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: msg}
		c.log.Warn("NACK", "type", deltaxds.TypeName(t), "nonce", resp.GetNonce(), "error", msg)
	}
	return ack
}

// convert decodes and checks one resource.
func (c *Client) convert(typeURL string, r *discovery.Resource) (entry, error) {
	if r.GetName() == "" {
		return entry{}, errors.New("resource has no name")
	}
	if r.GetResource() == nil {
		return entry{}, errors.New("resource has no body")
	}
	if got := r.GetResource().GetTypeUrl(); got != typeURL {
		return entry{}, fmt.Errorf("body is a %q, not a %q", got, typeURL)
	}
	e := entry{version: r.GetVersion()}
	switch typeURL {
	case workloadv1alpha1.AddressTypeURL:
		var a workloadv1alpha1.Address
		if err := proto.Unmarshal(r.GetResource().GetValue(), &a); err != nil {
			return entry{}, fmt.Errorf("decoding: %w", err)
		}
		conv, err := convertAddress(r.GetName(), &a, c.cfg.TrustDomain)
		if err != nil {
			return entry{}, err
		}
		e.addr = conv
	case workloadv1alpha1.AuthorizationTypeURL:
		var a workloadv1alpha1.Authorization
		if err := proto.Unmarshal(r.GetResource().GetValue(), &a); err != nil {
			return entry{}, fmt.Errorf("decoding: %w", err)
		}
		if err := checkAuthorization(r.GetName(), &a); err != nil {
			return entry{}, err
		}
		e.auth = &a
	}
	return e, nil
}

// publish builds a snapshot from every accepted resource and stores it.
// c.mu must be held.
func (c *Client) publish() error {
	addrs := make(map[string]address, len(c.resources[workloadv1alpha1.AddressTypeURL]))
	for name, e := range c.resources[workloadv1alpha1.AddressTypeURL] {
		addrs[name] = e.addr
	}
	auths := make(map[string]*workloadv1alpha1.Authorization, len(c.resources[workloadv1alpha1.AuthorizationTypeURL]))
	for name, e := range c.resources[workloadv1alpha1.AuthorizationTypeURL] {
		auths[name] = e.auth
	}
	snap, err := buildSnapshot(addrs, auths, c.log)
	if err != nil {
		return fmt.Errorf("building the state (last good state kept): %w", err)
	}
	c.cfg.Store.Replace(snap)
	return nil
}

// Policies returns the Authorization resources held, sorted by name.
func (c *Client) Policies() []*workloadv1alpha1.Authorization {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.resources[workloadv1alpha1.AuthorizationTypeURL]
	out := make([]*workloadv1alpha1.Authorization, 0, len(held))
	for _, name := range slices.Sorted(maps.Keys(held)) {
		out = append(out, held[name].auth)
	}
	return out
}
