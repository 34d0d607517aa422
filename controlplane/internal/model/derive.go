package model

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/pkg/enrol"
)

// Config holds the cluster-wide facts the derivation needs.
type Config struct {
	// TrustDomain of workload identities, e.g. "cluster.local".
	TrustDomain string
}

// Enrolled reports whether pod, in namespace ns, is in the mesh, and why:
// the rule shared with the node agent, [enrol.Decide].
func Enrolled(ns Namespace, pod Pod) (bool, string) {
	names := func(cs []Container) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Name
		}
		return out
	}
	return enrol.Decide(enrol.Namespace{Labels: ns.Labels}, enrol.Pod{
		Namespace: pod.Namespace, Labels: pod.Labels, Annotations: pod.Annotations, HostNetwork: pod.HostNetwork,
		Containers: names(pod.Containers), InitContainers: names(pod.InitContainers),
	})
}

// IsWorkload reports whether pod is published as a Workload, and why not.
// A pod becomes a workload once it is Running and has an IP; it stops
// being one when it has terminated (Succeeded or Failed: its IP may already
// belong to another pod). Pods that are not enrolled are still workloads
// (with tunnel protocol NONE): ztunnel must know them to pick them as
// backends of a Service VIP and to know that their IPs are outside the mesh.
func IsWorkload(pod Pod) (bool, string) {
	if pod.UID == "" {
		return false, "pod has no uid"
	}
	if pod.Phase != PodRunning {
		return false, fmt.Sprintf("pod is %s, not Running", cmp.Or(string(pod.Phase), "in no phase"))
	}
	if len(pod.IPs) == 0 {
		return false, "pod has no IP yet"
	}
	return true, "pod is Running with an IP"
}

// TunnelProtocolFor returns the tunnel protocol of a pod: HBONE when it is
// enrolled, NONE otherwise.
func TunnelProtocolFor(enrolled bool) TunnelProtocol {
	if enrolled {
		return TunnelHBONE
	}
	return TunnelNone
}

// cronJobName matches the name of a Job created by a CronJob: the CronJob's
// name, a dash and the scheduled time in minutes (8 to 10 digits).
var cronJobName = regexp.MustCompile(`^(.+)-\d{8,10}$`)

// LabelPodTemplateHash is the label the Deployment controller puts on the
// pods of each ReplicaSet it creates; the ReplicaSet's name is the
// Deployment's name, a dash and this hash.
const LabelPodTemplateHash = "pod-template-hash"

// WorkloadOwner returns the name and type of the object that owns pod, as
// metrics report it: the Deployment of a ReplicaSet created by one, the
// CronJob of a Job created by one, other controllers by their own name; a
// bare pod (or one with a controller of a kind not listed here) is its own
// workload.
func WorkloadOwner(pod Pod) (string, WorkloadType) {
	if pod.Owner == nil {
		return pod.Name, TypePod
	}
	switch pod.Owner.Kind {
	case "ReplicaSet":
		if h := pod.Labels[LabelPodTemplateHash]; h != "" {
			if d, ok := strings.CutSuffix(pod.Owner.Name, "-"+h); ok && d != "" {
				return d, TypeDeployment
			}
		}
		return pod.Owner.Name, TypeDeployment
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicationController":
		return pod.Owner.Name, TypeDeployment
	case "Job":
		if m := cronJobName.FindStringSubmatch(pod.Owner.Name); m != nil {
			return m[1], TypeCronJob
		}
		return pod.Owner.Name, TypeJob
	default:
		return pod.Name, TypePod
	}
}

// CanonicalName returns the canonical service name of a pod with labels:
// service.istio.io/canonical-name, else app.kubernetes.io/name, else app,
// else workloadName.
func CanonicalName(labels map[string]string, workloadName string) string {
	return cmp.Or(labels[LabelCanonicalName], labels[LabelAppKubernetesName], labels[LabelApp], workloadName)
}

// CanonicalRevision returns the canonical revision of a pod with labels:
// service.istio.io/canonical-revision, else app.kubernetes.io/version,
// else version, else "latest".
func CanonicalRevision(labels map[string]string) string {
	return cmp.Or(labels[LabelCanonicalRevision], labels[LabelAppKubernetesVersion], labels[LabelVersion], DefaultCanonicalRevision)
}

