package networkingv1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HTTPFaultKind is the kind an HTTPRoute ExtensionRef filter names
// (group GroupName) to apply an HTTPFault.
const HTTPFaultKind = "HTTPFault"

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HTTPFault injects faults into the requests of the HTTPRoute rules that
// reference it with a filter
//
//	type: ExtensionRef
//	extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: <name>}
//
// (same namespace as the route). The waypoint first delays a request
// (Delay), then may answer it itself instead of forwarding it (Abort);
// each with its own percentage of requests, decided independently.
// It maps to Envoy's envoy.filters.http.fault per-route config
// (waypoint/XDS.md §15).
type HTTPFault struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the fault to inject.
	Spec HTTPFaultSpec `json:"spec"`
}

// HTTPFaultSpec is the body of an HTTPFault. At least one of Delay and
// Abort is set.
type HTTPFaultSpec struct {
	// Delay holds requests back before they are forwarded.
	Delay *FaultDelay `json:"delay,omitempty"`
	// Abort answers requests with an error instead of forwarding them.
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay is a fixed delay.
type FaultDelay struct {
	// FixedDelay is how long the request is held, e.g. 200ms or 2s.
	FixedDelay metav1.Duration `json:"fixedDelay"`
	// Percentage of requests delayed, 0 to 100. Unset: 100.
	Percentage *int32 `json:"percentage,omitempty"`
}

// FaultAbort is an error answer. Exactly one of HTTPStatus and GRPCStatus
// is set.
type FaultAbort struct {
	// HTTPStatus is the HTTP status of the answer, 200 to 599.
	HTTPStatus *int32 `json:"httpStatus,omitempty"`
	// GRPCStatus is the gRPC status code of the answer, 0 to 16 (HTTP
	// 200 with grpc-status set, for gRPC services).
	GRPCStatus *int32 `json:"grpcStatus,omitempty"`
	// Percentage of requests aborted, 0 to 100. Unset: 100.
	Percentage *int32 `json:"percentage,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// HTTPFaultList is a list of HTTPFaults.
type HTTPFaultList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the faults.
	Items []HTTPFault `json:"items"`
}
