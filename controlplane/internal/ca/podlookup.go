package ca

// PodRef is what the CA needs to know about a pod: who it runs as and where.
type PodRef struct {
	Namespace      string
	Name           string
	ServiceAccount string
	NodeName       string
	UID            string
}

// PodLookup answers the CA's questions about pods. The app fills it from
// the pod informer of internal/kube; tests use a map.
//
// Implementations should leave out pods that have terminated (phase
// Succeeded or Failed): a finished pod must not keep its identity signable
// on its node.
type PodLookup interface {
	// PodsOnNode returns the pods scheduled on node (spec.nodeName).
	PodsOnNode(node string) []PodRef
	// PodByName returns the pod ns/name, if it is known.
	PodByName(ns, name string) (PodRef, bool)
}
