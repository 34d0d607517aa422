package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the agent. Names and labels are listed in cni-plugin/README.md.
type metrics struct {
	captures   prometheus.Counter
	releases   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	captured   prometheus.Gauge
	reconciles *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		captures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ambit_node_agent_captures_total",
			Help: "Pods captured: rules installed in their netns and the netns acked by ztunnel.",
		}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_node_agent_releases_total",
			Help: "Pods let go, by reason: unenrolled (rules removed, ztunnel told) or sandbox_gone (pod deleted or finished, or CNI DEL).",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_node_agent_capture_errors_total",
			Help: "Captures or releases that did not complete, by reason (netns_not_found, netns_ambiguous, rules_failed, no_ztunnel, not_acked).",
		}, []string{"reason"}),
		captured: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_node_agent_captured_pods",
			Help: "Pods whose network namespace the agent holds open.",
		}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_node_agent_reconciles_total",
			Help: "Pod reconciles, by result (success, retry).",
		}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.captures, m.releases, m.errors, m.captured, m.reconciles} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent: registering metrics: %w", err)
		}
	}
	return m, nil
}