// DeriveWorkload returns the Workload of pod, or false (with the reason)
// when the pod is not a workload (IsWorkload). ns is the pod's namespace
// (the zero Namespace if unknown); services is the pod's service
// membership as ServiceMembers computed it, keyed by Service resource name;
// nodeExists is false when the pod's Node is gone, which makes the
// workload unhealthy until the pod is deleted.
func DeriveWorkload(cfg Config, ns Namespace, pod Pod, services map[string][]PortMapping, nodeExists bool) (Workload, bool, string) {
	if ok, why := IsWorkload(pod); !ok {
		return Workload{}, false, why
	}
	enrolled, _ := Enrolled(ns, pod)
	name, typ := WorkloadOwner(pod)
	w := Workload{
		UID:               pod.UID,
		Name:              pod.Name,
		Namespace:         pod.Namespace,
		Addresses:         slices.Clone(pod.IPs),
		Node:              pod.NodeName,
		ServiceAccount:    cmp.Or(pod.ServiceAccount, "default"),
		TrustDomain:       cfg.TrustDomain,
		Protocol:          TunnelProtocolFor(enrolled),
		Healthy:           pod.Ready && !pod.Terminating && nodeExists,
		CanonicalName:     CanonicalName(pod.Labels, name),
		CanonicalRevision: CanonicalRevision(pod.Labels),
		WorkloadName:      name,
		WorkloadType:      typ,
	}
	for i, a := range w.Addresses {
		w.Addresses[i] = a.Unmap()
	}
	if len(services) > 0 {
		w.Services = make(map[string][]PortMapping, len(services))
		for k, v := range services {
			w.Services[k] = slices.Clone(v)
		}
	}
	return w, true, "pod is Running with an IP"
}

// ServiceMembers returns the pods that back svc according to its
// EndpointSlices, with each pod's port mappings: for every TCP port of the
// Service, the port number the slice lists under the same port name (the
// EndpointSlice controller resolves named targetPorts per pod and groups
// pods with the same resolved ports into one slice, so two pods can map the
// same Service port to different ports). A slice with no ports at all falls
// back to the numeric targetPorts of the Service.
//
// Only endpoints that are ready (conditions.ready true or unset) and that
// point at a Pod count. A pod listed in several slices (an IPv4 and an IPv6
// slice of a dual-stack Service) gets the union of its mappings. The result
// is keyed by the pod's namespace/name; mappings are sorted by Service port.
func ServiceMembers(svc Service, slicesOfSvc []EndpointSlice) map[ObjectRef][]PortMapping {
	out := map[ObjectRef][]PortMapping{}
	for _, sl := range slicesOfSvc {
		if sl.Namespace != svc.Namespace || sl.ServiceName != svc.Name {
			continue
		}
		ports := slicePorts(svc, sl)
		for _, ep := range sl.Endpoints {
			if ep.Ready != nil && !*ep.Ready {
				continue
			}
			if ep.TargetRef == nil || ep.TargetKind != "Pod" {
				continue
			}
			ref := ObjectRef{Namespace: cmp.Or(ep.TargetRef.Namespace, sl.Namespace), Name: ep.TargetRef.Name}
			out[ref] = mergePorts(out[ref], ports)
		}
	}
	return out
}

// slicePorts returns the mappings that the endpoints of sl have for svc.
func slicePorts(svc Service, sl EndpointSlice) []PortMapping {
	var out []PortMapping
	for _, sp := range svc.Ports {
		if cmp.Or(sp.Protocol, ProtocolTCP) != ProtocolTCP {
			continue
		}
		if len(sl.Ports) == 0 {
			if sp.TargetPortName == "" {
				out = append(out, PortMapping{ServicePort: sp.Port, TargetPort: cmp.Or(sp.TargetPort, sp.Port)})
			}
			continue
		}
		for _, ep := range sl.Ports {
			if ep.Name == sp.Name && cmp.Or(ep.Protocol, ProtocolTCP) == ProtocolTCP && ep.Port != 0 {
				out = append(out, PortMapping{ServicePort: sp.Port, TargetPort: ep.Port})
				break
			}
		}
	}
	return out
}

// mergePorts adds the mappings of add to have (a Service port already
// mapped keeps its first mapping) and returns them sorted by Service port.
func mergePorts(have, add []PortMapping) []PortMapping {
	for _, m := range add {
		if !slices.ContainsFunc(have, func(h PortMapping) bool { return h.ServicePort == m.ServicePort }) {
			have = append(have, m)
		}
	}
	slices.SortFunc(have, func(a, b PortMapping) int { return cmp.Compare(a.ServicePort, b.ServicePort) })
	if have == nil {
		// A ready pod with no TCP port in common is still a member: keep
		// it, with no ports, so that the Service's backends are complete.
		have = []PortMapping{}
	}
	return have
}

// ResourceName returns the xDS resource name of s, "<namespace>/<hostname>".
func (s Service) ResourceName() string {
	return workloadv1alpha1.ServiceResourceName(s.Namespace, s.Hostname)
}

// Published reports whether s is published as an Address: every Service
// except ExternalName ones (a DNS alias has no VIP and no backends).
func (s Service) Published() bool { return !s.ExternalName }
