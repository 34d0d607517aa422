package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/readiness"
	"ambit.dev/ambitctl/internal/waypoint"
)

// CheckGatewayAPI returns an error naming the fix when the apiserver does
// not serve Gateway API Gateways (gateway.networking.k8s.io/v1).
func CheckGatewayAPI(typed kubernetes.Interface) error {
	gv := waypoint.GatewayGVR.GroupVersion().String()
	list, err := typed.Discovery().ServerResourcesForGroupVersion(gv)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("asking the apiserver whether it serves %s (check --kubeconfig and --context: kubectl cluster-info): %w", gv, hint(err))
	}
	if err == nil {
		for _, r := range list.APIResources {
			if r.Name == waypoint.GatewayGVR.Resource {
				return nil
			}
		}
	}
	return fmt.Errorf("the cluster does not serve the Gateway API (%s gateways): its CRDs are missing; ambitctl install installs them (unless gatewayAPI.installCRDs=false)", gv)
}

// gateway reads the Gateway namespace/name; found is false when it does
// not exist.
func gateway(ctx context.Context, dyn dynamic.Interface, namespace, name string) (info waypoint.Info, found bool, err error) {
	u, err := dyn.Resource(waypoint.GatewayGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return waypoint.Info{}, false, nil
	case err != nil:
		return waypoint.Info{}, false, fmt.Errorf("reading Gateway %s/%s: %w", namespace, name, hint(err))
	}
	return waypoint.FromObject(u), true, nil
}

// errNotWaypoint refuses to touch a Gateway of another class.
func errNotWaypoint(i waypoint.Info) error {
	return fmt.Errorf("Gateway %s is of class %q, not %s: it is not a waypoint (pick another --name)", i.Ref(), i.Class, waypoint.Class)
}

// ApplyWaypoint server-side applies the waypoint Gateway namespace/name for
// forTraffic and, with enrollNamespace, labels the namespace to use it.
func ApplyWaypoint(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface, namespace, name, forTraffic string, enrollNamespace bool) ([]string, error) {
	if err := CheckGatewayAPI(typed); err != nil {
		return nil, err
	}
	ns, err := getNamespace(ctx, typed, namespace)
	if err != nil {
		return nil, err
	}
	old, found, err := gateway(ctx, dyn, namespace, name)
	if err != nil {
		return nil, err
	}
	if found && old.Class != waypoint.Class {
		return nil, errNotWaypoint(old)
	}
	gw := waypoint.Gateway(namespace, name, forTraffic)
	if _, err := dyn.Resource(waypoint.GatewayGVR).Namespace(namespace).Apply(ctx, name, gw,
		metav1.ApplyOptions{FieldManager: components.FieldManager, Force: true}); err != nil {
		return nil, fmt.Errorf("applying Gateway %s/%s: %w (you need permission to create gateways.gateway.networking.k8s.io in namespace %s)", namespace, name, hint(err), namespace)
	}
	already := waypoint.Object{Kind: waypoint.KindNamespace, Name: namespace, Labels: ns.Labels}.Names(namespace, name)
	enrolled := false
	if enrollNamespace && !already {
		// A use-waypoint-namespace label left from another waypoint would
		// point the new label elsewhere: remove it.
		if err := patchNamespaceLabels(ctx, typed, namespace, map[string]any{
			waypoint.LabelUseWaypoint: name, waypoint.LabelUseWaypointNamespace: nil}); err != nil {
			return nil, err
		}
		enrolled = true
	}
	return waypoint.ApplyLines(namespace, name, forTraffic, !found, enrolled, already), nil
}

// WaitWaypoint polls the Gateway namespace/name every interval until it is
// Programmed, calling progress with each new waypoint.Progress line. When
// ctx ends first it returns the last state read and ctx's error.
func WaitWaypoint(ctx context.Context, dyn dynamic.Interface, namespace, name string, interval time.Duration, progress func(string)) (waypoint.Info, error) {
	last := waypoint.Info{Namespace: namespace, Name: name}
	lastLine := ""
	err := wait.PollUntilContextCancel(ctx, interval, true, func(ctx context.Context) (bool, error) {
		i, found, err := gateway(ctx, dyn, namespace, name)
		switch {
		case err != nil && ctx.Err() != nil:
			return false, nil
		case err != nil:
			return false, err
		case !found:
			return false, fmt.Errorf("Gateway %s/%s disappeared while waiting for it (was it deleted?)", namespace, name)
		}
		last = i
		if l := waypoint.Progress(i); l != lastLine {
			lastLine = l
			progress(l)
		}
		return i.Programmed(), nil
	})
	if err != nil && ctx.Err() != nil {
		return last, ctx.Err()
	}
	return last, err
}

