package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"ambit.dev/pkg/hbone"
	"ambit.dev/pkg/netcopy"
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
	// Network RBAC (XDS.md §12): the L4 parts of the service's policies.
	if len(ch.RBAC) > 0 {
		a := model.Attributes{Port: ch.Port, SourceIP: src.addr.Addr()}
		if src.id.Validate() == nil {
			a.Principal = src.id.String()
		}
		dec := model.Authorize(ch.RBAC, a)
		p.cfg.Metrics.authz(dec)
		if !dec.Allowed {
			return nil, &hbone.StatusError{Code: http.StatusForbidden, Reason: rbacDeniedBody + ": " + dec.ResponseCodeDetails()}
		}
	}
	ep, ok := p.pick(cl)
	if !ok {
		return nil, &hbone.StatusError{Code: http.StatusServiceUnavailable, Reason: "no healthy upstream for " + cl.Service.Hostname}
	}
	// max_connections: each tcp stream is its own pool (Envoy's pools
	// keyed by the downstream's filter state), and a pool without a
	// connection always opens one: beyond the limit it is only counted
	// as an overflow, as Envoy's upstream_cx_overflow.
	cs := p.clusterState(cl.Name)
	host := cs.host(ep)
	if !tryAcquire(&cs.connections, cl.Limit(model.LimitConnections)) {
		p.cfg.Metrics.overflow(cl.Name, model.LimitConnections)
		cs.connections.Add(1)
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
	return &countingConn{upstreamConn: up, m: m, release: release}, nil
}

// countingConn is the upstream side of a TCP stream: what the HBONE
// server reads from it is sent to the source, what it writes was received
// from the source.
type countingConn struct {
	upstreamConn
	m       tcpConn
	release func()
	once    sync.Once
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.upstreamConn.Read(b)
	if n > 0 {
		c.m.sent.Add(float64(n))
	}
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.upstreamConn.Write(b)
	if n > 0 {
		c.m.received.Add(float64(n))
	}
	return n, err
}

// WaitRead waits until the upstream is readable (netcopy.Waiter: an HBONE
// stream's WaitRead, or a poll of a TCP socket).
func (c *countingConn) WaitRead() error {
	if w := netcopy.Waiter(c.upstreamConn); w != nil {
		return w()
	}
	return nil
}

func (c *countingConn) Close() error {
	c.once.Do(func() {
		c.m.closed.Inc()
		c.release()
	})
	return c.upstreamConn.Close()
}
