// Package components names the Kubernetes objects an Ambit installation is
// made of, as deploy/manifests/ambit.yaml and the Helm chart create them.
// ambitctl's commands find Ambit through these names; nothing else in
// ambitctl spells them.
package components

// Names of Ambit's objects.
const (
	// DefaultNamespace is where Ambit runs (the -n flag's default).
	DefaultNamespace = "ambit-system"
	// FieldManager is the server-side apply field manager of ambitctl.
	FieldManager = "ambitctl"
	// ControlPlane is the control plane Deployment (and its Service).
	ControlPlane = "ambit-controlplane"
	// Ztunnel is the per-node proxy DaemonSet.
	Ztunnel = "ztunnel"
	// NodeAgent is the node agent DaemonSet (it installs the CNI plugin).
	NodeAgent = "ambit-node-agent"
	// RootCertConfigMap holds the mesh trust bundle the control plane
	// publishes; ztunnel mounts it.
	RootCertConfigMap = "ambit-root-cert"
	// RootCertKey is the ConfigMap key ztunnel reads.
	RootCertKey = "root-cert.pem"
	// ZtunnelAdminPort is ztunnel's admin port, on 127.0.0.1 of the node.
	ZtunnelAdminPort = 15000
	// ZtunnelMetricsPort serves ztunnel's Prometheus /metrics.
	ZtunnelMetricsPort = 15020
	// DefaultTrustDomain is the trust domain ztunnel uses without
	// --trust-domain.
	DefaultTrustDomain = "cluster.local"
)

// CRDs are the CustomResourceDefinitions an installation must have.
// Sorted by name. The Gateway API ones (standard channel) are installed by
// the chart unless gatewayAPI.installCRDs=false; waypoints need them.
var CRDs = []string{
	"authorizationpolicies.security.ambit.dev",
	"backendpolicies.networking.ambit.dev",
	"gatewayclasses.gateway.networking.k8s.io",
	"gateways.gateway.networking.k8s.io",
	"grpcroutes.gateway.networking.k8s.io",
	"httpfaults.networking.ambit.dev",
	"httproutes.gateway.networking.k8s.io",
	"peerauthentications.security.ambit.dev",
	"referencegrants.gateway.networking.k8s.io",
}

// Kinds of the workloads below.
const (
	KindDeployment = "Deployment"
	KindDaemonSet  = "DaemonSet"
)

// Workload is one of Ambit's long-running components.
type Workload struct {
	// Title is what progress and check lines call it.
	Title string
	Kind  string
	Name  string
	// PerNode is true for DaemonSets that must run on every node.
	PerNode bool
}

// Workloads lists Ambit's components in start order.
func Workloads() []Workload {
	return []Workload{
		{Title: "control plane", Kind: KindDeployment, Name: ControlPlane},
		{Title: "ztunnel", Kind: KindDaemonSet, Name: Ztunnel, PerNode: true},
		{Title: "node agent", Kind: KindDaemonSet, Name: NodeAgent, PerNode: true},
	}
}

// Title returns the friendly name of a workload: the title of a known
// component, else "<Kind> <name>".
func Title(kind, name string) string {
	for _, w := range Workloads() {
		if w.Kind == kind && w.Name == name {
			return w.Title
		}
	}
	return kind + " " + name
}

// DefaultSelector is the pod label selector of an Ambit workload when its
// own spec.selector cannot be read: every Ambit workload labels its pods
// app=<name>.
func DefaultSelector(name string) string { return "app=" + name }
