// Package model is the control plane's view of the mesh: which pods are
// workloads, which of them are enrolled in the mesh, which Services they back
// on which ports, and how all of that is written as the Address resources of
// workload discovery (api/workload/v1alpha1).
//
// It has no Kubernetes imports. internal/kube copies what it needs out of
// the Kubernetes objects into the plain types below and calls the pure
// derivation functions of this package; everything that decides something
// lives here and is table-tested.
package model

import (
	"net/netip"

	"ambit.dev/pkg/enrol"
)

// Labels and annotations that decide enrolment (see package enrol).
const (
	LabelDataplaneMode      = enrol.LabelDataplaneMode
	DataplaneModeAmbient    = enrol.DataplaneModeAmbient
	DataplaneModeNone       = enrol.DataplaneModeNone
	AnnotationSidecarStatus = enrol.AnnotationSidecarStatus
	SidecarContainerName    = enrol.SidecarContainerName
)

// Labels read for the canonical service name and revision, in order of
// preference.
const (
	LabelCanonicalName        = "service.istio.io/canonical-name"
	LabelCanonicalRevision    = "service.istio.io/canonical-revision"
	LabelAppKubernetesName    = "app.kubernetes.io/name"
	LabelAppKubernetesVersion = "app.kubernetes.io/version"
	LabelApp                  = "app"
	LabelVersion              = "version"
	// DefaultCanonicalRevision is the revision of a pod with none of the
	// revision labels.
	DefaultCanonicalRevision = "latest"
)

// Protocol is an L4 protocol of a port.
type Protocol string

// Protocols as Kubernetes spells them. Only TCP ports are published:
// ztunnel carries TCP only.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// PodPhase is the phase of a pod, as Kubernetes spells it.
type PodPhase string

// Pod phases.
const (
	PodPending   PodPhase = "Pending"
	PodRunning   PodPhase = "Running"
	PodSucceeded PodPhase = "Succeeded"
	PodFailed    PodPhase = "Failed"
	PodUnknown   PodPhase = "Unknown"
)

// Namespace is the part of a Kubernetes Namespace the model reads.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// ObjectRef names a Kubernetes object.
type ObjectRef struct {
	Namespace string
	Name      string
}

// String returns "namespace/name".
func (r ObjectRef) String() string { return r.Namespace + "/" + r.Name }

// Owner is the controller owner reference of a pod.
type Owner struct {
	// Kind is the owner's kind, e.g. "ReplicaSet", "Job", "StatefulSet".
	Kind string
	// Name is the owner's name.
	Name string
}

// ContainerPort is a named port a container declares.
type ContainerPort struct {
	Name     string
	Port     uint32
	Protocol Protocol
}

// Container is the part of a container spec the model reads.
type Container struct {
	Name  string
	Ports []ContainerPort
}

// Pod is the part of a Kubernetes Pod the model reads.
type Pod struct {
	UID       string
	Name      string
	Namespace string
	// Labels and Annotations of the pod.
	Labels      map[string]string
	Annotations map[string]string
	// ServiceAccount is spec.serviceAccountName ("" means "default").
	ServiceAccount string
	// NodeName is spec.nodeName ("" while unscheduled).
	NodeName    string
	HostNetwork bool
	Phase       PodPhase
	// IPs are status.podIPs, IPv4 addresses in their 4-byte form.
	IPs []netip.Addr
	// Ready is the pod's Ready condition.
	Ready bool
	// Terminating is true once the pod has a deletion timestamp.
	Terminating bool
	// Containers and InitContainers (names and ports).
	Containers     []Container
	InitContainers []Container
	// Owner is the controller owner reference; nil for a bare pod.
	Owner *Owner
}

// Ref returns the pod's namespace/name.
func (p Pod) Ref() ObjectRef { return ObjectRef{Namespace: p.Namespace, Name: p.Name} }

// ServicePort is one port of a Kubernetes Service.
type ServicePort struct {
	// Name of the port; "" is allowed when the Service has one port.
	Name     string
	Protocol Protocol
	// Port on the Service VIP.
	Port uint32
	// TargetPort is the numeric targetPort; 0 when the targetPort is a name
	// (TargetPortName) or not set (then it equals Port).
	TargetPort uint32
	// TargetPortName is the targetPort when it names a container port.
	TargetPortName string
}

