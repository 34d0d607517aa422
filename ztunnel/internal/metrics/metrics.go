// Package metrics counts the connections ztunnel proxies, in the Istio
// istio_tcp_* shape so existing dashboards work, and keeps the set of live
// connections for the admin endpoints (/connections, /config_dump).
//
// Exported metrics (all registered on the injected prometheus.Registerer):
//
//	istio_tcp_connections_opened_total   counter, ConnLabels labels
//	istio_tcp_connections_closed_total   counter, ConnLabels labels
//	istio_tcp_sent_bytes_total           counter, ConnLabels labels
//	istio_tcp_received_bytes_total       counter, ConnLabels labels
//	ambit_ztunnel_active_connections     gauge, connections open now
//	ambit_ztunnel_connections_refused_total{reason}  counter
//	ambit_ztunnel_hbone_dial_failures_total          counter
//	ambit_ztunnel_authorization_decisions_total{decision,policy,action}  counter
//
// ConnLabels labels are reporter, source_workload, source_workload_namespace,
// source_principal, destination_workload, destination_workload_namespace,
// destination_principal, destination_service, connection_security_policy;
// an empty value is reported as "unknown", as Istio does.
//
// The hot path (AddSent, AddReceived) is two atomic adds; Open and Close
// touch a sync.Map once each.
package metrics

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names.
const (
	MetricConnectionsOpened = "istio_tcp_connections_opened_total"
	MetricConnectionsClosed = "istio_tcp_connections_closed_total"
	MetricSentBytes         = "istio_tcp_sent_bytes_total"
	MetricReceivedBytes     = "istio_tcp_received_bytes_total"
	MetricActive            = "ambit_ztunnel_active_connections"
	MetricRefused           = "ambit_ztunnel_connections_refused_total"
	MetricHBONEDialFailures = "ambit_ztunnel_hbone_dial_failures_total"
	MetricAuthzDecisions    = "ambit_ztunnel_authorization_decisions_total"
)

// Values of the decision label of MetricAuthzDecisions.
const (
	DecisionAllow = "allow"
	DecisionDeny  = "deny"
)

// NoPolicy is the policy (and action) label of a decision no policy made.
const NoPolicy = "none"

// LabelNames are the label names of the four istio_tcp_* counters, in the
// order of ConnLabels.values.
var LabelNames = []string{
	"reporter",
	"source_workload",
	"source_workload_namespace",
	"source_principal",
	"destination_workload",
	"destination_workload_namespace",
	"destination_principal",
	"destination_service",
	"connection_security_policy",
}

// Unknown is reported for an empty label value.
const Unknown = "unknown"

// Values of ConnLabels.Reporter.
const (
	ReporterSource      = "source"
	ReporterDestination = "destination"
)

// Values of ConnLabels.SecurityPolicy.
const (
	SecurityMutualTLS = "mutual_tls"
	SecurityNone      = "none"
)

// Directions of a connection, seen from the pod ztunnel serves.
const (
	DirectionInbound  = "inbound"
	DirectionOutbound = "outbound"
)

// Protocols a connection is carried over.
const (
	ProtocolHBONE = "HBONE"
	ProtocolTCP   = "TCP"
)

// Reasons for Refused. Callers should stick to these (or a few more of the
// same kind): every distinct reason is a time series.
const (
	// RefusedAuthorization: an authorization policy denied the connection.
	RefusedAuthorization = "authorization_denied"
	// RefusedStrictMTLS: plaintext reached a pod whose mode is STRICT.
	RefusedStrictMTLS = "strict_mtls"
	// RefusedNoEndpoint: a service had no healthy endpoint.
	RefusedNoEndpoint = "no_healthy_endpoint"
	// RefusedNoWaypoint: the destination has a waypoint but no healthy,
	// verifiable waypoint pod (traffic never bypasses the waypoint).
	RefusedNoWaypoint = "waypoint_unavailable"
	// RefusedWaypointBypass: a connection to a port behind a waypoint
	// that did not come from the waypoint (plaintext, or HBONE from
	// another identity).
	RefusedWaypointBypass = "waypoint_bypass"
	// RefusedUnknownWorkload: the pod or destination is not in the state.
	RefusedUnknownWorkload = "unknown_workload"
	// RefusedUpstream: connecting to the destination failed.
	RefusedUpstream = "upstream_connect_failed"
	// RefusedBadRequest: a malformed HBONE request (bad authority...).
	RefusedBadRequest = "bad_request"
)

