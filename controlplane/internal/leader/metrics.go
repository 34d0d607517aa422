package leader

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricLeader is 1 while this replica leads (runs the writers), else 0
// (documented in controlplane/README.md).
const MetricLeader = "ambit_controlplane_leader"

type metrics struct {
	leader prometheus.Gauge
}

// newMetrics builds the leader-election metrics and registers them on reg,
// if not nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricLeader,
			Help: "1 while this control plane replica holds the leader Lease and runs the writers (trust-bundle ConfigMap), else 0. Always 1 with --leader-elect=false.",
		}),
	}
	if reg != nil {
		if err := reg.Register(m.leader); err != nil {
			return nil, fmt.Errorf("leader: registering metrics: %w", err)
		}
	}
	return m, nil
}
