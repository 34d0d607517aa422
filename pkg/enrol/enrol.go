// Package enrol holds the one rule that decides which pods are in the mesh.
// The control plane (which publishes a pod as HBONE or NONE) and the node
// agent (which captures the pod's traffic) both call [Decide], so they cannot
// disagree about a pod.
//
// It has no Kubernetes imports: callers copy the few fields it reads into
// [Pod] and [Namespace].
package enrol

import (
	"fmt"
	"slices"
)

// Labels and annotations that decide enrolment.
const (
	// LabelDataplaneMode on a namespace enrols it ("ambient"); on a pod,
	// the value "none" opts the pod out.
	LabelDataplaneMode = "ambit.dev/dataplane-mode"
	// DataplaneModeAmbient is the namespace label value that enrols.
	DataplaneModeAmbient = "ambient"
	// DataplaneModeNone is the pod label value that opts out.
	DataplaneModeNone = "none"
	// AnnotationSidecarStatus is set by Istio's sidecar injector on every
	// pod it injected.
	AnnotationSidecarStatus = "sidecar.istio.io/status"
	// SidecarContainerName is the name of Istio's sidecar container (a
	// regular container, or an init container when it runs as a native
	// sidecar).
	SidecarContainerName = "istio-proxy"
	// AnnotationRedirection is set by the node agent on enrolled pods:
	// RedirectionEnabled once the pod's traffic is captured,
	// RedirectionPending while it is not (yet).
	AnnotationRedirection = "ambit.dev/redirection"
	// RedirectionEnabled and RedirectionPending are the values of
	// AnnotationRedirection.
	RedirectionEnabled = "enabled"
	RedirectionPending = "pending"
)

// Namespace is the part of a Kubernetes Namespace the rule reads.
type Namespace struct {
	Labels map[string]string
}

// Pod is the part of a Kubernetes Pod the rule reads.
type Pod struct {
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
	HostNetwork bool
	// Containers and InitContainers are the container names.
	Containers, InitContainers []string
}

// Decide reports whether pod, in namespace ns, is in the mesh (its traffic
// is captured by ztunnel and peers must reach it over HBONE), and why. The
// rules, in order:
//
//   - hostNetwork pods are never enrolled (their traffic is the node's);
//   - pods with an Istio sidecar (a container or init container named
//     istio-proxy, or the sidecar.istio.io/status annotation) are never
//     enrolled: the sidecar already captures their traffic;
//   - a pod labelled ambit.dev/dataplane-mode=none has opted out;
//   - otherwise the pod is enrolled exactly when its namespace is labelled
//     ambit.dev/dataplane-mode=ambient.
//
// ns is the zero Namespace when the namespace is not known (yet): the pod is
// then not enrolled.
func Decide(ns Namespace, pod Pod) (bool, string) {
	if pod.HostNetwork {
		return false, "pod uses the host network"
	}
	if _, ok := pod.Annotations[AnnotationSidecarStatus]; ok {
		return false, "pod has an Istio sidecar (annotation " + AnnotationSidecarStatus + ")"
	}
	if slices.Contains(pod.Containers, SidecarContainerName) || slices.Contains(pod.InitContainers, SidecarContainerName) {
		return false, "pod has an Istio sidecar (container " + SidecarContainerName + ")"
	}
	if pod.Labels[LabelDataplaneMode] == DataplaneModeNone {
		return false, "pod opted out with label " + LabelDataplaneMode + "=" + DataplaneModeNone
	}
	if ns.Labels[LabelDataplaneMode] != DataplaneModeAmbient {
		return false, fmt.Sprintf("namespace %q is not labelled %s=%s", pod.Namespace, LabelDataplaneMode, DataplaneModeAmbient)
	}
	return true, fmt.Sprintf("namespace %q is labelled %s=%s", pod.Namespace, LabelDataplaneMode, DataplaneModeAmbient)
}
