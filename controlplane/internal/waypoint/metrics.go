package waypoint

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the waypoint controller; the package documentation lists
// them.
type metrics struct {
	reconciles *prometheus.CounterVec
	gateways   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_waypoint_reconciles_total",
			Help: "Reconciles of the waypoint controller (leader only), by kind (gateway, gatewayclass) and result (success, error).",
		}, []string{"kind", "result"}),
		gateways: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ambit_waypoint_gateways",
			Help: "Waypoint Gateways (class ambit-waypoint) seen by the leader, by state: programmed (an available replica), pending (deploying) or invalid (not accepted).",
		}, []string{"state"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.reconciles, m.gateways} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("waypoint: registering metrics: %w", err)
		}
	}
	return m, nil
}
