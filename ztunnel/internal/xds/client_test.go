package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

// fakeADS is a hand-written delta ADS server: every stream it accepts is
// handed to the test, which reads the client's requests and writes
// responses.
type fakeADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	streams chan *fakeStream
}

type fakeStream struct {
	reqs  chan *discovery.DeltaDiscoveryRequest
	resps chan *discovery.DeltaDiscoveryResponse
	end   chan error // the handler returns this
}

func (f *fakeADS) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	fs := &fakeStream{
		reqs:  make(chan *discovery.DeltaDiscoveryRequest, 16),
		resps: make(chan *discovery.DeltaDiscoveryResponse),
		end:   make(chan error, 1),
	}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				close(fs.reqs)
				return
			}
			fs.reqs <- r
		}
	}()
	select {
	case f.streams <- fs:
	case <-st.Context().Done():
		return nil
	}
	for {
		select {
		case r := <-fs.resps:
			if err := st.Send(r); err != nil {
				return err
			}
		case err := <-fs.end:
			return err
		case <-st.Context().Done():
			return nil
		}
	}
}

// serve starts a gRPC server with the fake on lis; it is stopped at cleanup
// or by the returned function.
func serve(t *testing.T, lis net.Listener, f *fakeADS) func() {
	t.Helper()
	srv := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(srv, f)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	var once sync.Once
	stop := func() { once.Do(func() { srv.Stop(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func (fs *fakeStream) next(t *testing.T) *discovery.DeltaDiscoveryRequest {
	t.Helper()
	select {
	case r, ok := <-fs.reqs:
		if !ok {
			t.Fatal("stream closed while waiting for a request")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request from the client within 10s")
	}
	return nil
}

func (fs *fakeStream) send(t *testing.T, r *discovery.DeltaDiscoveryResponse) *discovery.DeltaDiscoveryRequest {
	t.Helper()
	select {
	case fs.resps <- r:
	case <-time.After(10 * time.Second):
		t.Fatal("could not send a response within 10s")
	}
	ack := fs.next(t)
	if ack.GetResponseNonce() != r.GetNonce() || ack.GetTypeUrl() != r.GetTypeUrl() {
		t.Fatalf("ACK for nonce %q type %q, want nonce %q type %q", ack.GetResponseNonce(), ack.GetTypeUrl(), r.GetNonce(), r.GetTypeUrl())
	}
	return ack
}

func acceptStream(t *testing.T, f *fakeADS) *fakeStream {
	t.Helper()
	select {
	case fs := <-f.streams:
		return fs
	case <-time.After(10 * time.Second):
		t.Fatal("client did not open a stream within 10s")
	}
	return nil
}

func addrRes(t *testing.T, name, version string, a *workloadv1alpha1.Address) *discovery.Resource {
	t.Helper()
	body, err := anypb.New(a)
	if err != nil {
		t.Fatal(err)
	}
	return &discovery.Resource{Name: name, Version: version, Resource: body}
}

func wl(uid, node, ip string, status workloadv1alpha1.WorkloadStatus) *workloadv1alpha1.Address {
	return &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Workload{Workload: &workloadv1alpha1.Workload{
		Uid: uid, Name: "pod-" + uid, Namespace: "ns1", ServiceAccount: "default", TrustDomain: "cluster.local",
		Node: node, Addresses: [][]byte{netip.MustParseAddr(ip).AsSlice()},
		TunnelProtocol: workloadv1alpha1.TunnelProtocol_HBONE, Status: status,
		Services: map[string]*workloadv1alpha1.PortList{"ns1/echo.ns1.svc.cluster.local": {Ports: []*workloadv1alpha1.Port{{ServicePort: 80, TargetPort: 8080}}}},
	}}}
}

func svc() *workloadv1alpha1.Address {
	return &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Service{Service: &workloadv1alpha1.Service{
		Name: "echo", Namespace: "ns1", Hostname: "echo.ns1.svc.cluster.local",
		Addresses: []*workloadv1alpha1.NetworkAddress{{Address: netip.MustParseAddr("10.96.0.10").AsSlice()}, {Address: netip.MustParseAddr("fd00:96::10").AsSlice()}},
		Ports:     []*workloadv1alpha1.Port{{ServicePort: 80, TargetPort: 8080}},
	}}}
}

// eventually polls cond until it holds (10s at most); it asserts an
// outcome, never a duration.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientDeltaLifecycle(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	f := &fakeADS{streams: make(chan *fakeStream)}
	stopServer := serve(t, lis, f)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	store := state.NewStore()
	c, err := New(Config{Conn: conn, Store: store, NodeID: "ztunnel~node1", RetryBase: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	s1 := acceptStream(t, f)
	var sub []*discovery.DeltaDiscoveryRequest
	sub = append(sub, s1.next(t), s1.next(t))
	for i, want := range typeURLs {
		r := sub[i]
		if r.GetTypeUrl() != want || len(r.GetResourceNamesSubscribe()) != 1 || r.GetResourceNamesSubscribe()[0] != "*" {
			t.Fatalf("subscription %d: type %q names %q, want %q [*]", i, r.GetTypeUrl(), r.GetResourceNamesSubscribe(), want)
		}
		if len(r.GetInitialResourceVersions()) != 0 {
			t.Fatalf("first stream sent initial_resource_versions %v", r.GetInitialResourceVersions())
		}
	}
	if sub[0].GetNode().GetId() != "ztunnel~node1" {
		t.Fatalf("node id %q", sub[0].GetNode().GetId())
	}
	if c.Ready() == nil {
		t.Fatal("ready before any response")
	}

	t.Run("initial sync", func(t *testing.T) {
		ack := s1.send(t, &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "n1", Resources: []*discovery.Resource{
			addrRes(t, "w1", "v1", wl("w1", "node1", "10.0.1.1", workloadv1alpha1.WorkloadStatus_HEALTHY)),
			addrRes(t, "w2", "v1", wl("w2", "node2", "fd00:10::2", workloadv1alpha1.WorkloadStatus_HEALTHY)),
			addrRes(t, "ns1/echo.ns1.svc.cluster.local", "v1", svc()),
		}})
		if ack.GetErrorDetail() != nil {
			t.Fatalf("NACK: %v", ack.GetErrorDetail())
		}
		if c.Ready() == nil {
			t.Fatal("ready before the Authorization response")
		}
		if ack := s1.send(t, &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AuthorizationTypeURL, Nonce: "a1"}); ack.GetErrorDetail() != nil {
			t.Fatalf("NACK: %v", ack.GetErrorDetail())
		}
		if err := c.Ready(); err != nil {
			t.Fatalf("not ready after both responses: %v", err)
		}
		snap := store.Current()
		w, ok := snap.WorkloadByIP(netip.MustParseAddr("10.0.1.1"))
		if !ok || w.UID != "w1" || !w.InMesh() || w.Node != "node1" {
			t.Fatalf("w1 by IPv4: %+v %v", w, ok)
		}
		if w, ok := snap.WorkloadByIP(netip.MustParseAddr("fd00:10::2")); !ok || w.UID != "w2" {
			t.Fatalf("w2 by IPv6: %+v %v", w, ok)
		}
		if eps := snap.Endpoints("ns1/echo.ns1.svc.cluster.local"); len(eps) != 2 {
			t.Fatalf("service endpoints: %d, want 2", len(eps))
		}
		if _, target, ok, portOK := snap.ServiceByAddr(netip.MustParseAddrPort("[fd00:96::10]:80")); !ok || !portOK || target != 8080 {
			t.Fatalf("service by IPv6 VIP: target %d ok %v portOK %v", target, ok, portOK)
		}
	})

	t.Run("one update", func(t *testing.T) {
		ack := s1.send(t, &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "n2", Resources: []*discovery.Resource{
			addrRes(t, "w1", "v2", wl("w1", "node1", "10.0.1.1", workloadv1alpha1.WorkloadStatus_UNHEALTHY)),
		}})
		if ack.GetErrorDetail() != nil {
			t.Fatalf("NACK: %v", ack.GetErrorDetail())
		}
		snap := store.Current()
		if w, _ := snap.WorkloadByUID("w1"); w.Status != model.StatusUnhealthy {
			t.Fatalf("w1 status %s, want UNHEALTHY", w.Status)
		}
		if len(snap.Workloads()) != 2 || len(snap.Services()) != 1 {
			t.Fatalf("update changed other resources: %d workloads %d services", len(snap.Workloads()), len(snap.Services()))
		}
	})

	t.Run("removal", func(t *testing.T) {
		ack := s1.send(t, &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "n3", RemovedResources: []string{"w1"}})
		if ack.GetErrorDetail() != nil {
			t.Fatalf("NACK: %v", ack.GetErrorDetail())
		}
		snap := store.Current()
		if _, ok := snap.WorkloadByUID("w1"); ok {
			t.Fatal("w1 still present after removal")
		}
		if _, ok := snap.WorkloadByIP(netip.MustParseAddr("10.0.1.1")); ok {
			t.Fatal("w1's IPv4 address still resolves")
		}
		if _, ok := snap.WorkloadByUID("w2"); !ok {
			t.Fatal("w2 lost by w1's removal")
		}
	})

	t.Run("NACK on bad resource keeps the rest", func(t *testing.T) {
		bad := wl("w4", "node1", "10.0.1.4", workloadv1alpha1.WorkloadStatus_HEALTHY)
		bad.GetWorkload().Addresses = [][]byte{{10, 0, 1}} // 3 bytes
		ack := s1.send(t, &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "n4", Resources: []*discovery.Resource{
			addrRes(t, "w3", "v1", wl("w3", "node1", "10.0.1.3", workloadv1alpha1.WorkloadStatus_HEALTHY)),
			addrRes(t, "w4", "v1", bad),
		}})
		if ack.GetErrorDetail() == nil {
			t.Fatal("bad resource was ACKed")
		}
		if msg := ack.GetErrorDetail().GetMessage(); !strings.Contains(msg, "w4") || !strings.Contains(msg, "3 bytes") {
			t.Fatalf("error_detail %q does not name w4 and its problem", msg)
		}
		snap := store.Current()
		if _, ok := snap.WorkloadByUID("w3"); !ok {
			t.Fatal("the valid resource w3 of a NACKed response was not applied")
		}
		if _, ok := snap.WorkloadByUID("w4"); ok {
			t.Fatal("the bad resource w4 was applied")
		}
	})

	t.Run("reconnect sends initial_resource_versions and state is kept while down", func(t *testing.T) {
		before := store.Current()
		stopServer()
		eventually(t, "client notices the server is gone", func() bool { return !c.Connected() })
		if store.Current() != before {
			t.Fatal("state replaced while the control plane is away")
		}
		if err := c.Ready(); err != nil {
			t.Fatalf("not ready while the control plane is away: %v", err)
		}
		lis2, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("re-listening on %s: %v", addr, err)
		}
		f2 := &fakeADS{streams: make(chan *fakeStream)}
		serve(t, lis2, f2)
		s2 := acceptStream(t, f2)
		r := s2.next(t)
		want := map[string]string{"w2": "v1", "w3": "v1", "ns1/echo.ns1.svc.cluster.local": "v1"}
		got := r.GetInitialResourceVersions()
		if r.GetTypeUrl() != workloadv1alpha1.AddressTypeURL || len(got) != len(want) {
			t.Fatalf("resubscription %q with versions %v, want %v", r.GetTypeUrl(), got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("initial_resource_versions %v, want %v", got, want)
			}
		}
		if r2 := s2.next(t); r2.GetTypeUrl() != workloadv1alpha1.AuthorizationTypeURL {
			t.Fatalf("second subscription for %q", r2.GetTypeUrl())
		}
		// The server sends only the difference: w3 is gone.
		if ack := s2.send(t, &discovery.DeltaDiscoveryResponse{TypeUrl: workloadv1alpha1.AddressTypeURL, Nonce: "m1", RemovedResources: []string{"w3"}}); ack.GetErrorDetail() != nil {
			t.Fatalf("NACK: %v", ack.GetErrorDetail())
		}
		snap := store.Current()
		if _, ok := snap.WorkloadByUID("w3"); ok {
			t.Fatal("w3 kept after the resync removed it")
		}
		if _, ok := snap.WorkloadByUID("w2"); !ok {
			t.Fatal("w2 lost across the reconnect")
		}
		s2.end <- errors.New("bye")
	})
}
