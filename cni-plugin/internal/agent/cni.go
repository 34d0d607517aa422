package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/cni-plugin/internal/netns"
	"ambit.dev/cni-plugin/internal/zdsserver"
	"ambit.dev/pkg/enrol"
)

// annotateTimeout bounds the background annotation of a pod captured by a
// CNI ADD.
const annotateTimeout = 10 * time.Second

// OpenFunc opens the netns path of a CNI request, as the plugin that sent
// it sees the path.
type OpenFunc = func(path string) (*os.File, error)

// CNIAdd captures a new sandbox: if the pod is enrolled, it opens the
// netns, installs the rules and waits (up to the CNI ADD timeout) until a
// ztunnel acked it. The answer tells the plugin whether the pod is in the
// mesh; an error makes the runtime fail the sandbox and retry.
func (a *Agent) CNIAdd(ctx context.Context, req cniapi.PodRequest, open OpenFunc) (cniapi.PodResponse, error) {
	pod, enrolled, reason, err := a.decide(ctx, req)
	if err != nil || !enrolled {
		return cniapi.PodResponse{Enrolled: false, Reason: reason}, err
	}
	if req.Netns == "" {
		return cniapi.PodResponse{}, fmt.Errorf("pod %s/%s is in the mesh but the CNI ADD carries no netns path", pod.Namespace, pod.Name)
	}
	f, err := open(req.Netns)
	if err != nil {
		return cniapi.PodResponse{}, fmt.Errorf("pod %s/%s is in the mesh but its netns cannot be opened: %w", pod.Namespace, pod.Name, err)
	}
	p := toPod(pod)
	if ips := parseIPs(req.IPs); len(ips) > 0 {
		p.IPs = ips
	}

	ctx, cancel := context.WithTimeout(ctx, a.cfg.CNIAddTimeout)
	defer cancel()
	unlock := a.locks.lock(p.UID)
	r, err := a.newRecord(p, f, req.ContainerID)
	if err != nil {
		unlock()
		f.Close()
		return cniapi.PodResponse{}, fmt.Errorf("pod %s is in the mesh but: %w", p, err)
	}
	a.setRecord(r)
	out, err := a.complete(ctx, r, true)
	if err != nil {
		// The runtime tears this sandbox down and retries with a new one.
		a.forgetLocked(p.UID, "CNI ADD failed")
		unlock()
		switch out {
		case OutcomeNoZtunnel:
			return cniapi.PodResponse{}, fmt.Errorf("pod %s is in the mesh but no ztunnel connected to the node agent on node %s within %s (is the ztunnel pod running?); the runtime will retry",
				p, a.cfg.NodeName, a.cfg.CNIAddTimeout)
		case OutcomeNotAcked:
			if errors.Is(err, context.DeadlineExceeded) {
				return cniapi.PodResponse{}, fmt.Errorf("pod %s is in the mesh but ztunnel on node %s has not acked it within %s (is the ztunnel pod running?); the runtime will retry",
					p, a.cfg.NodeName, a.cfg.CNIAddTimeout)
			}
			return cniapi.PodResponse{}, fmt.Errorf("pod %s is in the mesh but ztunnel on node %s did not take it: %w; the runtime will retry", p, a.cfg.NodeName, err)
		default:
			return cniapi.PodResponse{}, fmt.Errorf("pod %s is in the mesh but: %w; the runtime will retry", p, err)
		}
	}
	unlock()
	// Annotate now, not from reconcile: a short-lived pod may finish before
	// the informer shows it running. In the background: the API round trip
	// is not on the pod's start-up path. A failure only delays the
	// annotation (reconcile retries).
	if pod.Annotations[enrol.AnnotationRedirection] != enrol.RedirectionEnabled {
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), annotateTimeout)
			defer cancel()
			if err := a.annotate(ctx, pod, enrol.RedirectionEnabled); err != nil {
				a.log.Warn("captured pod not annotated yet", "pod", p.String(), "error", err)
			}
		}()
	}
	a.enqueue(p.String())
	return cniapi.PodResponse{Enrolled: true, Reason: reason}, nil
}

// CNIDel forgets the sandbox of a CNI DEL: DelWorkload and close its netns
// (its rules die with it). A DEL of an older sandbox of the pod (another
// container ID, or another netns) leaves the current capture alone. It
// never fails for an unknown pod.
func (a *Agent) CNIDel(ctx context.Context, req cniapi.PodRequest, open OpenFunc) (cniapi.PodResponse, error) {
	var uids []string
	if req.PodUID != "" {
		uids = []string{req.PodUID}
	} else {
		uids = a.recordsOf(req.PodNamespace, req.PodName)
		if p, err := a.podLister.Pods(req.PodNamespace).Get(req.PodName); err == nil && !slices.Contains(uids, string(p.UID)) {
			uids = append(uids, string(p.UID))
		}
	}
	forgot := false
	for _, uid := range uids {
		unlock := a.locks.lock(uid)
		if r := a.record(uid); r == nil || a.sameSandbox(r, req, open) {
			if r != nil && len(r.pod.IPs) > 0 {
				a.markDeleted(uid, r.pod)
			}
			forgot = a.forgetLocked(uid, "CNI DEL") || forgot
		} else {
			a.log.Debug("CNI DEL of an older sandbox; keeping the current capture", "pod", r.pod.String(),
				"del", req.ContainerID, "captured", r.containerID)
		}
		unlock()
	}
	a.enqueue(req.PodNamespace + "/" + req.PodName)
	if forgot {
		return cniapi.PodResponse{Enrolled: true, Reason: "sandbox released"}, nil
	}
	return cniapi.PodResponse{Enrolled: false, Reason: "the agent held nothing for this sandbox"}, nil
}

