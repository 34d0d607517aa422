package networkingv1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// BackendPolicy sets how a Service's waypoint sends traffic to the
// Service's endpoints: connection-pool limits (circuit breaking), outlier
// detection and the load-balancing algorithm — the settings of Istio's
// DestinationRule trafficPolicy that Gateway API has no place for.
//
// It attaches to Services of its own namespace (targetRefs, optionally one
// port by name). When two policies target the same Service port, the one
// naming the port (sectionName) wins over one naming the whole Service;
// between equals, the oldest (then the name first in alphabetical order)
// wins and the others are Conflicted on that port. A winning policy's
// settings apply as a whole: fields are not merged across policies.
type BackendPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the desired policy.
	Spec BackendPolicySpec `json:"spec"`
	// Status says, per target, whether the control plane applies the
	// policy.
	Status BackendPolicyStatus `json:"status,omitempty"`
}

// BackendPolicySpec is the body of a BackendPolicy. At least one of
// connectionPool, outlierDetection and loadBalancer is set.
type BackendPolicySpec struct {
	// TargetRefs are the Services (or Service ports) of the policy's
	// namespace the policy applies to.
	TargetRefs []BackendPolicyTargetRef `json:"targetRefs"`
	// ConnectionPool limits connections and requests to the Service
	// (circuit breaking). Unset: the waypoint's defaults.
	ConnectionPool *ConnectionPool `json:"connectionPool,omitempty"`
	// OutlierDetection ejects endpoints that keep failing. Unset: none.
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// LoadBalancer picks the endpoint of each request. Unset: round
	// robin.
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty"`
}

// BackendPolicyTargetRef names a Service of the policy's namespace
// (Gateway API LocalPolicyTargetReferenceWithSectionName).
type BackendPolicyTargetRef struct {
	// Group is "" (the core API group).
	Group string `json:"group"`
	// Kind is "Service".
	Kind string `json:"kind"`
	// Name is the Service's name.
	Name string `json:"name"`
	// SectionName is the name of one port of the Service. Unset: every
	// TCP port of the Service.
	SectionName string `json:"sectionName,omitempty"`
}

// ConnectionPool is the connection-pool (circuit-breaking) part of a
// BackendPolicy. A request over a limit is answered 503 with
// x-envoy-overloaded: true.
type ConnectionPool struct {
	// TCP limits connections.
	TCP *TCPSettings `json:"tcp,omitempty"`
	// HTTP limits requests (HTTP ports).
	HTTP *HTTPSettings `json:"http,omitempty"`
}

// TCPSettings are the connection limits of a ConnectionPool.
type TCPSettings struct {
	// MaxConnections is the most connections open to the Service's
	// endpoints at once, all endpoints together. Unset: 1024.
	MaxConnections *int32 `json:"maxConnections,omitempty"`
	// ConnectTimeout bounds connecting to an endpoint, e.g. "2s". Unset:
	// 10s.
	ConnectTimeout *Duration `json:"connectTimeout,omitempty"`
}

