// Package enrolment decides and describes what `ambitctl enroll`,
// `unenroll` and `status` show: which pods of a namespace are in the mesh
// (by ambit.dev/pkg/enrol.Decide, the rule the node agent and control plane
// apply), their redirection state, and the ztunnel of each node. It has no
// Kubernetes client code: internal/kube reads and patches the objects.
package enrolment

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/readiness"
	"ambit.dev/pkg/enrol"
)

// Pod is one pod as status and enroll show it.
type Pod struct {
	Name, Node string
	Phase      corev1.PodPhase
	// InMesh is enrol.Decide's verdict; Why its reason.
	InMesh bool
	Why    string
	// Redirection is the pod's ambit.dev/redirection annotation
	// (enabled | pending), empty when the node agent has not set it.
	Redirection string
}

// RedirectionState says how far capture of an in-mesh pod got: "-" for a
// pod out of the mesh, else the annotation, or "not set" before the node
// agent handled the pod.
func (p Pod) RedirectionState() string {
	switch {
	case !p.InMesh:
		return "-"
	case p.Redirection == "":
		return "not set"
	default:
		return p.Redirection
	}
}

// Note explains the pod's state where it needs explaining: why it is out
// of the mesh, or where to look when its capture is not enabled.
func (p Pod) Note(ambitNamespace string) string {
	agentLogs := fmt.Sprintf("see the logs of the node agent on %s (kubectl -n %s get pods -l app=%s -o wide)",
		p.Node, ambitNamespace, components.NodeAgent)
	switch {
	case !p.InMesh:
		return p.Why
	case p.Redirection == enrol.RedirectionEnabled:
		return ""
	case p.Node == "":
		return "not scheduled yet; captured when it starts"
	case p.Redirection == enrol.RedirectionPending:
		return "capture pending; " + agentLogs
	default:
		return "the node agent has not handled it yet; " + agentLogs
	}
}