// ConnLabels are the labels of the istio_tcp_* counters of one connection.
type ConnLabels struct {
	Reporter             string // ReporterSource | ReporterDestination
	SourceWorkload       string
	SourceNamespace      string
	SourcePrincipal      string // SPIFFE ID, e.g. spiffe://cluster.local/ns/ns1/sa/sa1
	DestinationWorkload  string
	DestinationNamespace string
	DestinationPrincipal string
	DestinationService   string // service hostname, if addressed to one
	SecurityPolicy       string // SecurityMutualTLS | SecurityNone
}

// values returns the label values in LabelNames order, empty ones as Unknown.
func (l ConnLabels) values() []string {
	v := []string{
		l.Reporter, l.SourceWorkload, l.SourceNamespace, l.SourcePrincipal,
		l.DestinationWorkload, l.DestinationNamespace, l.DestinationPrincipal,
		l.DestinationService, l.SecurityPolicy,
	}
	for i := range v {
		if v[i] == "" {
			v[i] = Unknown
		}
	}
	return v
}

// Metrics holds ztunnel's connection metrics and its live connections.
// A nil *Metrics is valid and records nothing (Open returns a nil *Conn,
// whose methods do nothing).
type Metrics struct {
	opened, closed, sent, received *prometheus.CounterVec
	active                         prometheus.Gauge
	refused                        *prometheus.CounterVec
	dialFailures                   prometheus.Counter
	authzDecisions                 *prometheus.CounterVec

	now    func() time.Time
	nextID atomic.Uint64
	live   sync.Map // uint64 -> *Conn
}

// New builds the metrics and registers them on reg. A nil reg registers
// nothing (the live-connection set still works).
func New(reg prometheus.Registerer) (*Metrics, error) {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, LabelNames)
	}
	m := &Metrics{
		opened: counter(MetricConnectionsOpened, "TCP connections opened, counted when the proxy accepts or originates them."),
		closed: counter(MetricConnectionsClosed, "TCP connections closed."),
		sent: counter(MetricSentBytes,
			"Bytes forwarded from the source of a connection towards its destination, added as they flow."),
		received: counter(MetricReceivedBytes,
			"Bytes forwarded from the destination of a connection back to its source, added as they flow."),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricActive, Help: "Connections ztunnel is proxying now.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRefused, Help: "Connections ztunnel refused, by reason.",
		}, []string{"reason"}),
		dialFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: MetricHBONEDialFailures, Help: "HBONE tunnels that could not be established (TCP, TLS or CONNECT failed).",
		}),
		authzDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricAuthzDecisions,
			Help: "Inbound L4 authorization decisions, by decision, deciding policy (namespace/name, or none) and its action (ALLOW, DENY, or none).",
		}, []string{"decision", "policy", "action"}),
		now: time.Now,
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.opened, m.closed, m.sent, m.received, m.active, m.refused, m.dialFailures, m.authzDecisions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: registering ztunnel connection metrics (is a second Metrics registered on the same registry?): %w", err)
		}
	}
	return m, nil
}

// Refused counts a connection refused for reason (one of the Refused*
// constants).
func (m *Metrics) Refused(reason string) {
	if m == nil {
		return
	}
	if reason == "" {
		reason = Unknown
	}
	m.refused.WithLabelValues(reason).Inc()
}

