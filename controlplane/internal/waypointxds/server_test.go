package waypointxds

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recvTimeout only guards against a hung test; no test asserts on time.
const recvTimeout = 20 * time.Second

const webHost = "web.demo.svc.cluster.local"

// harness is the control plane's xDS port as app.go would wire it: one
// gRPC server on 127.0.0.1:0 whose AggregatedDiscoveryService is a
// Dispatcher over the workload-discovery server and the waypoint server.
type harness struct {
	wp   *Server
	zt   *xds.Server
	reg  *prometheus.Registry
	conn *grpc.ClientConn
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	wp, err := NewServer(log, reg)
	if err != nil {
		t.Fatal(err)
	}
	zt, err := xds.New(log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ztADS, err := CaptureADS(zt.Register)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDispatcher(ztADS, wp)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	d.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { _ = gs.Serve(lis); done <- struct{}{} }()
	go func() { _ = wp.Run(ctx); done <- struct{}{} }()
	go func() { _ = zt.Run(ctx); done <- struct{}{} }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		gs.GracefulStop()
		for range 3 {
			<-done
		}
	})
	return &harness{wp: wp, zt: zt, reg: reg, conn: conn}
}

// client is a raw delta ADS client, as the Go waypoint will use it.
type client struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   string
	// held is what the client holds: type URL → name → version.
	held map[string]map[string]string
	sent bool
}

func (h *harness) connect(t *testing.T, nodeID string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, stream: stream, node: nodeID, held: map[string]map[string]string{}}
	for _, typ := range servedTypes {
		c.held[typ] = map[string]string{}
	}
	return c
}

func waypointNode(gw string) (string, map[string]string) {
	return NodeID(netip.MustParseAddr("10.244.1.9"), "waypoint-abc", "demo", ""), map[string]string{MetadataGateway: gw, MetadataNamespace: "demo"}
}

// send sends a request; the first one of the stream carries the node.
func (c *client) send(req *discovery.DeltaDiscoveryRequest, md map[string]string) {
	c.t.Helper()
	if !c.sent {
		req.Node = node(c.node, md)
		c.sent = true
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("Send: %v", err)
	}
}

// recv returns the next response, applies it to held and ACKs it.
func (c *client) recv() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	r, err := c.recvErr()
	if err != nil {
		c.t.Fatalf("Recv: %v", err)
	}
	held := c.held[r.GetTypeUrl()]
	for _, res := range r.GetResources() {
		if res.GetResource().GetTypeUrl() != r.GetTypeUrl() {
			c.t.Fatalf("resource %s has type %s in a %s response", res.GetName(), res.GetResource().GetTypeUrl(), r.GetTypeUrl())
		}
		held[res.GetName()] = res.GetVersion()
	}
	for _, n := range r.GetRemovedResources() {
		delete(held, n)
	}
	if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
		c.t.Fatalf("ACK: %v", err)
	}
	return r
}

func (c *client) recvErr() (*discovery.DeltaDiscoveryResponse, error) {
	type result struct {
		r   *discovery.DeltaDiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := c.stream.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		return res.r, res.err
	case <-time.After(recvTimeout):
		c.t.Fatal("no DeltaDiscoveryResponse (test hung)")
		return nil, nil
	}
}

// recvTypes receives one response per type in types (in any order) and
// returns them by type.
func (c *client) recvTypes(types ...string) map[string]*discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	out := map[string]*discovery.DeltaDiscoveryResponse{}
	for range types {
		r := c.recv()
		if !slices.Contains(types, r.GetTypeUrl()) || out[r.GetTypeUrl()] != nil {
			c.t.Fatalf("unexpected %s response (resources %v, removed %v); waiting for %v", shortType(r.GetTypeUrl()), names(r), r.GetRemovedResources(), types)
		}
		out[r.GetTypeUrl()] = r
	}
	return out
}

func names(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, x := range r.GetResources() {
		out = append(out, x.GetName())
	}
	slices.Sort(out)
	return out
}

// twoServices is exampleInput plus a TCP service api.
func twoServices() Input {
	in := exampleInput()
	in.Services = append(in.Services, Service{
		Namespace: "demo", Name: "api", VIPs: []netip.Addr{addr("fd00:10:96::b")},
		Ports:     []Port{{Name: "grpc", Port: 9000, TargetPort: 9000}},
		Endpoints: []Endpoint{{Addresses: []netip.Addr{addr("fd00:10:244:1::5")}, Identity: "spiffe://cluster.local/ns/demo/sa/api", Healthy: true}},
	})
	return in
}

