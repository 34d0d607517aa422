// Package deltaxds runs the client side of a delta ADS stream
// (DeltaAggregatedResources): open it, send the initial subscriptions,
// answer every response with what the caller's handler returns (its ACK or
// NACK and any subscription change), and reopen it with backoff when it
// ends, keeping the caller's state meanwhile. ztunnel's workload discovery
// and the waypoint's Envoy xDS both use it; what a response means stays
// with them.
package deltaxds

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"ambit.dev/pkg/reconnect"
)

// Session describes the streams Run keeps open.
type Session struct {
	// Conn is the connection to the control plane. Required.
	Conn grpc.ClientConnInterface
	// RetryBase and RetryMax bound the backoff between streams
	// (reconnect.Loop).
	RetryBase, RetryMax time.Duration
	// Initial returns the first requests of a new stream; the first one
	// carries the node. Required.
	Initial func() []*discovery.DeltaDiscoveryRequest
	// Handle applies one response and returns the requests to send in
	// answer, the ACK or NACK first. Required.
	Handle func(*discovery.DeltaDiscoveryResponse) []*discovery.DeltaDiscoveryRequest
	// Opened is called once a stream is open and subscribed; optional.
	Opened func()
	// Closed is called when a stream ends, with why (nil when ctx ended);
	// optional.
	Closed func(err error)
	// OpenHint and RecvHint say what to check when opening the stream or
	// receiving on it fails (added to the error).
	OpenHint, RecvHint string
	// Log receives the reconnect warnings. Required.
	Log *slog.Logger
}

// Run keeps a stream open until ctx is done, reconnecting with backoff, and
// returns then.
func Run(ctx context.Context, s Session) {
	reconnect.Loop(ctx, s.RetryBase, s.RetryMax, func(ctx context.Context) (bool, error) {
		progressed, err := s.stream(ctx)
		if s.Closed != nil {
			if ctx.Err() != nil {
				err = nil
			}
			s.Closed(err)
		}
		return progressed, err
	}, func(e reconnect.Ended) {
		s.Log.Warn("xDS stream ended; serving the last configuration and reconnecting", "error", e.Err, "retryIn", e.Wait.String(), "attempt", e.Attempt)
	})
}

// stream runs one stream; progressed reports whether a response arrived.
func (s Session) stream(ctx context.Context) (progressed bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(s.Conn).DeltaAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("opening the delta ADS stream (%s): %w", s.OpenHint, err)
	}
	for _, req := range s.Initial() {
		if err := st.Send(req); err != nil {
			return false, fmt.Errorf("subscribing to %s: %w", TypeName(req.GetTypeUrl()), err)
		}
	}
	if s.Opened != nil {
		s.Opened()
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return progressed, ctx.Err()
			}
			if s.RecvHint != "" {
				return progressed, fmt.Errorf("receiving (%s): %w", s.RecvHint, err)
			}
			return progressed, fmt.Errorf("receiving: %w", err)
		}
		progressed = true
		for _, req := range s.Handle(resp) {
			if err := st.Send(req); err != nil {
				return progressed, fmt.Errorf("sending the %s answer: %w", TypeName(req.GetTypeUrl()), err)
			}
		}
	}
}

// TypeName is the last element of a type URL ("Listener" for
// type.googleapis.com/envoy.config.listener.v3.Listener).
func TypeName(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}
