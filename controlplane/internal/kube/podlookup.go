package kube

import (
	corev1 "k8s.io/api/core/v1"

	"ambit.dev/controlplane/internal/ca"
)

// The Controller answers the CA's questions about pods from its informer
// cache (node authorization: which pods run on the caller's node).
var _ ca.PodLookup = (*Controller)(nil)

// PodsOnNode returns the pods scheduled on node that have not terminated.
// It returns nothing until the pod cache has synced.
func (c *Controller) PodsOnNode(node string) []ca.PodRef {
	if node == "" {
		return nil
	}
	objs, err := c.pods.GetIndexer().ByIndex(podsByNode, node)
	if err != nil {
		return nil
	}
	out := make([]ca.PodRef, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && !terminated(p) {
			out = append(out, podRef(p))
		}
	}
	return out
}

// PodByName returns the pod ns/name if it is known and has not terminated.
func (c *Controller) PodByName(ns, name string) (ca.PodRef, bool) {
	p, err := c.podLister.Pods(ns).Get(name)
	if err != nil || terminated(p) {
		return ca.PodRef{}, false
	}
	return podRef(p), true
}

func terminated(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func podRef(p *corev1.Pod) ca.PodRef {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return ca.PodRef{Namespace: p.Namespace, Name: p.Name, ServiceAccount: sa, NodeName: p.Spec.NodeName, UID: string(p.UID)}
}
