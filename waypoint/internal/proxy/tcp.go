package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"

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
	up, err := p.dialEndpoint(ctx, ep, cl, src)
	if err != nil {
		return nil, err
	}
	l := src.labels()
	l.DestinationService = cl.Service.Hostname
	m := p.cfg.Metrics.openTCP(endpointLabels(l, ep))
	return &countingConn{Conn: up, m: m}, nil
}

// countingConn is the upstream side of a TCP stream: what the HBONE
// server reads from it is sent to the source, what it writes was received
// from the source.
type countingConn struct {
	*hbone.Conn
	m    tcpConn
	once sync.Once
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
	c.once.Do(c.m.closed.Inc)
	return c.Conn.Close()
}
