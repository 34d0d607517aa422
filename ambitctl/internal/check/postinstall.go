package check

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/readiness"
)

// Install is what the post-install rules read.
type Install struct {
	// Namespace is Ambit's namespace.
	Namespace string
	Nodes     []corev1.Node
	// CRDs holds the state of each CRD found, by name.
	CRDs map[string]readiness.State
	// ControlPlane is nil when the Deployment does not exist.
	ControlPlane *appsv1.Deployment
	// DaemonSets holds the DaemonSets found, by name.
	DaemonSets map[string]*appsv1.DaemonSet
	// Pods holds each DaemonSet's pods (matched by its selector), by
	// DaemonSet name.
	Pods map[string][]corev1.Pod
	// RootCert is nil when the ConfigMap does not exist.
	RootCert *corev1.ConfigMap
}

// PostInstall runs every post-install rule.
func PostInstall(in Install) []Result {
	out := CRDs(in.CRDs)
	out = append(out, ControlPlane(in.Namespace, in.ControlPlane))
	for _, w := range components.Workloads() {
		if w.Kind == components.KindDaemonSet {
			out = append(out, PerNode(in.Namespace, w, in.DaemonSets[w.Name], in.Pods[w.Name], in.Nodes)...)
		}
	}
	return append(out, RootCert(in.Namespace, in.RootCert))
}

// CRDs checks that each of Ambit's CRDs exists and is Established; the
// missing ones are reported on one line.
func CRDs(found map[string]readiness.State) []Result {
	var out []Result
	var good, missing []string
	for _, name := range components.CRDs {
		st, present := found[name]
		switch {
		case !present:
			missing = append(missing, name)
		case !st.Ready:
			out = append(out, fail("kubectl get crd "+name+" -o yaml (see status.conditions)", "CRD %s is not established (%s)", name, st.Reason))
		default:
			good = append(good, name)
		}
	}
	if len(missing) > 0 {
		out = append([]Result{fail("run ambitctl install (uninstall --delete-crds removes them)", "CRDs missing: %s", joinNames(missing))}, out...)
	}
	if len(out) == 0 {
		return []Result{ok("CRDs established: %s", joinNames(good))}
	}
	return out
}

// ControlPlane checks that the control plane Deployment is available.
func ControlPlane(ns string, d *appsv1.Deployment) Result {
	name := components.ControlPlane
	if d == nil {
		return fail("run ambitctl install -n "+ns, "control plane Deployment %s/%s not found", ns, name)
	}
	st := readiness.Deployment(d)
	if !st.Ready {
		return fail(fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", ns, name, ns, name),
			"control plane is not available: %s (%s)", st.Reason, st.Summary)
	}
	return ok("control plane available (%s)", st.Summary)
}

// PerNode checks that the DaemonSet w exists and has a ready pod on every
// node: a node without ztunnel or node agent runs the pods of enrolled
// namespaces outside the mesh, so a nodeSelector that leaves a Linux node
// out is a failure too (non-Linux nodes are skipped: Ambit runs on Linux).
func PerNode(ns string, w components.Workload, ds *appsv1.DaemonSet, pods []corev1.Pod, nodes []corev1.Node) []Result {
	if ds == nil {
		return []Result{fail("run ambitctl install -n "+ns, "%s DaemonSet %s/%s not found", w.Title, ns, w.Name)}
	}
	selector := components.DefaultSelector(w.Name)
	if ds.Spec.Selector != nil {
		if s, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err == nil {
			selector = s.String()
		}
	}
	byNode := map[string][]corev1.Pod{}
	for _, p := range pods {
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
	}
	var out []Result
	var good []string
	for _, n := range nodes {
		if os, set := n.Labels[corev1.LabelOSStable]; set && os != "linux" {
			continue // Ambit runs on Linux nodes only (the chart selects them)
		}
		if !labels.SelectorFromSet(ds.Spec.Template.Spec.NodeSelector).Matches(labels.Set(n.Labels)) {
			out = append(out, fail(fmt.Sprintf("remove the nodeSelector of DaemonSet %s/%s or label the node (kubectl get nodes --show-labels)", ns, w.Name),
				"%s cannot run on node %s: the DaemonSet's nodeSelector %v excludes it, so pods of enrolled namespaces there are not in the mesh",
				w.Title, n.Name, labels.Set(ds.Spec.Template.Spec.NodeSelector)))
			continue
		}
		describe := fmt.Sprintf("kubectl -n %s describe pod -l %s --field-selector spec.nodeName=%s", ns, selector, n.Name)
		onNode := byNode[n.Name]
		if len(onNode) == 0 {
			out = append(out, fail(describe+" (and kubectl -n "+ns+" describe daemonset "+w.Name+" for scheduling events)",
				"%s is not running on node %s", w.Title, n.Name))
			continue
		}
		if i := firstReady(onNode); i >= 0 {
			good = append(good, n.Name)
			continue
		}
		p := onNode[0]
		out = append(out, fail(fmt.Sprintf("%s; kubectl -n %s logs %s", describe, ns, p.Name),
			"%s is not ready on node %s (pod %s: %s)", w.Title, n.Name, p.Name, podProblem(p)))
	}
	if len(good) > 0 {
		out = append([]Result{ok("%s ready on %d node(s): %s", w.Title, len(good), joinNames(good))}, out...)
	}
	if len(out) == 0 {
		out = append(out, fail(fmt.Sprintf("check the nodeSelector of DaemonSet %s/%s and the node labels (kubectl get nodes --show-labels)", ns, w.Name),
			"%s targets no node", w.Title))
	}
	return out
}

func firstReady(pods []corev1.Pod) int {
	for i := range pods {
		if readiness.PodReady(&pods[i]) {
			return i
		}
	}
	return -1
}

// podProblem summarises why p is not ready: the first waiting or
// terminated container reason, else the phase.
func podProblem(p corev1.Pod) string {
	statuses := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	var reasons []string
	for _, cs := range statuses {
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			reasons = append(reasons, cs.Name+" "+cs.State.Waiting.Reason)
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
			reasons = append(reasons, cs.Name+" "+cs.State.Terminated.Reason)
		case cs.State.Running != nil && !cs.Ready:
			reasons = append(reasons, cs.Name+" running but not ready (readiness probe failing)")
		}
	}
	if p.DeletionTimestamp != nil {
		reasons = append(reasons, "terminating")
	}
	if len(reasons) == 0 {
		return "phase " + string(p.Status.Phase)
	}
	sort.Strings(reasons)
	return strings.Join(reasons, ", ")
}

// RootCert checks that the control plane has published the mesh trust
// bundle ztunnel mounts.
func RootCert(ns string, cm *corev1.ConfigMap) Result {
	name := components.RootCertConfigMap
	logs := fmt.Sprintf("the control plane publishes it when it starts: kubectl -n %s logs deployment/%s", ns, components.ControlPlane)
	if cm == nil {
		return fail(logs, "ConfigMap %s/%s (the mesh root certificate) is missing", ns, name)
	}
	if strings.TrimSpace(cm.Data[components.RootCertKey]) == "" {
		return fail(logs, "ConfigMap %s/%s has no %s", ns, name, components.RootCertKey)
	}
	return ok("mesh root certificate published (ConfigMap %s/%s)", ns, name)
}
