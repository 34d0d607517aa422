package waypointxds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the waypoint xDS server. Names and labels:
//
//	ambit_waypoint_xds_connected_clients          gauge    open waypoint delta ADS streams
//	ambit_waypoint_xds_configured_waypoints       gauge    waypoints with a configuration
//	ambit_waypoint_xds_pushes_total{type}         counter  responses sent, by type (Listener, Cluster, ClusterLoadAssignment, RouteConfiguration)
//	ambit_waypoint_xds_pushed_resources_total{type} counter resources sent or removed
//	ambit_waypoint_xds_pushed_bytes_total{type}   counter  encoded size of the responses
//	ambit_waypoint_xds_rejections_total{type}     counter  NACKs received
type metrics struct {
	clients   prometheus.Gauge
	waypoints prometheus.Gauge
	pushes    *prometheus.CounterVec
	resources *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	nacks     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_waypoint_xds_connected_clients",
			Help: "Waypoint delta ADS streams currently open.",
		}),
		waypoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ambit_waypoint_xds_configured_waypoints",
			Help: "Waypoints (Gateways) the control plane has a configuration for.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_waypoint_xds_pushes_total",
			Help: "DeltaDiscoveryResponses sent to waypoints, by resource type.",
		}, []string{"type"}),
		resources: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_waypoint_xds_pushed_resources_total",
			Help: "Resources sent or removed in DeltaDiscoveryResponses to waypoints, by resource type.",
		}, []string{"type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_waypoint_xds_pushed_bytes_total",
			Help: "Size of the DeltaDiscoveryResponses sent to waypoints (protobuf encoding), by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ambit_waypoint_xds_rejections_total",
			Help: "Responses a waypoint rejected (NACK), by resource type.",
		}, []string{"type"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.clients, m.waypoints, m.pushes, m.resources, m.bytes, m.nacks} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("waypointxds: registering metrics (is a second waypoint xDS server registered on the same registry?): %w", err)
		}
	}
	return m, nil
}
