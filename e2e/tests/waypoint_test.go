//go:build e2e

package tests

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"ambit.dev/e2e/framework"
)

var gatewayGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}

// waypointRequests returns the requests the waypoint pods of Gateway gw in
// ns counted for destination service host (istio_requests_total,
// reporter=waypoint), summed over its pods.
func waypointRequests(t *testing.T, f *framework.Framework, ns, gw, host string) float64 {
	t.Helper()
	n, _ := waypointSamples(t, f, ns, gw, host)
	return n
}

// waypointSamples is waypointRequests, also returning the source principals
// the waypoint saw.
func waypointSamples(t *testing.T, f *framework.Framework, ns, gw, host string) (float64, map[string]bool) {
	t.Helper()
	principals := map[string]bool{}
	n := 0.0
	eachWaypointSample(t, f, ns, gw, "istio_requests_total", func(l map[string]string, v float64) {
		if l["reporter"] == "waypoint" && strings.HasPrefix(l["destination_service"], host) {
			n += v
			principals[l["source_principal"]] = true
		}
	})
	return n, principals
}

// eachWaypointSample calls fn with the labels and value of every sample of
// metric name on each ready waypoint pod of Gateway gw in ns.
func eachWaypointSample(t *testing.T, f *framework.Framework, ns, gw, name string, fn func(labels map[string]string, v float64)) {
	t.Helper()
	pods, err := f.Client.CoreV1().Pods(ns).List(f.Ctx(), metav1.ListOptions{LabelSelector: "gateway.networking.k8s.io/gateway-name=" + gw})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if !podReady(&p) {
			continue
		}
		raw, err := f.Client.CoreV1().RESTClient().Get().AbsPath(fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:15020/proxy/metrics", ns, p.Name)).DoRaw(f.Ctx())
		if err != nil {
			t.Fatalf("waypoint %s metrics: %v", p.Name, err)
		}
		m, err := framework.ParseMetrics(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		for _, smp := range m[name] {
			l := make(map[string]string, len(smp.Metric))
			for k, v := range smp.Metric {
				l[string(k)] = string(v)
			}
			fn(l, float64(smp.Value))
		}
	}
}

// useWaypoint labels the Services svcs of ns ambit.dev/use-waypoint=gw.
func useWaypoint(t *testing.T, f *framework.Framework, ns, gw string, svcs ...string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"ambit.dev/use-waypoint":%q}}}`, gw)
	for _, svc := range svcs {
		if _, err := f.Client.CoreV1().Services(ns).Patch(f.Ctx(), svc, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("label service %s/%s to use waypoint %s: %v", ns, svc, gw, err)
		}
	}
}

// createWaypoint creates the waypoint Gateway name in ns and waits until it
// is Programmed.
func createWaypoint(t *testing.T, f *framework.Framework, dyn dynamic.Interface, ns, name string) {
	t.Helper()
	gw := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"gatewayClassName": "ambit-waypoint",
			"listeners":        []any{map[string]any{"name": "mesh", "port": int64(15008), "protocol": "HBONE"}},
		},
	}}
	if _, err := dyn.Resource(gatewayGVR).Namespace(ns).Create(f.Ctx(), gw, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Gateway: %v", err)
	}
	err := f.Eventually(3*time.Minute, func() error {
		u, err := dyn.Resource(gatewayGVR).Namespace(ns).Get(f.Ctx(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Programmed" && m["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("Gateway %s/%s is not Programmed yet: %v", ns, name, conds)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWaypoint deploys a waypoint for a namespace with the Gateway API and
// binds one Service to it with the ambit.dev/use-waypoint label: requests to
// that Service go through the waypoint (its metrics count them, with the
// client's identity), requests to another Service of the namespace do not,
// and removing the label takes the waypoint out of the path.
func TestWaypoint(t *testing.T) {
	f := framework.New(t)
	nodes, dyn := installMesh(t, f)

	ns := f.Namespace("wp", map[string]string{labelMode: "ambient"})
	for _, sa := range []string{"web", "other", "client"} {
		serviceAccount(t, f, ns, sa)
	}
	f.TestApp(ns, "web-1", framework.AppOptions{Node: nodes[0], ServiceAccount: "web", Labels: map[string]string{"app": "web"}})
	f.TestApp(ns, "web-2", framework.AppOptions{Node: nodes[1], ServiceAccount: "web", Labels: map[string]string{"app": "web"}})
	f.TestApp(ns, "other", framework.AppOptions{Node: nodes[0], ServiceAccount: "other", Labels: map[string]string{"app": "other"}})
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	web, other := f.Service(ns, "web"), f.Service(ns, "other")
	f.WaitEndpoints(ns, "web", 2)
	f.WaitEndpoints(ns, "other", 1)
	waitRedirection(t, f, ns, client.Name, "enabled")
	webURL := fmt.Sprintf("http://%s/", web.Spec.ClusterIP)
	otherURL := fmt.Sprintf("http://%s/", other.Spec.ClusterIP)
	get(t, f, ns, client.Name, webURL)

	createWaypoint(t, f, dyn, ns, "waypoint")

	label := func(value *string) {
		t.Helper()
		v := "null"
		if value != nil {
			v = fmt.Sprintf("%q", *value)
		}
		patch := fmt.Sprintf(`{"metadata":{"labels":{"ambit.dev/use-waypoint":%s}}}`, v)
		if _, err := f.Client.CoreV1().Services(ns).Patch(f.Ctx(), "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	webHost := "web." + ns + ".svc"
	otherHost := "other." + ns + ".svc"
	name := "waypoint"
	label(&name)

	t.Run("requests to the labelled Service go through the waypoint", func(t *testing.T) {
		err := f.Eventually(time.Minute, func() error {
			before := waypointRequests(t, f, ns, "waypoint", webHost)
			r := get(t, f, ns, client.Name, webURL)
			if peerIP(t, r.Peer) == "" {
				return fmt.Errorf("no peer")
			}
			if after := waypointRequests(t, f, ns, "waypoint", webHost); after <= before {
				return fmt.Errorf("the waypoint counted no request to %s (%v before, %v after)", webHost, before, after)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Both backends answer through it.
		seen := map[string]bool{}
		for range 10 {
			seen[get(t, f, ns, client.Name, webURL).Name] = true
		}
		if len(seen) != 2 {
			t.Fatalf("answers came from %v, want both web pods", seen)
		}
		// The waypoint saw the client's identity (from the client ztunnel's
		// mTLS certificate), not a ztunnel's or its own.
		clientID := "spiffe://cluster.local/ns/" + ns + "/sa/client"
		if _, principals := waypointSamples(t, f, ns, "waypoint", webHost); !principals[clientID] || len(principals) != 1 {
			t.Fatalf("waypoint source principals %v, want only %s", principals, clientID)
		}
	})

	t.Run("other Services of the namespace do not", func(t *testing.T) {
		before := waypointRequests(t, f, ns, "waypoint", otherHost)
		for range 3 {
			get(t, f, ns, client.Name, otherURL)
		}
		if after := waypointRequests(t, f, ns, "waypoint", otherHost); after != before {
			t.Fatalf("the waypoint counted %v requests to %s, which is not bound to it", after-before, otherHost)
		}
	})

	t.Run("a client that dials a pod IP still goes through the waypoint", func(t *testing.T) {
		pod, err := f.Client.CoreV1().Pods(ns).Get(f.Ctx(), "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		podURL := fmt.Sprintf("http://%s/", net.JoinHostPort(pod.Status.PodIP, fmt.Sprint(framework.HTTPPort)))
		before := waypointRequests(t, f, ns, "waypoint", webHost)
		names, failed := getMany(t, f, ns, client.Name, podURL, 10)
		if failed > 0 {
			t.Fatalf("GET %s: %d of 10 failed (%v)", podURL, failed, names)
		}
		if after := waypointRequests(t, f, ns, "waypoint", webHost); after-before < 10 {
			t.Fatalf("the waypoint counted %v of 10 requests dialled to pod IP %s, want all (no bypass)", after-before, pod.Status.PodIP)
		}
	})

	t.Run("a client outside the mesh cannot get around the waypoint", func(t *testing.T) {
		outside := f.Namespace("wp-outside", nil)
		out := f.TestApp(outside, "client", framework.AppOptions{Node: nodes[0], Args: []string{"sleep"}})
		pod, err := f.Client.CoreV1().Pods(ns).Get(f.Ctx(), "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		podURL := fmt.Sprintf("http://%s/", net.JoinHostPort(pod.Status.PodIP, fmt.Sprint(framework.HTTPPort)))
		for _, u := range []string{webURL, podURL} {
			if names, failed := getMany(t, f, outside, out.Name, u, 3); failed != 3 {
				t.Fatalf("plaintext GET %s from outside the mesh: %d of 3 failed (answers %v), want all refused by the destination ztunnel", u, failed, names)
			}
		}
		// The port no waypoint guards stays open to it.
		if names, failed := getMany(t, f, outside, out.Name, otherURL, 3); failed != 0 {
			t.Fatalf("plaintext GET %s (no waypoint) from outside the mesh: %d of 3 failed (%v)", otherURL, failed, names)
		}
	})

	t.Run("removing the label takes the waypoint out of the path", func(t *testing.T) {
		label(nil)
		err := f.Eventually(time.Minute, func() error {
			before := waypointRequests(t, f, ns, "waypoint", webHost)
			get(t, f, ns, client.Name, webURL)
			if after := waypointRequests(t, f, ns, "waypoint", webHost); after != before {
				return fmt.Errorf("the waypoint still counts requests to %s", webHost)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	if err := dyn.Resource(gatewayGVR).Namespace(ns).Delete(f.Ctx(), "waypoint", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := f.Eventually(2*time.Minute, func() error {
		pods, err := f.Client.CoreV1().Pods(ns).List(f.Ctx(), metav1.ListOptions{LabelSelector: "gateway.networking.k8s.io/gateway-name=waypoint"})
		if err != nil {
			return err
		}
		live := 0
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				live++
			}
		}
		if live > 0 {
			return fmt.Errorf("%d waypoint pods left after the Gateway was deleted", live)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
