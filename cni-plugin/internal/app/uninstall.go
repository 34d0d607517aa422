package app

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Uninstalling reports whether the agent is stopping because Ambit is being
// uninstalled (its DaemonSet is gone or being deleted) rather than
// restarted, and why. Only then may the agent take ambit-cni off the node:
// during a restart the plugin must stay, or new pods would start without
// it and bypass the mesh.
func Uninstalling(ctx context.Context, client kubernetes.Interface, namespace, name string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ds, err := client.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
	return uninstallDecision(ds, err)
}

// uninstallDecision is Uninstalling's rule, given the DaemonSet lookup.
// Unauthorized and Forbidden count as uninstall: deleting Ambit's
// namespace removes the agent's ServiceAccount and RBAC along with the
// DaemonSet. Any other error (API server unreachable) keeps the plugin:
// a wrongly kept plugin still lets non-mesh pods start when the agent
// is gone, a wrongly removed one lets mesh pods bypass it.
func uninstallDecision(ds *appsv1.DaemonSet, err error) (bool, string) {
	switch {
	case apierrors.IsNotFound(err):
		return true, "DaemonSet deleted"
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return true, fmt.Sprintf("the agent's identity was removed (%v)", err)
	case err != nil:
		return false, fmt.Sprintf("cannot tell whether the DaemonSet still exists (%v); keeping ambit-cni installed", err)
	case ds.DeletionTimestamp != nil:
		return true, "DaemonSet being deleted"
	default:
		return false, "DaemonSet exists: restart, keeping ambit-cni installed"
	}
}
