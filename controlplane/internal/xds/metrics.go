package xds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the workload-discovery server. Names and labels are listed in
// controlplane/README.md.
type metrics struct {
	pushes      *prometheus.CounterVec
	resources   *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	pushLatency *prometheus.HistogramVec
	clients     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_xds_pushes_total",
			Help: "DeltaDiscoveryResponses sent to clients, by resource type (Address, Authorization).",
		}, []string{"type"}),
		resources: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_xds_pushed_resources_total",
			Help: "Resources sent or removed in DeltaDiscoveryResponses, by resource type.",
		}, []string{"type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_xds_pushed_bytes_total",
			Help: "Size of the DeltaDiscoveryResponses sent (protobuf encoding), by resource type.",
		}, []string{"type"}),
		pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ambit_xds_push_latency_seconds",
			Help: "Time from a model change (resource updated in the xDS cache) to the response carrying it being sent, by resource type. Initial state sent to a newly connected client is not counted.",
			// 1 ms to ~16 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"type"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_xds_connected_clients",
			Help: "Delta ADS streams currently open.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.pushes, m.resources, m.bytes, m.pushLatency, m.clients} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds: registering metrics (is a second xDS server registered on the same registry?): %w", err)
		}
	}
	return m, nil
}
