package proxy

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"ambit.dev/waypoint/internal/model"
)

// ReporterWaypoint is the reporter label of every waypoint metric.
const ReporterWaypoint = "waypoint"

// unknown fills a label the waypoint does not know (Istio's convention).
const unknown = "unknown"

// Label names, as Istio's standard metrics name them.
var (
	connLabels    = []string{"reporter", "source_workload", "source_workload_namespace", "source_principal", "destination_service", "destination_workload", "destination_workload_namespace", "destination_principal"}
	requestLabels = append(append([]string(nil), connLabels...), "response_code")
)

// durationBuckets are Istio's istio_request_duration_milliseconds buckets.
var durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Metrics are the waypoint's traffic metrics (see the README).
type Metrics struct {
	requests    *prometheus.CounterVec
	upstream    upstreamMetrics
	duration    *prometheus.HistogramVec
	tcpOpened   *prometheus.CounterVec
	tcpClosed   *prometheus.CounterVec
	tcpSent     *prometheus.CounterVec
	tcpReceived *prometheus.CounterVec
	retries     *prometheus.CounterVec
	overflows   *prometheus.CounterVec
	rbac        *prometheus.CounterVec
	faults      *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total",
			Help: "HTTP requests handled by the waypoint."}, requestLabels),
		upstream: newUpstreamMetrics(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds",
			Help: "Duration of HTTP requests through the waypoint, from request headers to the end of the response.", Buckets: durationBuckets}, requestLabels),
		tcpOpened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_opened_total",
			Help: "TCP connections (HBONE streams of tcp services) opened to an endpoint."}, connLabels),
		tcpClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total",
			Help: "TCP connections (HBONE streams of tcp services) closed."}, connLabels),
		tcpSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_sent_bytes_total",
			Help: "Bytes sent to the source (the endpoint's responses) on tcp services."}, connLabels),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_received_bytes_total",
			Help: "Bytes received from the source (forwarded to the endpoint) on tcp services."}, connLabels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_waypoint_upstream_retries_total",
			Help: "Retries of upstream requests (Envoy's upstream_rq_retry)."}, []string{"cluster"}),
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_waypoint_upstream_retry_overflow_total",
			Help: "Retries not made because the cluster's retry budget was exhausted (Envoy's upstream_rq_retry_overflow)."}, []string{"cluster"}),
		rbac: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_waypoint_rbac_decisions_total",
			Help: "L7 authorization decisions (XDS.md §12): result allowed, denied or audited, with the deciding policy id (none: ALLOW policies apply and none matched)."}, []string{"result", "policy"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_waypoint_faults_injected_total",
			Help: "Faults injected by routes' HTTPFaults: kind delay or abort (Envoy's fault.delays_injected, fault.aborts_injected)."}, []string{"kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration, m.tcpOpened, m.tcpClosed, m.tcpSent, m.tcpReceived, m.retries, m.overflows, m.rbac, m.faults} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("proxy: registering metrics: %w", err)
			}
		}
		for _, c := range m.upstream.collectors() {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("proxy: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

// upstreamMetrics are the circuit breaker and outlier detection metrics.
type upstreamMetrics struct {
	overflows, ejections *prometheus.CounterVec
	ejected              *refreshingGauge
}

func newUpstreamMetrics() upstreamMetrics {
	return upstreamMetrics{
		overflows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_waypoint_upstream_overflow_total",
			Help: "Circuit breaker overflows by limit: max_pending_requests and max_requests refuse the request (503, Envoy's upstream_rq_pending_overflow), max_connections leaves it pending (Envoy's upstream_cx_overflow)."}, []string{"cluster", "limit"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ambit_waypoint_outlier_ejections_total",
			Help: "Endpoints ejected by outlier detection (Envoy's outlier_detection.ejections_enforced_total)."}, []string{"cluster"}),
		ejected: &refreshingGauge{GaugeVec: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ambit_waypoint_outlier_ejected_hosts",
			Help: "Endpoints currently ejected by outlier detection (Envoy's outlier_detection.ejections_active)."}, []string{"cluster"})},
	}
}

