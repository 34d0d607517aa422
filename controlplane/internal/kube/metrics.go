package kube

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the Kubernetes model. Names and labels are listed in
// controlplane/README.md.
type metrics struct {
	reconciles *prometheus.CounterVec
	addresses  *prometheus.GaugeVec
	// authorizations is the number of Authorization resources published.
	authorizations prometheus.Gauge
	// statusWrites counts policy status updates by result.
	statusWrites *prometheus.CounterVec
	// waypointUnusable is the number of Services and workloads whose
	// waypoint label names a Gateway that cannot take their traffic.
	waypointUnusable *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_model_reconciles_total",
			Help: "Reconciles of queued Kubernetes objects, by kind (pod, service, namespace, node, authorizationpolicy, peerauthentication, gateway) and result (success, error).",
		}, []string{"kind", "result"}),
		addresses: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ambit_model_addresses",
			Help: "Address resources the model publishes, by kind (workload, service).",
		}, []string{"kind"}),
		authorizations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_model_authorizations",
			Help: "Authorization resources (compiled AuthorizationPolicies and PeerAuthentications) the model publishes.",
		}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_policy_status_writes_total",
			Help: "Status updates of AuthorizationPolicies and PeerAuthentications by the leader, by result (success, error).",
		}, []string{"result"}),
		waypointUnusable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ambit_model_waypoint_unusable",
			Help: "Services (traffic=service) and workloads (traffic=workload) whose ambit.dev/use-waypoint label names a Gateway that cannot take their traffic (missing, not Programmed, or ambit.dev/waypoint-for excludes it); their traffic goes without a waypoint.",
		}, []string{"traffic"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.reconciles, m.addresses, m.authorizations, m.statusWrites, m.waypointUnusable} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("kube: registering metrics: %w", err)
		}
	}
	return m, nil
}