// sameSandbox reports whether a DEL request is about r's sandbox. When it
// cannot tell, it says yes: forgetting too much is repaired by reconcile
// (which finds a running pod's netns again), keeping a dead netns is not.
func (a *Agent) sameSandbox(r *record, req cniapi.PodRequest, open OpenFunc) bool {
	if r.containerID != "" && req.ContainerID != "" {
		return r.containerID == req.ContainerID
	}
	if req.Netns == "" {
		return true
	}
	f, err := open(req.Netns)
	if err != nil {
		return true
	}
	defer f.Close()
	k1, err1 := netns.KeyOf(f)
	k2, err2 := netns.KeyOf(r.netns)
	return err1 != nil || err2 != nil || k1 == k2
}

// CNICheck verifies an enrolled pod is still captured: the agent holds its
// netns, the rules are in place, and a live ztunnel acked it.
func (a *Agent) CNICheck(ctx context.Context, req cniapi.PodRequest, _ OpenFunc) (cniapi.PodResponse, error) {
	pod, enrolled, reason, err := a.decide(ctx, req)
	if err != nil || !enrolled {
		return cniapi.PodResponse{Enrolled: false, Reason: reason}, err
	}
	uid := string(pod.UID)
	unlock := a.locks.lock(uid)
	defer unlock()
	r := a.record(uid)
	if r == nil {
		return cniapi.PodResponse{}, fmt.Errorf("pod %s/%s is in the mesh but the node agent holds no netns for it (not captured: see its %s annotation and the agent's logs)",
			pod.Namespace, pod.Name, enrol.AnnotationRedirection)
	}
	if r.containerID != "" && req.ContainerID != "" && r.containerID != req.ContainerID {
		return cniapi.PodResponse{}, fmt.Errorf("pod %s/%s: the node agent captured sandbox %s, not %s", pod.Namespace, pod.Name, r.containerID, req.ContainerID)
	}
	st, err := a.rules.Check(ctx, netns.FDPath(r.netns), r.cfg)
	if err != nil {
		return cniapi.PodResponse{}, fmt.Errorf("pod %s/%s: checking its redirection rules: %w", pod.Namespace, pod.Name, err)
	}
	if !st.Installed() {
		return cniapi.PodResponse{}, fmt.Errorf("pod %s/%s is in the mesh but its redirection rules are not in place: %s",
			pod.Namespace, pod.Name, strings.Join(st.Problems, "; "))
	}
	if !a.zt.Acked(uid) {
		return cniapi.PodResponse{}, fmt.Errorf("pod %s/%s is in the mesh but no connected ztunnel on node %s has acked it (is the ztunnel pod running?)",
			pod.Namespace, pod.Name, a.cfg.NodeName)
	}
	return cniapi.PodResponse{Enrolled: true, Reason: reason}, nil
}

// lookupPod returns the pod from the cache, or from the API server when the
// cache does not have it (it was just created) or has another uid.
func (a *Agent) lookupPod(ctx context.Context, namespace, name, uid string) (*corev1.Pod, error) {
	if namespace == "" || name == "" {
		return nil, errors.New("the CNI request names no pod (K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS)")
	}
	if p, err := a.podLister.Pods(namespace).Get(name); err == nil && (uid == "" || string(p.UID) == uid) {
		return p, nil
	}
	p, err := a.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read pod %s/%s from the API server: %w (is the API server reachable from the node agent, and may it get pods?)", namespace, name, err)
	}
	if uid != "" && string(p.UID) != uid {
		return nil, fmt.Errorf("pod %s/%s has uid %s, but the runtime asks for uid %s (the pod was deleted and recreated)", namespace, name, p.UID, uid)
	}
	return p, nil
}

// lookupNamespace returns the namespace from the cache or the API server;
// nil when it does not exist.
// decide looks up the pod of a CNI request and its namespace, and says
// whether the pod is enrolled and why.
func (a *Agent) decide(ctx context.Context, req cniapi.PodRequest) (*corev1.Pod, bool, string, error) {
	pod, err := a.lookupPod(ctx, req.PodNamespace, req.PodName, req.PodUID)
	if err != nil {
		return nil, false, "", err
	}
	ns, err := a.lookupNamespace(ctx, pod.Namespace)
	if err != nil {
		return nil, false, "", err
	}
	enrolled, reason := enrol.Decide(toEnrolNamespace(ns), toEnrolPod(pod))
	return pod, enrolled, reason, nil
}

func (a *Agent) lookupNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if ns, err := a.nsLister.Get(name); err == nil {
		return ns, nil
	}
	ns, err := a.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read namespace %s from the API server: %w (is the API server reachable from the node agent, and may it get namespaces?)", name, err)
	}
	return ns, nil
}

var _ Ztunnel = (*zdsserver.Server)(nil)
