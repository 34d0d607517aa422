package zdsserver

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the ZDS server. Names and labels are listed in
// cni-plugin/README.md.
type metrics struct {
	connections  prometheus.Counter
	sessions     prometheus.Gauge
	liveSessions prometheus.Gauge
	workloads    prometheus.Gauge
	requests     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambit_node_agent_zds_connections_total",
			Help: "ztunnel connections accepted on the ZDS socket.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_node_agent_zds_sessions",
			Help: "ztunnel sessions past their hello (replaying or live).",
		}),
		liveSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_node_agent_zds_live_sessions",
			Help: "ztunnel sessions that acked their replay (SnapshotSent).",
		}),
		workloads: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_node_agent_zds_workloads",
			Help: "Workloads the agent hands to ztunnel (with a netns, or kept without one).",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_node_agent_zds_requests_total",
			Help: "ZDS requests sent, by type (add, keep, del, snapshot_sent) and result (ack, nack, timeout, error).",
		}, []string{"type", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.sessions, m.liveSessions, m.workloads, m.requests} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("zdsserver: registering metrics: %w", err)
		}
	}
	return m, nil
}