// subscribeAll opens the LDS/CDS wildcards, receives them, then
// subscribes to every EDS and RDS name they reference and receives those.
func (c *client) subscribeAll(md map[string]string) map[string]*discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType}, md)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType}, md)
	got := c.recvTypes(resource.ClusterType, resource.ListenerType)
	var eds, rds []string
	for _, n := range slices.Sorted(maps.Keys(c.held[resource.ClusterType])) {
		if strings.HasPrefix(n, "outbound|") {
			eds = append(eds, n)
		}
	}
	for _, r := range got[resource.ListenerType].GetResources() {
		l := &listenerv3.Listener{}
		if err := r.GetResource().UnmarshalTo(l); err != nil {
			c.t.Fatal(err)
		}
		if l.GetName() == ListenerMainInternal {
			for _, fc := range l.GetFilterChains() {
				if strings.HasPrefix(fc.GetName(), "inbound-vip|") && !strings.Contains(fc.GetName(), "|tcp|") {
					parts := strings.Split(fc.GetName(), "|") // inbound-vip|<port>|<proto>|<host>
					rds = append(rds, parts[3]+":"+parts[1])
				}
			}
		}
	}
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: eds}, nil)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResourceNamesSubscribe: rds}, nil)
	for typ, r := range c.recvTypes(resource.EndpointType, resource.RouteType) {
		got[typ] = r
	}
	return got
}

func TestWaypointReceivesConfigThenOnlyChanges(t *testing.T) {
	h := newHarness(t)
	if err := h.wp.Update("demo/waypoint", twoServices()); err != nil {
		t.Fatal(err)
	}
	id, md := waypointNode("demo/waypoint")
	c := h.connect(t, id)
	got := c.subscribeAll(md)

	if want := []string{ListenerConnectOriginate, ListenerConnectTerminate, ListenerMainInternal}; !slices.Equal(names(got[resource.ListenerType]), want) {
		t.Errorf("listeners %v, want %v", names(got[resource.ListenerType]), want)
	}
	wantClusters := []string{BlackHoleCluster, ListenerConnectOriginate, ListenerMainInternal, ClusterName("api.demo.svc.cluster.local", 9000), ClusterName(webHost, 80)}
	slices.Sort(wantClusters)
	if !slices.Equal(names(got[resource.ClusterType]), wantClusters) {
		t.Errorf("clusters %v, want %v", names(got[resource.ClusterType]), wantClusters)
	}
	wantEDS := []string{ClusterName("api.demo.svc.cluster.local", 9000), ClusterName(webHost, 80)}
	slices.Sort(wantEDS)
	if !slices.Equal(names(got[resource.EndpointType]), wantEDS) {
		t.Errorf("endpoints %v, want %v", names(got[resource.EndpointType]), wantEDS)
	}
	wantRDS := []string{RouteName("api.demo.svc.cluster.local", 9000), RouteName(webHost, 80)}
	slices.Sort(wantRDS)
	if !slices.Equal(names(got[resource.RouteType]), wantRDS) {
		t.Errorf("routes %v, want %v", names(got[resource.RouteType]), wantRDS)
	}

	// One endpoint of web becomes unready: only web's assignment is sent.
	in := twoServices()
	in.Services[0].Endpoints[0].Healthy = false
	if err := h.wp.Update("demo/waypoint", in); err != nil {
		t.Fatal(err)
	}
	r := c.recv()
	if r.GetTypeUrl() != resource.EndpointType || !slices.Equal(names(r), []string{ClusterName(webHost, 80)}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("after an endpoint change got %s %v (removed %v), want only ClusterLoadAssignment %s", shortType(r.GetTypeUrl()), names(r), r.GetRemovedResources(), ClusterName(webHost, 80))
	}
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := r.GetResources()[0].GetResource().UnmarshalTo(cla); err != nil {
		t.Fatal(err)
	}
	var unhealthy []string
	for _, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
		if e.GetHealthStatus().String() == "UNHEALTHY" {
			unhealthy = append(unhealthy, e.GetEndpoint().GetAddress().GetEnvoyInternalAddress().GetEndpointId())
		}
	}
	if !slices.Equal(unhealthy, []string{"10.244.2.7:8080"}) {
		t.Errorf("unhealthy endpoints %v, want [10.244.2.7:8080]", unhealthy)
	}

	// The same input again sends nothing; the next change (web gains a
	// TCP port) is what arrives next: main_internal and the new cluster,
	// nothing for the unchanged resources.
	if err := h.wp.Update("demo/waypoint", in); err != nil {
		t.Fatal(err)
	}
	in.Services[0].Ports = append(in.Services[0].Ports, Port{Name: "redis", Port: 6379, TargetPort: 6379})
	if err := h.wp.Update("demo/waypoint", in); err != nil {
		t.Fatal(err)
	}
	next := c.recvTypes(resource.ClusterType, resource.ListenerType)
	if n := names(next[resource.ClusterType]); !slices.Equal(n, []string{ClusterName(webHost, 6379)}) {
		t.Errorf("clusters pushed %v, want only the new one", n)
	}
	if n := names(next[resource.ListenerType]); !slices.Equal(n, []string{ListenerMainInternal}) {
		t.Errorf("listeners pushed %v, want only main_internal", n)
	}

	// Unsubscribing and removing: the port goes, its cluster is removed.
	in.Services[0].Ports = in.Services[0].Ports[:1]
	if err := h.wp.Update("demo/waypoint", in); err != nil {
		t.Fatal(err)
	}
	next = c.recvTypes(resource.ClusterType, resource.ListenerType)
	if rm := next[resource.ClusterType].GetRemovedResources(); !slices.Equal(rm, []string{ClusterName(webHost, 6379)}) {
		t.Errorf("removed clusters %v, want the redis one", rm)
	}

	if v := testutil.ToFloat64(h.wp.metrics.clients); v != 1 {
		t.Errorf("connected clients metric = %v, want 1", v)
	}
}

