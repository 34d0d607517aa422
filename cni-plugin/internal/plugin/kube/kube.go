// Package kube reads, with client-go, the pod and namespace ambit-cni needs
// to apply the enrolment rule when the node agent is unreachable.
package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"ambit.dev/cni-plugin/internal/plugin"
	"ambit.dev/pkg/enrol"
)

// RequestTimeout bounds each API request.
const RequestTimeout = 5 * time.Second

// PodLookup is a plugin.PodLookup on the Kubernetes API.
type PodLookup struct {
	client     kubernetes.Interface
	kubeconfig string
}

var _ plugin.PodLookup = (*PodLookup)(nil)

// NewPodLookup builds a lookup from the kubeconfig file at path.
func NewPodLookup(path string) (plugin.PodLookup, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("cannot use the kubeconfig %s: %w", path, err)
	}
	cfg.Timeout = RequestTimeout
	cfg.UserAgent = plugin.PluginType
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot build a Kubernetes client from the kubeconfig %s: %w", path, err)
	}
	return NewPodLookupFromClient(client, path), nil
}

// NewPodLookupFromClient returns a lookup using client; kubeconfig is only
// named in errors.
func NewPodLookupFromClient(client kubernetes.Interface, kubeconfig string) *PodLookup {
	return &PodLookup{client: client, kubeconfig: kubeconfig}
}

// Lookup gets the namespace and the pod. A namespace that does not exist
// counts as unlabelled; a pod that does not exist is an error (the runtime
// is creating its sandbox, so it must exist).
func (l *PodLookup) Lookup(ctx context.Context, namespace, name string) (enrol.Namespace, enrol.Pod, error) {
	var ns enrol.Namespace
	nsObj, err := l.client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return enrol.Namespace{}, enrol.Pod{}, fmt.Errorf("getting namespace %q from the API server with the kubeconfig %s: %w", namespace, l.kubeconfig, err)
	default:
		ns.Labels = nsObj.Labels
	}
	podObj, err := l.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return enrol.Namespace{}, enrol.Pod{}, fmt.Errorf("getting pod %s/%s from the API server with the kubeconfig %s: %w", namespace, name, l.kubeconfig, err)
	}
	return ns, EnrolPod(podObj), nil
}

// EnrolPod copies what enrol.Decide reads from a Pod.
func EnrolPod(pod *corev1.Pod) enrol.Pod {
	names := func(cs []corev1.Container) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Name
		}
		return out
	}
	return enrol.Pod{
		Namespace:      pod.Namespace,
		Labels:         pod.Labels,
		Annotations:    pod.Annotations,
		HostNetwork:    pod.Spec.HostNetwork,
		Containers:     names(pod.Spec.Containers),
		InitContainers: names(pod.Spec.InitContainers),
	}
}
