package cniserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the CNI server. Names and labels are listed in
// cni-plugin/README.md.
type metrics struct {
	addDuration *prometheus.HistogramVec
	requests    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		addDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ambit_node_agent_cni_add_duration_seconds",
			Help: "Duration of successful CNI ADD calls, by whether the pod is in the mesh (enrolled: captured and acked by ztunnel).",
			// From a not-enrolled answer (~ms) to the 20s default timeout.
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"enrolled"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_node_agent_cni_requests_total",
			Help: "CNI calls from the ambit-cni plugin, by op (add, del, check) and result (ok, error).",
		}, []string{"op", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.addDuration, m.requests} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("cniserver: registering metrics: %w", err)
		}
	}
	return m, nil
}
