package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recvTimeout only guards against a hung test; no test asserts on time.
const recvTimeout = 20 * time.Second

type harness struct {
	stop func()
	srv  *Server
	reg  *prometheus.Registry
	conn *grpc.ClientConn
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := New(slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	srv.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = gs.Serve(lis); done <- struct{}{} }()
	go func() { _ = srv.Run(ctx); done <- struct{}{} }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		gs.GracefulStop()
		<-done
		<-done
	})
	return &harness{srv: srv, reg: reg, conn: conn, stop: cancel}
}

// client is a minimal delta ADS client, as a ztunnel would use it.
type client struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
	// state is what the client holds: name -> version.
	state map[string]string
}

func (h *harness) connect(t *testing.T, initial map[string]string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	c := &client{t: t, stream: stream, cancel: cancel, state: map[string]string{}}
	for k, v := range initial {
		c.state[k] = v
	}
	err = stream.Send(&discovery.DeltaDiscoveryRequest{
		Node:                    &corev3.Node{Id: "ztunnel~node-1"},
		TypeUrl:                 workloadv1alpha1.AddressTypeURL,
		ResourceNamesSubscribe:  []string{"*"},
		InitialResourceVersions: initial,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recv returns the next response, applies it to the client's state and ACKs it.
func (c *client) recv() *discovery.DeltaDiscoveryResponse {
	c.t.Helper()
	type result struct {
		r   *discovery.DeltaDiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := c.stream.Recv()
		ch <- result{r, err}
	}()
	var res result
	select {
	case res = <-ch:
	case <-time.After(recvTimeout):
		c.t.Fatal("no DeltaDiscoveryResponse (test hung)")
	}
	if res.err != nil {
		c.t.Fatalf("Recv: %v", res.err)
	}
	for _, r := range res.r.GetResources() {
		a := &workloadv1alpha1.Address{}
		if err := r.GetResource().UnmarshalTo(a); err != nil {
			c.t.Fatalf("resource %s: %v", r.GetName(), err)
		}
		if a.ResourceName() != r.GetName() {
			c.t.Fatalf("resource named %q holds %q", r.GetName(), a.ResourceName())
		}
		c.state[r.GetName()] = r.GetVersion()
	}
	for _, n := range res.r.GetRemovedResources() {
		delete(c.state, n)
	}
	if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: res.r.GetTypeUrl(), ResponseNonce: res.r.GetNonce()}); err != nil {
		c.t.Fatalf("ACK: %v", err)
	}
	return res.r
}

func workload(uid, ip string) *workloadv1alpha1.Address {
	return &workloadv1alpha1.Address{Type: &workloadv1alpha1.Address_Workload{Workload: &workloadv1alpha1.Workload{
		Uid: uid, Name: "pod-" + uid, Namespace: "demo", ServiceAccount: "default", TrustDomain: "cluster.local",
		Addresses: [][]byte{[]byte(ip)},
	}}}
}

func fill(t *testing.T, s *Server, n int) {
	t.Helper()
	all := map[string]*workloadv1alpha1.Address{}
	for i := range n {
		all[fmt.Sprintf("uid-%d", i)] = workload(fmt.Sprintf("uid-%d", i), fmt.Sprintf("ip%02d", i))
	}
	if err := s.UpdateAddresses(all, nil); err != nil {
		t.Fatal(err)
	}
}

func names(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, x := range r.GetResources() {
		out = append(out, x.GetName())
	}
	sort.Strings(out)
	return out
}

func TestDeltaIncremental(t *testing.T) {
	h := newHarness(t)
	fill(t, h.srv, 20)
	h.srv.MarkReady()

	c1 := h.connect(t, nil)
	c2 := h.connect(t, nil)
	for _, c := range []*client{c1, c2} {
		first := c.recv()
		if len(first.GetResources()) != 20 || len(first.GetRemovedResources()) != 0 {
			t.Fatalf("first response: %d resources, %d removed; want the full set of 20", len(first.GetResources()), len(first.GetRemovedResources()))
		}
	}

	// One pod changes: each client gets exactly that one resource.
	if err := h.srv.UpdateAddresses(map[string]*workloadv1alpha1.Address{"uid-3": workload("uid-3", "new3")}, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{c1, c2} {
		r := c.recv()
		if got := names(r); !slices.Equal(got, []string{"uid-3"}) || len(r.GetRemovedResources()) != 0 {
			t.Fatalf("after one change got resources %v removed %v; want [uid-3] and none removed", got, r.GetRemovedResources())
		}
	}

	// One pod is deleted: it arrives in removed_resources.
	if err := h.srv.UpdateAddresses(nil, []string{"uid-5"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{c1, c2} {
		r := c.recv()
		if len(r.GetResources()) != 0 || !slices.Equal(r.GetRemovedResources(), []string{"uid-5"}) {
			t.Fatalf("after a removal got resources %v removed %v; want none and [uid-5]", names(r), r.GetRemovedResources())
		}
	}
	if len(c1.state) != 19 {
		t.Fatalf("client holds %d resources, want 19", len(c1.state))
	}

	if got := testutil.ToFloat64(h.srv.metrics.clients); got != 2 {
		t.Errorf("connected clients = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.srv.metrics.pushes.WithLabelValues("Address")); got != 6 {
		t.Errorf("pushes{type=Address} = %v, want 6 (3 responses to 2 clients)", got)
	}
	if got := testutil.ToFloat64(h.srv.metrics.resources.WithLabelValues("Address")); got != 44 {
		t.Errorf("pushed resources = %v, want 44 (2 x (20+1+1))", got)
	}
	// Two pushes per client count as latency samples; the initial state does not.
	if got := testutil.CollectAndCount(h.srv.metrics.pushLatency); got != 1 {
		t.Errorf("latency histogram series = %d, want 1", got)
	}
	if n := histogramCount(t, h.reg, "ambit_xds_push_latency_seconds"); n != 4 {
		t.Errorf("push latency samples = %d, want 4", n)
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

func TestDeltaReconnectSendsOnlyTheDifference(t *testing.T) {
	h := newHarness(t)
	fill(t, h.srv, 10)
	h.srv.MarkReady()

	c := h.connect(t, nil)
	c.recv()
	held := c.state
	c.cancel()

	// While the client is away: one change, one removal, one addition.
	if err := h.srv.UpdateAddresses(map[string]*workloadv1alpha1.Address{
		"uid-1":   workload("uid-1", "chg1"),
		"uid-new": workload("uid-new", "new0"),
	}, []string{"uid-2"}); err != nil {
		t.Fatal(err)
	}

	c2 := h.connect(t, held)
	r := c2.recv()
	if got := names(r); !slices.Equal(got, []string{"uid-1", "uid-new"}) {
		t.Errorf("reconnect got resources %v, want [uid-1 uid-new]", got)
	}
	if !slices.Equal(r.GetRemovedResources(), []string{"uid-2"}) {
		t.Errorf("reconnect got removed %v, want [uid-2]", r.GetRemovedResources())
	}
	if len(c2.state) != 10 {
		t.Errorf("client holds %d resources after resync, want 10", len(c2.state))
	}

	// A client whose versions are all current gets an empty response (the
	// reply that concludes a wildcard subscription) and nothing else.
	c3 := h.connect(t, c2.state)
	if r := c3.recv(); len(r.GetResources()) != 0 || len(r.GetRemovedResources()) != 0 {
		t.Errorf("up-to-date client got %v removed %v, want nothing", names(r), r.GetRemovedResources())
	}
}

func TestVersionsAreStableAcrossServers(t *testing.T) {
	// A ztunnel that reconnects to another replica (or a restarted control
	// plane) with the same state gets nothing resent.
	h1, h2 := newHarness(t), newHarness(t)
	for _, h := range []*harness{h1, h2} {
		fill(t, h.srv, 5)
		h.srv.MarkReady()
	}
	c := h1.connect(t, nil)
	c.recv()
	c2 := h2.connect(t, c.state)
	if r := c2.recv(); len(r.GetResources()) != 0 || len(r.GetRemovedResources()) != 0 {
		t.Errorf("second replica resent %v removed %v, want nothing", names(r), r.GetRemovedResources())
	}
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	h.srv.MarkReady()
	t.Run("state of the world", func(t *testing.T) {
		s, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).StreamAggregatedResources(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("SotW stream: %v, want Unimplemented", err)
		}
	})
	t.Run("unknown type", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("unknown type: %v, want InvalidArgument", err)
		}
	})
}

func TestNotServedBeforeReadyAndStreamsEndOnStop(t *testing.T) {
	h := newHarness(t)
	// A ztunnel reconnects with the state it held before the control plane
	// restarted. The server must hold the stream until its state is complete
	// (MarkReady): answering earlier would remove everything not built yet.
	held := map[string]string{}
	for i := range 3 {
		b, err := cachev3.MarshalResource(workload(fmt.Sprintf("uid-%d", i), fmt.Sprintf("ip%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		held[fmt.Sprintf("uid-%d", i)] = cachev3.HashResource(b)
	}
	c := h.connect(t, held)
	for testutil.ToFloat64(h.srv.metrics.clients) != 1 {
		time.Sleep(time.Millisecond) // wait until the stream is open (and held)
	}
	fill(t, h.srv, 3)
	h.srv.MarkReady()
	if r := c.recv(); len(r.GetResources()) != 0 || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("got %v removed %v, want nothing: the client was up to date", names(r), r.GetRemovedResources())
	}

	// Stopping the server ends the stream.
	h.stop()
	if _, err := c.stream.Recv(); err == nil {
		t.Fatal("stream still open after Run returned")
	}
}

func TestAuthorizationType(t *testing.T) {
	h := newHarness(t)
	h.srv.MarkReady()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: workloadv1alpha1.AuthorizationTypeURL, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 0 || r.GetTypeUrl() != workloadv1alpha1.AuthorizationTypeURL {
		t.Fatalf("empty Authorization set: got %d resources of %s", len(r.GetResources()), r.GetTypeUrl())
	}
	if err := s.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	pol := &workloadv1alpha1.Authorization{Name: "deny-all", Namespace: "demo"}
	if err := h.srv.UpdateAuthorizations(map[string]*workloadv1alpha1.Authorization{pol.ResourceName(): pol}, nil); err != nil {
		t.Fatal(err)
	}
	r, err = s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := &workloadv1alpha1.Authorization{}
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetResource().UnmarshalTo(got) != nil || !proto.Equal(got, pol) {
		t.Fatalf("got %v, want the one Authorization", r.GetResources())
	}
}