// ListWaypoints lists the waypoint Gateways of namespace ("" for all).
func ListWaypoints(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface, namespace string) ([]waypoint.Info, error) {
	if err := CheckGatewayAPI(typed); err != nil {
		return nil, err
	}
	if namespace != "" {
		if _, err := getNamespace(ctx, typed, namespace); err != nil {
			return nil, err
		}
	}
	l, err := dyn.Resource(waypoint.GatewayGVR).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing Gateways: %w (you need permission to list gateways.gateway.networking.k8s.io)", hint(err))
	}
	var out []waypoint.Info
	for i := range l.Items {
		if wi := waypoint.FromObject(&l.Items[i]); wi.Class == waypoint.Class {
			out = append(out, wi)
		}
	}
	return out, nil
}

// ReadWaypointStatus reads the waypoint namespace/name, its pods and the
// objects bound to it.
func ReadWaypointStatus(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface, namespace, name string) (waypoint.Status, error) {
	if err := CheckGatewayAPI(typed); err != nil {
		return waypoint.Status{}, err
	}
	if _, err := getNamespace(ctx, typed, namespace); err != nil {
		return waypoint.Status{}, err
	}
	i, found, err := gateway(ctx, dyn, namespace, name)
	switch {
	case err != nil:
		return waypoint.Status{}, err
	case !found:
		return waypoint.Status{}, fmt.Errorf("waypoint %s/%s not found: ambitctl waypoint list -A shows the waypoints, ambitctl waypoint apply -n %s --name %s creates it", namespace, name, namespace, name)
	case i.Class != waypoint.Class:
		return waypoint.Status{}, errNotWaypoint(i)
	}
	s := waypoint.Status{Gateway: i}
	sel := labels.SelectorFromSet(labels.Set{waypoint.LabelGatewayName: name}).String()
	pods, err := typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return s, fmt.Errorf("listing the pods of waypoint %s/%s: %w", namespace, name, hint(err))
	}
	for _, p := range pods.Items {
		s.Pods = append(s.Pods, waypoint.Pod{Name: p.Name, Node: p.Spec.NodeName, Phase: string(p.Status.Phase), Ready: readiness.PodReady(&p)})
	}
	s.Bound, err = boundTo(ctx, typed, namespace, name, true)
	return s, err
}

// boundTo lists the Namespaces (withNamespaces), Services and pods whose
// labels name the waypoint namespace/name.
func boundTo(ctx context.Context, typed kubernetes.Interface, namespace, name string, withNamespaces bool) ([]waypoint.Object, error) {
	opts := metav1.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{waypoint.LabelUseWaypoint: name}).String()}
	var objs []waypoint.Object
	if withNamespaces {
		nss, err := typed.CoreV1().Namespaces().List(ctx, opts)
		if err != nil {
			return nil, bindErr("namespaces", err)
		}
		for _, n := range nss.Items {
			objs = append(objs, waypoint.Object{Kind: waypoint.KindNamespace, Name: n.Name, Labels: n.Labels})
		}
	}
	svcs, err := typed.CoreV1().Services(metav1.NamespaceAll).List(ctx, opts)
	if err != nil {
		return nil, bindErr("services", err)
	}
	for _, s := range svcs.Items {
		objs = append(objs, waypoint.Object{Kind: waypoint.KindService, Namespace: s.Namespace, Name: s.Name, Labels: s.Labels})
	}
	pods, err := typed.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
	if err != nil {
		return nil, bindErr("pods", err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		objs = append(objs, waypoint.Object{Kind: waypoint.KindPod, Namespace: p.Namespace, Name: p.Name, Labels: p.Labels})
	}
	return waypoint.Bound(namespace, name, objs), nil
}

func bindErr(what string, err error) error {
	return fmt.Errorf("listing the %s labelled %s: %w (finding what uses a waypoint reads %s in every namespace: use a kubeconfig user allowed to list them)", what, waypoint.LabelUseWaypoint, hint(err), what)
}

