package outbound

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"ambit.dev/ztunnel/internal/model"
	"ambit.dev/ztunnel/internal/state"
)

func TestSourceWaitsForTheWorkload(t *testing.T) {
	store := state.NewStore()
	h, err := NewHandler(HandlerConfig{Store: store, SourceWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := state.NewSnapshot([]model.Workload{{
		UID: "new", Name: "new", Namespace: "ns", ServiceAccount: "sa", TrustDomain: "cluster.local",
		Addresses: []netip.Addr{netip.MustParseAddr("10.244.1.9")}, Protocol: model.ProtocolHBONE,
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		w  model.Workload
		ok bool
	}
	got := make(chan result, 1)
	go func() {
		_, w, ok := h.source(context.Background(), "new")
		got <- result{w, ok}
	}()
	store.Replace(snap) // the control plane publishes the pod after its capture
	r := <-got
	if !r.ok || r.w.UID != "new" {
		t.Fatalf("source = %+v, %v; want the published workload", r.w, r.ok)
	}
}

func TestSourceGivesUp(t *testing.T) {
	t.Run("after SourceWait", func(t *testing.T) {
		h, err := NewHandler(HandlerConfig{Store: state.NewStore(), SourceWait: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := h.source(context.Background(), "never"); ok {
			t.Fatal("source found a workload that was never published")
		}
	})
	t.Run("when the connection ends", func(t *testing.T) {
		h, err := NewHandler(HandlerConfig{Store: state.NewStore(), SourceWait: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, ok := h.source(ctx, "never"); ok {
			t.Fatal("source found a workload that was never published")
		}
	})
}
