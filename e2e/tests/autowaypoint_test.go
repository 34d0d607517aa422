//go:build e2e

package tests

import (
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"ambit.dev/e2e/framework"
)

// The names the control plane's waypoint auto-provisioning uses
// (controlplane/internal/autowaypoint).
const (
	autoGateway    = "ambit-auto-waypoint"
	autoLabel      = "ambit.dev/auto-provisioned"
	autoAnnotation = "ambit.dev/auto-waypoint"
	nsAutoOptOut   = "ambit.dev/auto-waypoint"
)

// installMesh installs Ambit and waits for its control plane and node
// daemons; it returns the two Ready nodes and a dynamic client.
func installMesh(t *testing.T, f *framework.Framework) ([]string, dynamic.Interface) {
	t.Helper()
	nodes := f.ReadyNodes(2)
	install(t, f)
	waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
	daemonPods(t, f, "ztunnel", nodes)
	daemonPods(t, f, "ambit-node-agent", nodes)
	dyn, err := dynamic.NewForConfig(f.Config)
	if err != nil {
		t.Fatal(err)
	}
	return nodes, dyn
}

// serviceWaypointLabel returns the Service's ambit.dev/use-waypoint label
// and ambit.dev/auto-waypoint annotation.
func serviceWaypointLabel(t *testing.T, f *framework.Framework, ns, name string) (label, annotation string) {
	t.Helper()
	s, err := f.Client.CoreV1().Services(ns).Get(f.Ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Labels["ambit.dev/use-waypoint"], s.Annotations[autoAnnotation]
}

// TestAutoWaypoint applies an HTTPRoute to a Service that has no waypoint:
// the control plane creates a waypoint for the namespace, binds the
// Service and the route takes effect within seconds; deleting the route
// removes the label and the waypoint. A user's own binding (here "none")
// and a namespace that opts out are left alone.
func TestAutoWaypoint(t *testing.T) {
	f := framework.New(t)
	nodes, dyn := installMesh(t, f)

	ns := f.Namespace("auto", map[string]string{labelMode: "ambient"})
	for _, sa := range []string{"web", "client"} {
		serviceAccount(t, f, ns, sa)
	}
	f.TestApp(ns, "web-v1", framework.AppOptions{Node: nodes[0], ServiceAccount: "web", Labels: map[string]string{"app": "web", "version": "v1"}})
	f.TestApp(ns, "web-v2", framework.AppOptions{Node: nodes[1], ServiceAccount: "web", Labels: map[string]string{"app": "web", "version": "v2"}})
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	web := selectorService(t, f, ns, "web", map[string]string{"app": "web"})
	selectorService(t, f, ns, "web-v2", map[string]string{"app": "web", "version": "v2"})
	// A user's label on a Service (here the opt-out) wins over
	// auto-provisioning.
	other := selectorService(t, f, ns, "other", map[string]string{"app": "web"})
	patch := `{"metadata":{"labels":{"ambit.dev/use-waypoint":"none","team":"shop"}}}`
	if _, err := f.Client.CoreV1().Services(ns).Patch(f.Ctx(), other.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitEndpoints(ns, "web", 2)
	f.WaitEndpoints(ns, "web-v2", 1)
	waitRedirection(t, f, ns, client.Name, "enabled")
	webURL := fmt.Sprintf("http://%s/", web.Spec.ClusterIP)

	// Before any route: both versions answer, without a waypoint.
	names, failed := getMany(t, f, ns, client.Name, webURL, 40)
	if failed > 0 || names["web-v1"] == 0 || names["web-v2"] == 0 {
		t.Fatalf("before any route: answers %v, %d failed; want both versions", names, failed)
	}

	route := fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-to-v2, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web-v2, port: 80}]
`, ns)
	start := time.Now()
	applyYAML(t, f, dyn, httpRouteGVR, ns, route)

	t.Run("the first HTTPRoute provisions a waypoint that routes within seconds", func(t *testing.T) {
		err := f.Eventually(3*time.Minute, func() error {
			names, failed := getMany(t, f, ns, client.Name, webURL, 20)
			if failed > 0 || names["web-v2"] != 20 {
				return fmt.Errorf("answers %v, %d failed; want 20 from web-v2 (the route)", names, failed)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("route applied -> waypoint created, Programmed, Service bound and routing: %v", time.Since(start).Round(100*time.Millisecond))
		gw, err := dyn.Resource(gatewayGVR).Namespace(ns).Get(f.Ctx(), autoGateway, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the auto-provisioned Gateway: %v", err)
		}
		if gw.GetLabels()[autoLabel] != "true" {
			t.Fatalf("Gateway %s/%s labels %v, want %s=true", ns, autoGateway, gw.GetLabels(), autoLabel)
		}
		if l, a := serviceWaypointLabel(t, f, ns, "web"); l != autoGateway || a != autoGateway {
			t.Fatalf("Service web: use-waypoint=%q auto-waypoint=%q, want both %q", l, a, autoGateway)
		}
		// The waypoint counts a request once its handler returns, which
		// can be just after the client has read the whole answer.
		err = f.Eventually(10*time.Second, func() error {
			if n := waypointRequests(t, f, ns, autoGateway, "web-v2."+ns+".svc"); n < 20 {
				return fmt.Errorf("the auto-provisioned waypoint counted %v requests to web-v2, want at least 20", n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		waitRouteCondition(t, f, dyn, ns, "web-to-v2", "Accepted", "True", "Accepted")
	})

	t.Run("a Service with its own label keeps it", func(t *testing.T) {
		applyYAML(t, f, dyn, httpRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: other}]
  rules: [{backendRefs: [{name: web-v2, port: 80}]}]
`, ns))
		waitRouteCondition(t, f, dyn, ns, "other", "Accepted", "False", "WaypointRequired")
		if l, a := serviceWaypointLabel(t, f, ns, "other"); l != "none" || a != "" {
			t.Fatalf("Service other: use-waypoint=%q auto-waypoint=%q, want the user's none and no annotation", l, a)
		}
		if err := dyn.Resource(httpRouteGVR).Namespace(ns).Delete(f.Ctx(), "other", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("deleting the route removes the label and the waypoint", func(t *testing.T) {
		if err := dyn.Resource(httpRouteGVR).Namespace(ns).Delete(f.Ctx(), "web-to-v2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := f.Eventually(2*time.Minute, func() error {
			if l, a := serviceWaypointLabel(t, f, ns, "web"); l != "" || a != "" {
				return fmt.Errorf("Service web still has use-waypoint=%q auto-waypoint=%q", l, a)
			}
			if _, err := dyn.Resource(gatewayGVR).Namespace(ns).Get(f.Ctx(), autoGateway, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("Gateway %s/%s still there (err %v)", ns, autoGateway, err)
			}
			if _, err := f.Client.AppsV1().Deployments(ns).Get(f.Ctx(), autoGateway, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("waypoint Deployment %s/%s still there (err %v)", ns, autoGateway, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The user's labels elsewhere are untouched.
		s, err := f.Client.CoreV1().Services(ns).Get(f.Ctx(), "other", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.Labels["ambit.dev/use-waypoint"] != "none" || s.Labels["team"] != "shop" {
			t.Fatalf("Service other labels %v, want the user's use-waypoint=none and team=shop", s.Labels)
		}
		// Traffic is back to both versions, without a waypoint.
		err = f.Eventually(time.Minute, func() error {
			names, failed := getMany(t, f, ns, client.Name, webURL, 40)
			if failed > 0 || names["web-v1"] == 0 || names["web-v2"] == 0 {
				return fmt.Errorf("answers %v, %d failed; want both versions", names, failed)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a namespace that opts out gets no waypoint", func(t *testing.T) {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"disabled"}}}`, nsAutoOptOut)
		if _, err := f.Client.CoreV1().Namespaces().Patch(f.Ctx(), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		applyYAML(t, f, dyn, httpRouteGVR, ns, route)
		waitRouteCondition(t, f, dyn, ns, "web-to-v2", "Accepted", "False", "WaypointRequired")
		// Give the controller time to (wrongly) act, then check it did not.
		time.Sleep(5 * time.Second)
		if _, err := dyn.Resource(gatewayGVR).Namespace(ns).Get(f.Ctx(), autoGateway, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("opted-out namespace: Gateway %s/%s exists (err %v)", ns, autoGateway, err)
		}
		if l, _ := serviceWaypointLabel(t, f, ns, "web"); l != "" {
			t.Fatalf("opted-out namespace: Service web labelled use-waypoint=%q", l)
		}
	})
}
