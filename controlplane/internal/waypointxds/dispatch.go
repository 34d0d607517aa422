package waypointxds

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Dispatcher is the one AggregatedDiscoveryService registered on the
// control plane's xDS gRPC servers. It reads the first request of each
// delta stream and hands the stream (first request included) to the
// waypoint backend when the node id starts with "waypoint~", else to the
// ztunnel backend (workload discovery). State-of-the-world ADS is refused.
type Dispatcher struct {
	ztunnel, waypoint discovery.AggregatedDiscoveryServiceServer
}

// NewDispatcher returns a Dispatcher over the two backends.
func NewDispatcher(ztunnel, waypoint discovery.AggregatedDiscoveryServiceServer) (*Dispatcher, error) {
	if ztunnel == nil || waypoint == nil {
		return nil, errors.New("waypointxds: the dispatcher needs both the ztunnel and the waypoint ADS backends")
	}
	return &Dispatcher{ztunnel: ztunnel, waypoint: waypoint}, nil
}

// Register registers the dispatcher as the AggregatedDiscoveryService of r.
func (d *Dispatcher) Register(r grpc.ServiceRegistrar) {
	discovery.RegisterAggregatedDiscoveryServiceServer(r, d)
}

// DeltaAggregatedResources routes one delta stream by its first request.
func (d *Dispatcher) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	backend := d.ztunnel
	if strings.HasPrefix(first.GetNode().GetId(), NodePrefix) {
		backend = d.waypoint
	}
	return backend.DeltaAggregatedResources(&peekedStream{BidiStreamingServer: stream, first: first})
}

// StreamAggregatedResources refuses state-of-the-world ADS.
func (d *Dispatcher) StreamAggregatedResources(discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "ambit serves xDS over delta ADS only: use DeltaAggregatedResources")
}

// peekedStream returns the already read first request, then reads on.
type peekedStream struct {
	grpc.BidiStreamingServer[discovery.DeltaDiscoveryRequest, discovery.DeltaDiscoveryResponse]
	mu    sync.Mutex
	first *discovery.DeltaDiscoveryRequest
}

func (p *peekedStream) Recv() (*discovery.DeltaDiscoveryRequest, error) {
	p.mu.Lock()
	f := p.first
	p.first = nil
	p.mu.Unlock()
	if f != nil {
		return f, nil
	}
	return p.BidiStreamingServer.Recv()
}

// CaptureADS returns the AggregatedDiscoveryService implementation that
// register (e.g. (*xds.Server).Register) registers, without a gRPC
// server, so that it can be a Dispatcher backend.
func CaptureADS(register func(grpc.ServiceRegistrar)) (discovery.AggregatedDiscoveryServiceServer, error) {
	var c captureRegistrar
	register(&c)
	if c.err != nil {
		return nil, c.err
	}
	if c.ads == nil {
		return nil, errors.New("waypointxds: the function registered no AggregatedDiscoveryService")
	}
	return c.ads, nil
}

type captureRegistrar struct {
	ads discovery.AggregatedDiscoveryServiceServer
	err error
}

func (c *captureRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	if desc.ServiceName != discovery.AggregatedDiscoveryService_ServiceDesc.ServiceName {
		c.err = errors.Join(c.err, fmt.Errorf("waypointxds: unexpected registration of %s", desc.ServiceName))
		return
	}
	ads, ok := impl.(discovery.AggregatedDiscoveryServiceServer)
	if !ok {
		c.err = errors.Join(c.err, fmt.Errorf("waypointxds: %T does not implement the AggregatedDiscoveryService", impl))
		return
	}
	c.ads = ads
}
