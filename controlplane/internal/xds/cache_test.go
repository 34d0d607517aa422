package xds

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
)

func update(t *testing.T, s *Server, upd map[string]*workloadv1alpha1.Address, removed ...string) {
	t.Helper()
	if err := s.UpdateAddresses(upd, removed); err != nil {
		t.Fatal(err)
	}
}

func TestChangesWhileUnacknowledgedAreCoalesced(t *testing.T) {
	h := newHarness(t)
	fill(t, h.srv, 10)
	h.srv.MarkReady()
	c := h.connect(t, nil)
	c.recv()

	// The client has not ACKed the next response yet while three more
	// changes happen; after its ACK it gets them in one response.
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-1": workload("uid-1", "a111")})
	r, err := c.stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := names(r); !slices.Equal(got, []string{"uid-1"}) {
		t.Fatalf("first push %v, want [uid-1]", got)
	}
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-2": workload("uid-2", "b222")})
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-3": workload("uid-3", "c333")})
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-4": workload("uid-4", "d444")}, "uid-3")
	if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	r = c.recv()
	if got := names(r); !slices.Equal(got, []string{"uid-2", "uid-4"}) || !slices.Equal(r.GetRemovedResources(), []string{"uid-3"}) {
		t.Fatalf("coalesced push: resources %v removed %v; want [uid-2 uid-4] and [uid-3]", got, r.GetRemovedResources())
	}

	// Setting a resource to the content it already has sends nothing; the
	// next real change arrives alone.
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-5": workload("uid-5", "ip05")})
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-6": workload("uid-6", "e666")})
	if got := names(c.recv()); !slices.Equal(got, []string{"uid-6"}) {
		t.Fatalf("after a no-op update and one change got %v, want [uid-6]", got)
	}

	// Every stream has been sent everything: the change log is empty.
	tc := h.srv.cache.types[workloadv1alpha1.AddressTypeURL]
	tc.mu.Lock()
	n := len(tc.log)
	tc.mu.Unlock()
	if n != 0 {
		t.Errorf("change log holds %d entries after every client was sent everything, want 0", n)
	}
}

func TestExplicitNameSubscription(t *testing.T) {
	h := newHarness(t)
	fill(t, h.srv, 5)
	h.srv.MarkReady()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(h.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, stream: stream, cancel: cancel, state: map[string]string{}}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "n"}, TypeUrl: workloadv1alpha1.AddressTypeURL,
		ResourceNamesSubscribe: []string{"uid-1", "uid-missing"}}); err != nil {
		t.Fatal(err)
	}
	if got := names(c.recv()); !slices.Equal(got, []string{"uid-1"}) {
		t.Fatalf("subscribed to uid-1 and uid-missing, got %v", got)
	}
	// A change to a name not subscribed sends nothing; then one to a
	// subscribed name arrives alone.
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-2": workload("uid-2", "x222")})
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-missing": workload("uid-missing", "y333")})
	if got := names(c.recv()); !slices.Equal(got, []string{"uid-missing"}) {
		t.Fatalf("got %v, want [uid-missing]", got)
	}
	update(t, h.srv, nil, "uid-1")
	if r := c.recv(); !slices.Equal(r.GetRemovedResources(), []string{"uid-1"}) {
		t.Fatalf("removal of a subscribed name: got %v", r.GetRemovedResources())
	}
}

// TestClientsConverge makes random changes while several clients follow
// them at different paces, then checks that every client ends up holding
// exactly the server's resources and versions.
func TestClientsConverge(t *testing.T) {
	h := newHarness(t)
	fill(t, h.srv, 50)
	h.srv.MarkReady()

	type follower struct {
		mu    sync.Mutex
		state map[string]string
		done  chan struct{}
	}
	follow := func(initial map[string]string, pause time.Duration) *follower {
		f := &follower{state: map[string]string{}, done: make(chan struct{})}
		c := h.connect(t, initial)
		go func() {
			defer close(f.done)
			for {
				r, err := c.stream.Recv()
				if err != nil {
					return
				}
				f.mu.Lock()
				for _, x := range r.GetResources() {
					f.state[x.GetName()] = x.GetVersion()
				}
				for _, n := range r.GetRemovedResources() {
					delete(f.state, n)
				}
				f.mu.Unlock()
				time.Sleep(pause) // lets changes pile up before the ACK
				if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
					return
				}
			}
		}()
		t.Cleanup(func() { c.cancel(); <-f.done })
		return f
	}
	var fs []*follower
	for i := range 4 {
		fs = append(fs, follow(nil, time.Duration(i)*200*time.Microsecond))
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		upd := map[string]*workloadv1alpha1.Address{}
		var rm []string
		for range 1 + rng.IntN(3) {
			n := fmt.Sprintf("uid-%d", rng.IntN(80))
			if rng.IntN(4) == 0 {
				rm = append(rm, n)
				delete(upd, n)
			} else {
				upd[n] = workload(n, fmt.Sprintf("r%03d", i))
				rm = slices.DeleteFunc(rm, func(s string) bool { return s == n })
			}
		}
		update(t, h.srv, upd, rm...)
		if i == 150 {
			// A client joins in the middle with a stale state.
			fs = append(fs, follow(map[string]string{"uid-0": "stale", "uid-gone": "v"}, 0))
		}
	}
	update(t, h.srv, map[string]*workloadv1alpha1.Address{"uid-sentinel": workload("uid-sentinel", "end0")})
	want := map[string]string{}
	for name, res := range h.srv.Resources(workloadv1alpha1.AddressTypeURL) {
		b, err := cachev3.MarshalResource(res)
		if err != nil {
			t.Fatal(err)
		}
		want[name] = cachev3.HashResource(b)
	}
	for i, f := range fs {
		deadline := time.Now().Add(recvTimeout)
		for {
			f.mu.Lock()
			got := maps.Clone(f.state)
			f.mu.Unlock()
			if got["uid-sentinel"] != "" {
				if !maps.Equal(got, want) {
					t.Errorf("client %d holds %d resources that differ from the server's %d:\n%v\n%v", i, len(got), len(want), got, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d never got the last change (test hung)", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
}
