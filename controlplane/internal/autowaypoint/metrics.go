package autowaypoint

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reconciles *prometheus.CounterVec
	actions    *prometheus.CounterVec
	conflicts  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_autowaypoint_reconciles_total",
			Help: "Namespace reconciles of the waypoint auto-provisioner, by result.",
		}, []string{"result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_autowaypoint_actions_total",
			Help: "Writes of the waypoint auto-provisioner: create_gateway, update_gateway, delete_gateway, bind, unbind.",
		}, []string{"action"}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_autowaypoint_conflicts",
			Help: "Namespaces that need an auto-provisioned waypoint where a Gateway of its name exists that Ambit did not make.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.reconciles, m.actions, m.conflicts} {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(errors.New("autowaypoint: registering metrics"), err)
		}
	}
	return m, nil
}