// HTTPSettings are the request limits of a ConnectionPool.
type HTTPSettings struct {
	// MaxPendingRequests is the most requests waiting for a connection.
	// Unset: 1024.
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`
	// MaxRequests is the most requests in flight to the Service. Unset:
	// 1024.
	MaxRequests *int32 `json:"maxRequests,omitempty"`
	// MaxRequestsPerConnection is the most requests sent on one
	// connection before it is closed. Unset: no limit.
	MaxRequestsPerConnection *int32 `json:"maxRequestsPerConnection,omitempty"`
}

// OutlierDetection ejects an endpoint from load balancing for a while
// when it answers with consecutive errors. It never ejects more than
// maxEjectionPercent of the endpoints.
type OutlierDetection struct {
	// Consecutive5xxErrors ejects an endpoint after this many consecutive
	// 5xx responses (or connection failures). Unset: not on 5xx.
	Consecutive5xxErrors *int32 `json:"consecutive5xxErrors,omitempty"`
	// ConsecutiveGatewayErrors ejects an endpoint after this many
	// consecutive 502, 503 or 504 responses (or connection failures).
	// Unset: not on gateway errors.
	ConsecutiveGatewayErrors *int32 `json:"consecutiveGatewayErrors,omitempty"`
	// Interval is how often ejections are re-evaluated, e.g. "10s".
	// Unset: 10s.
	Interval *Duration `json:"interval,omitempty"`
	// BaseEjectionTime is how long an endpoint is ejected the first time;
	// each further ejection lasts that many times longer. Unset: 30s.
	BaseEjectionTime *Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent is the most endpoints ejected at once, in percent
	// (0-100) of the Service's endpoints, rounded down but at least one
	// when it is above 0. Unset: 10.
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// LoadBalancer is the load-balancing part of a BackendPolicy.
type LoadBalancer struct {
	// Algorithm picks the endpoint of each request. Empty: RoundRobin.
	Algorithm LBAlgorithm `json:"algorithm,omitempty"`
	// ChoiceCount is the number of random endpoints LeastRequest (and
	// EWMA) compares, picking the one with the fewest requests in flight.
	// Unset: 2.
	ChoiceCount *int32 `json:"choiceCount,omitempty"`
}

// LBAlgorithm is a load-balancing algorithm.
type LBAlgorithm string

const (
	// LBRoundRobin sends requests to the endpoints in turn. The default.
	LBRoundRobin LBAlgorithm = "RoundRobin"
	// LBLeastRequest sends a request to the endpoint with the fewest
	// requests in flight of choiceCount random ones.
	LBLeastRequest LBAlgorithm = "LeastRequest"
	// LBEWMA prefers the endpoint with the lowest exponentially weighted
	// moving average of latency (Ambit's waypoint; an Envoy falls back to
	// least request, see waypoint/XDS.md §14).
	LBEWMA LBAlgorithm = "EWMA"
)

// Duration is a Gateway API duration (GEP-2257): one to four
// <number><unit> parts, units h, m, s and ms, e.g. "1s", "500ms",
// "1m30s".
type Duration string

// BackendPolicyStatus is the status of a BackendPolicy, in the shape of
// Gateway API's PolicyStatus.
type BackendPolicyStatus struct {
	// Ancestors hold one entry per target of the policy (the Service, with
	// the port when the target names one), written by Ambit's controller.
	Ancestors []BackendPolicyAncestorStatus `json:"ancestors,omitempty"`
}

// BackendPolicyAncestorStatus is the status of a BackendPolicy for one
// target.
type BackendPolicyAncestorStatus struct {
	// AncestorRef is the target this entry is about.
	AncestorRef BackendPolicyAncestorRef `json:"ancestorRef"`
	// ControllerName is the controller that wrote the entry
	// ("ambit.dev/waypoint-controller").
	ControllerName string `json:"controllerName"`
	// Conditions hold Accepted (see ConditionAccepted).
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BackendPolicyAncestorRef names a target in status (Gateway API
// ParentReference).
type BackendPolicyAncestorRef struct {
	Group       string `json:"group"`
	Kind        string `json:"kind"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name"`
	SectionName string `json:"sectionName,omitempty"`
}

// Condition types and reasons of BackendPolicyAncestorStatus.Conditions.
const (
	// ConditionAccepted is True when the policy applies to the target,
	// False (with one of the reasons below) when it does not.
	ConditionAccepted = "Accepted"

	// ReasonAccepted: the policy applies to every port of the target.
	ReasonAccepted = "Accepted"
	// ReasonTargetNotFound: no such Service, or it has no TCP port of the
	// sectionName.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonConflicted: another policy targets the same Service port and
	// wins (the message names it).
	ReasonConflicted = "Conflicted"
	// ReasonWaypointRequired: the Service's traffic is not bound to a
	// waypoint, which is what applies the policy (label it
	// ambit.dev/use-waypoint, or let auto-provisioning do so).
	ReasonWaypointRequired = "WaypointRequired"
	// ReasonInvalid: the policy cannot be compiled (the message says which
	// field and why).
	ReasonInvalid = "Invalid"
)

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// BackendPolicyList is a list of BackendPolicy.
type BackendPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the policies.
	Items []BackendPolicy `json:"items"`
}