// AuthzDecision counts one inbound authorization decision: decision is
// DecisionAllow or DecisionDeny, policy the deciding policy's
// "namespace/name" and action its action; empty policy or action is
// reported as NoPolicy. Label values must stay bounded: policy names only,
// never identities or addresses.
func (m *Metrics) AuthzDecision(decision, policy, action string) {
	if m == nil {
		return
	}
	if policy == "" {
		policy = NoPolicy
	}
	if action == "" {
		action = NoPolicy
	}
	m.authzDecisions.WithLabelValues(decision, policy, action).Inc()
}

// HBONEDialFailed counts an HBONE tunnel that could not be established.
func (m *Metrics) HBONEDialFailed() {
	if m == nil {
		return
	}
	m.dialFailures.Inc()
}

// Open counts a connection as opened and tracks it as live until Close.
// direction is DirectionInbound or DirectionOutbound, protocol ProtocolHBONE
// or ProtocolTCP; src and dst are the client's and the destination's
// addresses.
func (m *Metrics) Open(l ConnLabels, direction, protocol string, src, dst netip.AddrPort) *Conn {
	if m == nil {
		return nil
	}
	vals := l.values()
	c := &Conn{
		m:         m,
		id:        m.nextID.Add(1),
		direction: direction,
		protocol:  protocol,
		src:       src,
		dst:       dst,
		labels:    l,
		opened:    m.now(),
		sentC:     m.sent.WithLabelValues(vals...),
		recvC:     m.received.WithLabelValues(vals...),
		closedC:   m.closed.WithLabelValues(vals...),
	}
	m.opened.WithLabelValues(vals...).Inc()
	m.active.Inc()
	m.live.Store(c.id, c)
	return c
}

// Live returns a snapshot of the open connections, sorted by ID.
func (m *Metrics) Live() []LiveConn {
	if m == nil {
		return nil
	}
	var out []LiveConn
	m.live.Range(func(_, v any) bool {
		out = append(out, v.(*Conn).snapshot())
		return true
	})
	slices.SortFunc(out, func(a, b LiveConn) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// LiveConn is a snapshot of one open connection.
type LiveConn struct {
	ID        uint64
	Direction string
	Protocol  string
	Src, Dst  netip.AddrPort
	// Labels holds the workloads and principals of both ends.
	Labels        ConnLabels
	Opened        time.Time
	BytesSent     int64 // source -> destination
	BytesReceived int64 // destination -> source
}

// Conn is one connection counted by Metrics. Its methods are safe for
// concurrent use; a nil *Conn does nothing.
type Conn struct {
	m                     *Metrics
	id                    uint64
	direction, protocol   string
	src, dst              netip.AddrPort
	labels                ConnLabels
	opened                time.Time
	sent, received        atomic.Int64
	sentC, recvC, closedC prometheus.Counter
	closeOnce             sync.Once
}

// ID identifies the connection in Live and the admin /connections output.
func (c *Conn) ID() uint64 {
	if c == nil {
		return 0
	}
	return c.id
}

// AddSent adds n bytes forwarded from the source towards the destination
// (the client's request direction).
func (c *Conn) AddSent(n int64) {
	if c == nil || n <= 0 {
		return
	}
	c.sent.Add(n)
	c.sentC.Add(float64(n))
}

// AddReceived adds n bytes forwarded from the destination back to the
// source (the response direction).
func (c *Conn) AddReceived(n int64) {
	if c == nil || n <= 0 {
		return
	}
	c.received.Add(n)
	c.recvC.Add(float64(n))
}

// Close counts the connection as closed and drops it from the live set.
// Calls after the first do nothing.
func (c *Conn) Close() {
	if c == nil {
		return
	}
	c.closeOnce.Do(func() {
		c.m.live.Delete(c.id)
		c.m.active.Dec()
		c.closedC.Inc()
	})
}

func (c *Conn) snapshot() LiveConn {
	return LiveConn{
		ID:            c.id,
		Direction:     c.direction,
		Protocol:      c.protocol,
		Src:           c.src,
		Dst:           c.dst,
		Labels:        c.labels,
		Opened:        c.opened,
		BytesSent:     c.sent.Load(),
		BytesReceived: c.received.Load(),
	}
}
