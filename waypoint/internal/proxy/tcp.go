package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/waypoint/internal/model"
)

// dialTCP serves a tcp_proxy chain: it picks an endpoint of the chain's
// cluster and returns the HBONE stream to it, which the HBONE server
// splices to the source's stream once it answered 200.
func (p *Proxy) dialTCP(ctx context.Context, cfg *model.Config, ch *model.Chain, src source) (net.Conn, error) {
	cl := cfg.Clusters[ch.Cluster]
	if cl == nil {
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable,
			Reason: fmt.Sprintf("cluster %s of %s not received from the control plane yet", ch.Cluster, ch.Name)}
	}
	ep, host, ok := p.pickEndpoint(cl, nil)
	if !ok {
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Reason: "no healthy upstream for " + cl.Service.Hostname}
	}
	// max_connections: a tcp_proxy connection is refused rather than
	// queued (Envoy would hold it pending).
	cs := p.clusterState(cl.Name)
	if !tryAcquire(&cs.connections, cl.Limit(model.LimitConnections)) {
		p.cfg.Metrics.overflow(cl.Name, model.LimitConnections)
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Reason: "upstream overflow: max_connections of " + cl.Name}
	}
	host.active.Add(1)
	start := time.Now()
	up, err := p.dialEndpoint(ctx, ep, cl, src)
	if err != nil {
		cs.connections.Add(-1)
		host.active.Add(-1)
		p.result(cl, ep, host, http.StatusServiceUnavailable, time.Since(start))
		return nil, err
	}
	p.result(cl, ep, host, http.StatusOK, time.Since(start))
	release := func() {
		cs.connections.Add(-1)
		host.active.Add(-1)
	}
	l := src.labels()
	l.DestinationService = cl.Service.Hostname
	m := p.cfg.Metrics.openTCP(endpointLabels(l, ep))
	return &countingConn{Conn: up, m: m, release: release}, nil
}

// countingConn is the upstream side of a TCP stream: what the HBONE
// server reads from it is sent to the source, what it writes was received
// from the source.
type countingConn struct {
	*hbone.Conn
	m       tcpConn
	release func()
	once    sync.Once
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.m.sent.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 {
		c.m.received.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Close() error {
	c.once.Do(func() {
		c.m.closed.Inc()
		c.release()
	})
	return c.Conn.Close()
}