func TestReconnectGetsOnlyTheDifference(t *testing.T) {
	h := newHarness(t)
	if err := h.wp.Update("demo/waypoint", exampleInput()); err != nil {
		t.Fatal(err)
	}
	id, md := waypointNode("demo/waypoint")
	first := h.connect(t, id)
	first.subscribeAll(md)

	// A second replica (or the same one after a restart of the control
	// plane) reconnects holding what the first received; the routes
	// changed meanwhile (a second VIP).
	in := exampleInput()
	in.Services[0].VIPs = append(in.Services[0].VIPs, addr("10.96.0.11"))
	if err := h.wp.Update("demo/waypoint", in); err != nil {
		t.Fatal(err)
	}
	c := h.connect(t, id)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, InitialResourceVersions: first.held[resource.ClusterType]}, md)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, InitialResourceVersions: first.held[resource.ListenerType]}, nil)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResourceNamesSubscribe: []string{RouteName(webHost, 80)},
		InitialResourceVersions: first.held[resource.RouteType]}, nil)
	got := c.recvTypes(resource.ClusterType, resource.ListenerType, resource.RouteType)
	if n := names(got[resource.ClusterType]); len(n) != 0 {
		t.Errorf("clusters resent on reconnect: %v", n)
	}
	if n := names(got[resource.ListenerType]); !slices.Equal(n, []string{ListenerMainInternal}) {
		t.Errorf("listeners on reconnect %v, want only main_internal (its prefix ranges changed)", n)
	}
	if n := names(got[resource.RouteType]); !slices.Equal(n, []string{RouteName(webHost, 80)}) {
		t.Errorf("routes on reconnect %v, want the changed one", n)
	}
}

func TestWaypointWaitsForItsConfiguration(t *testing.T) {
	h := newHarness(t)
	id, md := waypointNode("demo/waypoint")
	c := h.connect(t, id)
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType}, md)
	// Wait until the server holds the watch (synchronisation, not timing).
	deadline := time.Now().Add(recvTimeout)
	for {
		if st := h.wp.cache.GetStatusInfo("demo/waypoint"); st != nil && st.GetNumDeltaWatches() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never held the waypoint's watch")
		}
		time.Sleep(time.Millisecond)
	}
	if err := h.wp.Update("demo/waypoint", exampleInput()); err != nil {
		t.Fatal(err)
	}
	r := c.recv()
	if !slices.Equal(names(r), []string{ListenerConnectOriginate, ListenerConnectTerminate, ListenerMainInternal}) {
		t.Fatalf("first response %v, want the three listeners (never an empty answer before the configuration exists)", names(r))
	}

	// Remove tells the connected replica that everything is gone.
	h.wp.Remove("demo/waypoint")
	r = c.recv()
	rm := slices.Sorted(slices.Values(r.GetRemovedResources()))
	if !slices.Equal(rm, []string{ListenerConnectOriginate, ListenerConnectTerminate, ListenerMainInternal}) {
		t.Fatalf("after Remove got removed %v, want every listener", rm)
	}
	if h.wp.Resources("demo/waypoint") == nil {
		t.Error("Remove with a connected replica dropped the empty snapshot")
	}
	h.wp.Remove("other/none") // unknown: no effect, no panic
}

