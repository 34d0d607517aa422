package xdsclient

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"ambit.dev/waypoint/internal/model"
	"ambit.dev/waypoint/internal/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type gatewayHash struct{}

func (gatewayHash) ID(n *corev3.Node) string {
	return n.GetMetadata().GetFields()[MetadataGateway].GetStringValue()
}

// adsServer is a go-control-plane delta ADS server on addr.
type adsServer struct {
	addr string
	stop func()

	mu   sync.Mutex
	reqs []*discovery.DeltaDiscoveryRequest
}

func startADS(t *testing.T, addr string, svcs []xdstest.Service) *adsServer {
	t.Helper()
	snaps := cache.NewSnapshotCache(true, gatewayHash{}, nil)
	res := map[resource.Type][]types.Resource{}
	for _, l := range xdstest.Listeners(td, svcs) {
		res[resource.ListenerType] = append(res[resource.ListenerType], l)
	}
	for _, c := range xdstest.Clusters(td, svcs) {
		res[resource.ClusterType] = append(res[resource.ClusterType], c)
	}
	for _, s := range svcs {
		res[resource.EndpointType] = append(res[resource.EndpointType], xdstest.Assignment(s))
		if s.IsHTTP() {
			res[resource.RouteType] = append(res[resource.RouteType], xdstest.Route(s))
		}
	}
	snap, err := cache.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Fatalf("fixture snapshot is not consistent: %v", err)
	}
	if err := snaps.SetSnapshot(context.Background(), "demo/waypoint", snap); err != nil {
		t.Fatal(err)
	}
	s := &adsServer{}
	ctx, cancel := context.WithCancel(context.Background())
	xds := server.NewServer(ctx, snaps, server.CallbackFuncs{StreamDeltaRequestFunc: func(_ int64, r *discovery.DeltaDiscoveryRequest) error {
		s.mu.Lock()
		s.reqs = append(s.reqs, r)
		s.mu.Unlock()
		return nil
	}})
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, xds)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	var once sync.Once
	s.stop = func() { once.Do(func() { cancel(); gs.Stop(); <-done }) }
	t.Cleanup(s.stop)
	return s
}

func (s *adsServer) requests() []*discovery.DeltaDiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discovery.DeltaDiscoveryRequest(nil), s.reqs...)
}

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// TestRunReconnectsKeepingConfig runs the client against a delta ADS
// server (IPv4 loopback, then IPv6), stops the server, checks the last
// config keeps serving, and restarts it on the same address with one
// endpoint changed: the client reconnects with the versions it holds and
// applies the difference.
func TestRunReconnectsKeepingConfig(t *testing.T) {
	for _, lo := range []struct{ name, addr string }{{"IPv4", "127.0.0.1:0"}, {"IPv6", "[::1]:0"}} {
		t.Run(lo.name, func(t *testing.T) {
			web, db := xdstest.Example(), tcpService()
			a := startADS(t, lo.addr, []xdstest.Service{web, db})
			conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			node, err := NodeInfo{PodIPs: mustIPs("fd00:10:244:1::9"), PodName: "w", Namespace: "demo", ServiceAccount: "waypoint",
				Gateway: "demo/waypoint", ClusterDomain: "cluster.local"}.Node()
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var last *model.Config
			c, err := New(Config{Conn: conn, Node: node, TrustDomain: td, RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
				OnConfig: func(cfg *model.Config) { mu.Lock(); last = cfg; mu.Unlock() },
				Logger:   slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			current := func() *model.Config { mu.Lock(); defer mu.Unlock(); return last }
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); c.Run(ctx) }()
			defer func() { cancel(); <-done }()

			waitFor(t, "complete config", c.Ready)
			if n := len(current().Clusters[web.ClusterName()].Endpoints); n != 2 {
				t.Fatalf("%d web endpoints", n)
			}
			a.stop()
			waitFor(t, "disconnected", func() error {
				if c.Connected() {
					return fmt.Errorf("still connected")
				}
				return nil
			})
			if err := c.Ready(); err != nil || current().Clusters[web.ClusterName()] == nil {
				t.Fatalf("lost the config while disconnected: %v", err)
			}

			web.Endpoints = web.Endpoints[:1]
			b := startADS(t, a.addr, []xdstest.Service{web, db})
			waitFor(t, "the endpoint change", func() error {
				if n := len(current().Clusters[web.ClusterName()].Endpoints); n != 1 {
					return fmt.Errorf("%d web endpoints", n)
				}
				return nil
			})
			reqs := b.requests()
			first := reqs[0]
			if first.GetNode().GetId() == "" || len(first.GetInitialResourceVersions()) != 3 || first.GetTypeUrl() != TypeListener {
				t.Fatalf("first request after reconnect: %v", first)
			}
			var eds *discovery.DeltaDiscoveryRequest
			for _, r := range reqs {
				if r.GetTypeUrl() == TypeAssignment && len(r.GetInitialResourceVersions()) > 0 {
					eds = r
					break
				}
			}
			if eds == nil || len(eds.GetResourceNamesSubscribe()) != 2 || eds.GetInitialResourceVersions()[web.ClusterName()] == "" {
				t.Fatalf("EDS re-subscription: %v", eds)
			}
			for _, r := range reqs {
				if r.GetErrorDetail() != nil {
					t.Fatalf("NACK: %v", r.GetErrorDetail())
				}
			}
		})
	}
}