// DeleteWaypoint removes the namespace's LabelUseWaypoint when it names the
// waypoint, deletes the Gateway (the waypoint controller's Deployment,
// Service and ServiceAccount are owned by it and go with it) and warns
// about Services and pods still labelled to use it.
func DeleteWaypoint(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface, namespace, name string) ([]string, error) {
	if err := CheckGatewayAPI(typed); err != nil {
		return nil, err
	}
	ns, err := getNamespace(ctx, typed, namespace)
	if err != nil {
		return nil, err
	}
	i, found, err := gateway(ctx, dyn, namespace, name)
	if err != nil {
		return nil, err
	}
	if found && i.Class != waypoint.Class {
		return nil, errNotWaypoint(i)
	}
	unlabel := waypoint.Object{Kind: waypoint.KindNamespace, Name: namespace, Labels: ns.Labels}.Names(namespace, name)
	if unlabel {
		if err := patchNamespaceLabels(ctx, typed, namespace, map[string]any{
			waypoint.LabelUseWaypoint: nil, waypoint.LabelUseWaypointNamespace: nil}); err != nil {
			return nil, err
		}
	}
	deleted := false
	if found {
		bg := metav1.DeletePropagationBackground
		err := dyn.Resource(waypoint.GatewayGVR).Namespace(namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
		switch {
		case err == nil:
			deleted = true
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("deleting Gateway %s/%s: %w (you need permission to delete gateways.gateway.networking.k8s.io in namespace %s)", namespace, name, hint(err), namespace)
		}
	}
	still, err := boundTo(ctx, typed, namespace, name, false)
	if err != nil {
		return nil, err
	}
	return waypoint.DeleteLines(namespace, name, unlabel, deleted, still), nil
}

// patchNamespaceLabels sets (string) or removes (nil) labels of namespace
// ns with a JSON merge patch, leaving the others alone.
func patchNamespaceLabels(ctx context.Context, typed kubernetes.Interface, ns string, set map[string]any) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": set}})
	if err != nil {
		return err
	}
	if _, err := typed.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: components.FieldManager}); err != nil {
		return fmt.Errorf("labelling namespace %s: %w (you need permission to patch namespaces)", ns, hint(err))
	}
	return nil
}

// gatewayClassGVR is the cluster-scoped GatewayClass resource.
var gatewayClassGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gatewayclasses"}

// AllWaypoints lists the waypoint Gateways of every namespace; none when
// the cluster does not serve the Gateway API.
func AllWaypoints(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface) ([]waypoint.Info, error) {
	if CheckGatewayAPI(typed) != nil {
		return nil, nil
	}
	return ListWaypoints(ctx, typed, dyn, "")
}

// RemoveWaypoints removes what the waypoints left once the control plane
// is gone (uninstall): every waypoint Gateway (the controller's
// ServiceAccount, Service and Deployment go with it, owned by it), the
// bindings auto-provisioning added to Services (the label, where the
// annotation says Ambit put it; users' own labels stay), and the
// GatewayClass. Nothing when the Gateway API is not served (deleting its
// CRDs deleted them all).
func RemoveWaypoints(ctx context.Context, typed kubernetes.Interface, dyn dynamic.Interface) ([]string, error) {
	if CheckGatewayAPI(typed) != nil {
		return nil, nil
	}
	gws, err := ListWaypoints(ctx, typed, dyn, "")
	if err != nil {
		return nil, err
	}
	var lines []string
	bg := metav1.DeletePropagationBackground
	for _, g := range gws {
		err := dyn.Resource(waypoint.GatewayGVR).Namespace(g.Namespace).Delete(ctx, g.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
		if err != nil && !apierrors.IsNotFound(err) {
			return lines, fmt.Errorf("deleting waypoint Gateway %s: %w (you need permission to delete gateways.gateway.networking.k8s.io)", g.Ref(), hint(err))
		}
		who := "created by you"
		if g.AutoProvisioned {
			who = "auto-provisioned"
		}
		lines = append(lines, fmt.Sprintf("waypoint %s deleted (%s)", g.Ref(), who))
	}
	svcs, err := typed.CoreV1().Services("").List(ctx, metav1.ListOptions{LabelSelector: waypoint.LabelUseWaypoint})
	if err != nil {
		return lines, fmt.Errorf("listing Services bound to waypoints: %w (you need permission to list services)", hint(err))
	}
	for _, s := range svcs.Items {
		if _, auto := s.Annotations[waypoint.AnnotationAutoWaypoint]; !auto {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
			"labels":      map[string]any{waypoint.LabelUseWaypoint: nil},
			"annotations": map[string]any{waypoint.AnnotationAutoWaypoint: nil},
		}})
		if _, err := typed.CoreV1().Services(s.Namespace).Patch(ctx, s.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: components.FieldManager}); err != nil && !apierrors.IsNotFound(err) {
			return lines, fmt.Errorf("removing the auto-provisioned waypoint binding of Service %s/%s: %w (you need permission to patch services)", s.Namespace, s.Name, hint(err))
		}
		lines = append(lines, fmt.Sprintf("Service %s/%s: auto-provisioned waypoint binding removed", s.Namespace, s.Name))
	}
	switch err := dyn.Resource(gatewayClassGVR).Delete(ctx, waypoint.Class, metav1.DeleteOptions{}); {
	case err == nil:
		lines = append(lines, "GatewayClass "+waypoint.Class+" deleted")
	case !apierrors.IsNotFound(err):
		return lines, fmt.Errorf("deleting GatewayClass %s: %w (you need permission to delete gatewayclasses.gateway.networking.k8s.io)", waypoint.Class, hint(err))
	}
	return lines, nil
}