func TestRemoveWithoutClientsForgets(t *testing.T) {
	h := newHarness(t)
	if err := h.wp.Update("demo/waypoint", exampleInput()); err != nil {
		t.Fatal(err)
	}
	if h.wp.Resources("demo/waypoint") == nil {
		t.Fatal("no resources after Update")
	}
	h.wp.Remove("demo/waypoint")
	if h.wp.Resources("demo/waypoint") != nil {
		t.Error("resources still held after Remove without clients")
	}
}

func TestUpdateRefusals(t *testing.T) {
	h := newHarness(t)
	if err := h.wp.Update("demo/other", exampleInput()); err == nil || !strings.Contains(err.Error(), "given the input of waypoint") {
		t.Errorf("Update with a mismatched key: %v", err)
	}
	bad := exampleInput()
	bad.Services[0].Endpoints[0].Identity = ""
	if err := h.wp.Update("demo/waypoint", exampleInput()); err != nil {
		t.Fatal(err)
	}
	before := h.wp.Resources("demo/waypoint")
	if err := h.wp.Update("demo/waypoint", bad); err == nil || !strings.Contains(err.Error(), "keeps its previous configuration") {
		t.Errorf("Update with bad input: %v", err)
	}
	if after := h.wp.Resources("demo/waypoint"); len(after[resource.EndpointType]) != len(before[resource.EndpointType]) {
		t.Error("bad input changed the served configuration")
	}
}

func TestStreamRefusals(t *testing.T) {
	h := newHarness(t)
	if err := h.wp.Update("demo/waypoint", exampleInput()); err != nil {
		t.Fatal(err)
	}
	id, md := waypointNode("demo/waypoint")
	for _, tc := range []struct {
		name string
		id   string
		md   map[string]string
		typ  string
		want string
	}{
		{"waypoint without GATEWAY", id, map[string]string{}, resource.ListenerType, "GATEWAY"},
		{"waypoint of another namespace's Gateway", id, map[string]string{MetadataGateway: "prod/wp"}, resource.ListenerType, "another namespace"},
		{"type not served to waypoints", id, md, workloadv1alpha1.AddressTypeURL, "not served to waypoints"},
		{"secrets are not served", id, md, resource.SecretType, "not served to waypoints"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.connect(t, tc.id)
			c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: tc.typ}, tc.md)
			_, err := c.recvErr()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want InvalidArgument mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("state of the world", func(t *testing.T) {
		s, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).StreamAggregatedResources(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("got %v, want Unimplemented", err)
		}
	})
}

// TestDispatcherSendsZtunnelsToWorkloadDiscovery: the same port serves a
// ztunnel its Address resources and a waypoint its Envoy resources.
func TestDispatcherSendsZtunnelsToWorkloadDiscovery(t *testing.T) {
	h := newHarness(t)
	h.zt.MarkReady()
	err := h.zt.UpdateAddresses(map[string]*workloadv1alpha1.Address{"uid-1": {Type: &workloadv1alpha1.Address_Workload{Workload: &workloadv1alpha1.Workload{
		Uid: "uid-1", Name: "pod-1", Namespace: "demo", ServiceAccount: "default", TrustDomain: "cluster.local",
		Addresses: [][]byte{netip.MustParseAddr("10.244.1.5").AsSlice()},
	}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.wp.Update("demo/waypoint", exampleInput()); err != nil {
		t.Fatal(err)
	}

	zc := h.connect(t, "ztunnel~node-1")
	zc.held[workloadv1alpha1.AddressTypeURL] = map[string]string{}
	zc.send(&discovery.DeltaDiscoveryRequest{TypeUrl: workloadv1alpha1.AddressTypeURL, ResourceNamesSubscribe: []string{"*"}}, nil)
	r := zc.recv()
	if r.GetTypeUrl() != workloadv1alpha1.AddressTypeURL || !slices.Equal(names(r), []string{"uid-1"}) {
		t.Fatalf("ztunnel got %s %v, want Address [uid-1]", r.GetTypeUrl(), names(r))
	}

	id, md := waypointNode("demo/waypoint")
	wc := h.connect(t, id)
	wc.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType}, md)
	if r := wc.recv(); r.GetTypeUrl() != resource.ListenerType || len(r.GetResources()) != 3 {
		t.Fatalf("waypoint got %s with %d resources, want 3 listeners", r.GetTypeUrl(), len(r.GetResources()))
	}
}

func TestCaptureADS(t *testing.T) {
	if _, err := CaptureADS(func(grpc.ServiceRegistrar) {}); err == nil {
		t.Error("nothing registered: want an error")
	}
	other := grpc.ServiceDesc{ServiceName: "other.Service", HandlerType: (*any)(nil)}
	if _, err := CaptureADS(func(r grpc.ServiceRegistrar) { r.RegisterService(&other, struct{}{}) }); err == nil {
		t.Error("another service registered: want an error")
	}
}