// Service is a Kubernetes Service as the mesh sees it.
type Service struct {
	Name      string
	Namespace string
	// Labels of the Service (LabelUseWaypoint).
	Labels map[string]string
	// Hostname is the Service's fully qualified name (see Hostname).
	Hostname string
	// ExternalName is true for a Service of type ExternalName: such a
	// Service is only a DNS alias and is not published.
	ExternalName bool
	// VIPs are the ClusterIPs; empty for a headless Service.
	VIPs  []netip.Addr
	Ports []ServicePort
	// Waypoint is the waypoint that traffic to the Service goes through
	// (ServiceWaypoint); nil for none.
	Waypoint *WaypointAddress
}

// Ref returns the Service's namespace/name.
func (s Service) Ref() ObjectRef { return ObjectRef{Namespace: s.Namespace, Name: s.Name} }

// Hostname returns the fully qualified hostname of Service name in
// namespace ns: "<name>.<ns>.svc.<clusterDomain>".
func Hostname(name, ns, clusterDomain string) string {
	return name + "." + ns + ".svc." + clusterDomain
}

// EndpointPort is one port of an EndpointSlice: the Service port name it
// serves and the port number on the endpoints of that slice.
type EndpointPort struct {
	Name     string
	Port     uint32
	Protocol Protocol
}

// Endpoint is one endpoint of an EndpointSlice.
type Endpoint struct {
	Addresses []netip.Addr
	// Ready is conditions.ready; nil means unknown, which Kubernetes says to
	// read as ready.
	Ready *bool
	// TargetRef is the pod behind the endpoint; nil when the endpoint is not
	// a pod (e.g. a hand-written slice of a selector-less Service).
	TargetRef *ObjectRef
	// TargetKind is the kind of TargetRef ("Pod" for pods).
	TargetKind string
}

// EndpointSlice is the part of a discovery.k8s.io/v1 EndpointSlice the
// model reads.
type EndpointSlice struct {
	Name      string
	Namespace string
	// ServiceName is the kubernetes.io/service-name label.
	ServiceName string
	Ports       []EndpointPort
	Endpoints   []Endpoint
}

// PortMapping maps a Service port to the port on one backend pod.
type PortMapping struct {
	ServicePort uint32
	TargetPort  uint32
}

// TunnelProtocol says how peers reach a workload.
type TunnelProtocol int

// Tunnel protocols.
const (
	// TunnelNone: the workload is not in the mesh; peers send plaintext.
	TunnelNone TunnelProtocol = iota
	// TunnelHBONE: the workload is enrolled; peers use HBONE on :15008.
	TunnelHBONE
)

// String returns "NONE" or "HBONE".
func (p TunnelProtocol) String() string {
	if p == TunnelHBONE {
		return "HBONE"
	}
	return "NONE"
}

// WorkloadType is the kind of controller that owns a pod.
type WorkloadType int

// Workload types (the same as the api's WorkloadType).
const (
	TypePod WorkloadType = iota
	TypeDeployment
	TypeJob
	TypeCronJob
)

// Workload is one pod as ztunnels see it.
type Workload struct {
	UID            string
	Name           string
	Namespace      string
	Addresses      []netip.Addr
	Node           string
	ServiceAccount string
	TrustDomain    string
	Protocol       TunnelProtocol
	// Services maps the resource name of each Service this pod backs
	// ("<namespace>/<hostname>") to its port mappings in that Service.
	Services          map[string][]PortMapping
	Healthy           bool
	CanonicalName     string
	CanonicalRevision string
	WorkloadName      string
	WorkloadType      WorkloadType
	// AuthorizationPolicies are the resource names of the selector-scoped
	// Authorization resources that apply to this pod, sorted.
	AuthorizationPolicies []string
	// Waypoint is the waypoint that traffic to the pod's own IP goes
	// through (WorkloadWaypoint); nil for none.
	Waypoint *WaypointAddress
}