// Pods applies enrol.Decide to each live pod (Pending or Running; finished
// pods have no traffic) of a namespace with labels nsLabels, sorted by
// name.
func Pods(nsLabels map[string]string, pods []corev1.Pod) []Pod {
	ns := enrol.Namespace{Labels: nsLabels}
	var out []Pod
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		in, why := enrol.Decide(ns, toEnrolPod(p))
		out = append(out, Pod{Name: p.Name, Node: p.Spec.NodeName, Phase: p.Status.Phase, InMesh: in, Why: why,
			Redirection: p.Annotations[enrol.AnnotationRedirection]})
	}
	slices.SortFunc(out, func(a, b Pod) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func toEnrolPod(p corev1.Pod) enrol.Pod {
	ep := enrol.Pod{Namespace: p.Namespace, Labels: p.Labels, Annotations: p.Annotations, HostNetwork: p.Spec.HostNetwork}
	for _, c := range p.Spec.Containers {
		ep.Containers = append(ep.Containers, c.Name)
	}
	for _, c := range p.Spec.InitContainers {
		ep.InitContainers = append(ep.InitContainers, c.Name)
	}
	return ep
}

// Enrolled reports whether a namespace with these labels is enrolled.
func Enrolled(nsLabels map[string]string) bool {
	return nsLabels[enrol.LabelDataplaneMode] == enrol.DataplaneModeAmbient
}

// CheckTarget refuses namespaces that must not be enrolled: Ambit's own
// (the control plane would have to capture itself to get its own
// certificates) and kube-system (cluster DNS and the apiserver's helpers
// must not depend on the mesh).
func CheckTarget(ns, ambitNamespace string) error {
	switch ns {
	case ambitNamespace:
		return fmt.Errorf("namespace %s is where Ambit itself runs and cannot be enrolled: enrol the namespaces of your applications", ns)
	case "kube-system":
		return fmt.Errorf("namespace kube-system runs the cluster's own components and cannot be enrolled: enrol the namespaces of your applications")
	}
	return nil
}

// EnrollLines describes the outcome of enrolling ns, whose pods are shown
// as enrolled (pods computed with the label set). installed says whether
// Ambit's node agent is present to act on the label.
func EnrollLines(ns string, already bool, pods []Pod, installed bool, ambitNamespace string) []string {
	label := enrol.LabelDataplaneMode + "=" + enrol.DataplaneModeAmbient
	var out []string
	if already {
		out = append(out, fmt.Sprintf("namespace %s is already enrolled (%s)", ns, label))
	} else {
		out = append(out, fmt.Sprintf("namespace %s enrolled: labelled %s", ns, label))
	}
	in, stayOut := split(pods)
	switch {
	case len(pods) == 0:
		out = append(out, "it has no running pods; pods created from now on are captured as they start")
	case !already:
		out = append(out, fmt.Sprintf("the node agent captures its running pods now, without restarting them: %d join the mesh%s",
			len(in), names(in)))
	default:
		out = append(out, fmt.Sprintf("%d pod(s) in the mesh%s", len(in), names(in)))
	}
	for _, p := range stayOut {
		out = append(out, fmt.Sprintf("pod %s stays out: %s", p.Name, p.Why))
	}
	if !installed {
		out = append(out, fmt.Sprintf("warning: Ambit's node agent is not installed in namespace %s, so nothing captures these pods yet: run ambitctl install (or pass -n)", ambitNamespace))
	}
	return append(out, "see the redirection state with: ambitctl status")
}

// UnenrollLines describes the outcome of unenrolling ns; pods are its pods
// as they were enrolled before the label was removed.
func UnenrollLines(ns string, wasEnrolled bool, pods []Pod) []string {
	if !wasEnrolled {
		return []string{fmt.Sprintf("namespace %s is not enrolled (no label %s=%s): nothing to do", ns, enrol.LabelDataplaneMode, enrol.DataplaneModeAmbient)}
	}
	in, _ := split(pods)
	out := []string{fmt.Sprintf("namespace %s unenrolled: label %s removed", ns, enrol.LabelDataplaneMode)}
	if len(in) > 0 {
		out = append(out, fmt.Sprintf("the node agent removes the redirection rules of %d pod(s) now, without restarting them%s; their traffic is no longer carried over mTLS",
			len(in), names(in)))
	}
	return out
}

func split(pods []Pod) (in, out []Pod) {
	for _, p := range pods {
		if p.InMesh {
			in = append(in, p)
		} else {
			out = append(out, p)
		}
	}
	return in, out
}

// names lists up to 5 pod names as ": a, b, c" (", ..." beyond).
func names(pods []Pod) string {
	if len(pods) == 0 {
		return ""
	}
	var ns []string
	for i, p := range pods {
		if i == 5 {
			ns = append(ns, "...")
			break
		}
		ns = append(ns, p.Name)
	}
	return " (" + strings.Join(ns, ", ") + ")"
}

// Ztunnel is the ztunnel of one node, as status shows it.
type Ztunnel struct {
	Node string
	// Pod is empty when no ztunnel pod runs on the node.
	Pod   string
	Ready bool
}

// Ztunnels matches ztunnel pods to nodes: one entry per node, sorted, with
// a ready pod preferred when a node has several (during a rollout).
func Ztunnels(nodes []corev1.Node, pods []corev1.Pod) []Ztunnel {
	out := make([]Ztunnel, 0, len(nodes))
	for _, n := range nodes {
		z := Ztunnel{Node: n.Name}
		for i := range pods {
			p := &pods[i]
			if p.Spec.NodeName != n.Name {
				continue
			}
			ready := readiness.PodReady(p)
			if z.Pod == "" || (ready && !z.Ready) {
				z.Pod, z.Ready = p.Name, ready
			}
		}
		out = append(out, z)
	}
	slices.SortFunc(out, func(a, b Ztunnel) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// Captured names the pods that carry the node agent's redirection
// annotation ("namespace/name"), sorted.
func Captured(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		if _, ok := p.Annotations[enrol.AnnotationRedirection]; ok {
			out = append(out, p.Namespace+"/"+p.Name)
		}
	}
	slices.Sort(out)
	return out
}

// UninstallBlocker says why uninstalling now would cut pods off, or returns
// nil: pods whose traffic the node agent redirects into ztunnel lose every
// connection once ztunnel is gone (their in-pod rules stay: Ambit fails
// closed), so they must leave the mesh first.
func UninstallBlocker(enrolledNamespaces, captured []string) error {
	if len(enrolledNamespaces) == 0 && len(captured) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("uninstalling now would cut off pods that are in the mesh: ")
	if len(enrolledNamespaces) > 0 {
		fmt.Fprintf(&b, "%d namespace(s) are enrolled (%s)", len(enrolledNamespaces), strings.Join(firstN(enrolledNamespaces, 5), ", "))
		if len(captured) > 0 {
			b.WriteString(" and ")
		}
	}
	if len(captured) > 0 {
		fmt.Fprintf(&b, "%d pod(s) are captured (%s)", len(captured), strings.Join(firstN(captured, 5), ", "))
	}
	b.WriteString("; run ambitctl unenroll <namespace> for each (pods leave without restart), or pass --unenroll to do it now")
	return errors.New(b.String())
}

func firstN(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(slices.Clone(s[:n]), fmt.Sprintf("and %d more", len(s)-n))
}