func (u upstreamMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{u.overflows, u.ejections, u.ejected}
}

// refreshingGauge is a gauge vector brought up to date by refresh before
// each collection (the ejected hosts: the outlier detectors run the
// interval ticks that are due, without waiting for traffic).
type refreshingGauge struct {
	*prometheus.GaugeVec
	refresh atomic.Pointer[func()]
}

func (g *refreshingGauge) Collect(ch chan<- prometheus.Metric) {
	if f := g.refresh.Load(); f != nil {
		(*f)()
	}
	g.GaugeVec.Collect(ch)
}

// overflow records a circuit breaker overflow of cluster.
func (m *Metrics) overflow(cluster string, l model.Limit) {
	m.upstream.overflows.WithLabelValues(cluster, string(l)).Inc()
}

// ejection records an outlier ejection in cluster.
func (m *Metrics) ejection(cluster string) { m.upstream.ejections.WithLabelValues(cluster).Inc() }

// ejectedHosts sets the number of ejected endpoints of cluster.
func (m *Metrics) ejectedHosts(cluster string, n int) {
	m.upstream.ejected.WithLabelValues(cluster).Set(float64(n))
}

// onCollect makes f run before the ejected hosts gauge is collected.
func (m *Metrics) onCollect(f func()) { m.upstream.ejected.refresh.Store(&f) }

// forgetCluster drops the gauges of a cluster that is gone.
func (m *Metrics) forgetCluster(cluster string) { m.upstream.ejected.DeleteLabelValues(cluster) }

// Labels are the labels of one request or connection.
type Labels struct {
	SourceWorkload, SourceNamespace, SourcePrincipal                string
	DestinationService                                              string
	DestinationWorkload, DestinationNamespace, DestinationPrincipal string
}

func (l Labels) values() []string {
	v := []string{ReporterWaypoint, l.SourceWorkload, l.SourceNamespace, l.SourcePrincipal,
		l.DestinationService, l.DestinationWorkload, l.DestinationNamespace, l.DestinationPrincipal}
	for i := range v {
		if v[i] == "" {
			v[i] = unknown
		}
	}
	return v
}

// request records one finished HTTP request.
func (m *Metrics) request(l Labels, code int, ms float64) {
	v := append(l.values(), fmt.Sprint(code))
	m.requests.WithLabelValues(v...).Inc()
	m.duration.WithLabelValues(v...).Observe(ms)
}

// tcpConn is the per-connection view of the TCP metrics.
type tcpConn struct {
	sent, received, closed prometheus.Counter
}

// openTCP records an opened connection and returns its counters.
func (m *Metrics) openTCP(l Labels) tcpConn {
	v := l.values()
	m.tcpOpened.WithLabelValues(v...).Inc()
	return tcpConn{sent: m.tcpSent.WithLabelValues(v...), received: m.tcpReceived.WithLabelValues(v...), closed: m.tcpClosed.WithLabelValues(v...)}
}

// retry records a retry to cluster.
func (m *Metrics) retry(cluster string) { m.retries.WithLabelValues(cluster).Inc() }

// retryOverflow records a retry the cluster's budget did not allow.
func (m *Metrics) retryOverflow(cluster string) { m.overflows.WithLabelValues(cluster).Inc() }

// Results of ambit_waypoint_rbac_decisions_total.
const (
	RBACAllowed = "allowed"
	RBACDenied  = "denied"
	RBACAudited = "audited"
)

// authz records an authorization decision: the deciding policy of a
// denial or an ALLOW match, and every matched AUDIT policy.
func (m *Metrics) authz(d model.AuthzDecision) {
	for _, a := range d.Audited {
		m.rbac.WithLabelValues(RBACAudited, a).Inc()
	}
	switch {
	case !d.Allowed:
		m.rbac.WithLabelValues(RBACDenied, d.Policy).Inc()
	case d.Allow != "":
		m.rbac.WithLabelValues(RBACAllowed, d.Allow).Inc()
	}
}

// fault records an injected fault of kind "delay" or "abort".
func (m *Metrics) fault(kind string) { m.faults.WithLabelValues(kind).Inc() }
