package identity

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names exported by the Manager (documented in pkg/README.md).
const (
	MetricCertExpiry    = "ambit_certificate_expiry_seconds"
	MetricCertRequests  = "ambit_certificate_requests_total"
	labelIdentity       = "identity"
	labelRequestsResult = "result"
)

type metrics struct {
	expiry   *prometheus.Desc
	requests *prometheus.CounterVec
	m        *Manager
}

// newMetrics builds the Manager's metrics and registers them on reg, if reg
// is not nil.
func newMetrics(m *Manager, reg prometheus.Registerer) (*metrics, error) {
	mt := &metrics{
		m: m,
		expiry: prometheus.NewDesc(MetricCertExpiry,
			"Seconds until the cached certificate of an identity expires (negative once expired).",
			[]string{labelIdentity}, nil),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCertRequests,
			Help: "Certificate requests sent to the CA, by result (success, failure).",
		}, []string{labelRequestsResult}),
	}
	if reg == nil {
		return mt, nil
	}
	if err := reg.Register(mt); err != nil {
		return nil, fmt.Errorf("identity: registering metrics: %w", err)
	}
	return mt, nil
}

// Describe implements prometheus.Collector.
func (mt *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- mt.expiry
	mt.requests.Describe(ch)
}

// Collect implements prometheus.Collector. Expiry is computed at scrape
// time from the Manager's clock, so the gauge never goes stale.
func (mt *metrics) Collect(ch chan<- prometheus.Metric) {
	for id, secs := range mt.m.expiries() {
		ch <- prometheus.MustNewConstMetric(mt.expiry, prometheus.GaugeValue, secs, id)
	}
	mt.requests.Collect(ch)
}

func (mt *metrics) fetch(ok bool) {
	result := "failure"
	if ok {
		result = "success"
	}
	mt.requests.WithLabelValues(result).Inc()
}
