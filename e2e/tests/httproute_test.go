//go:build e2e

package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"ambit.dev/e2e/framework"
)

var (
	httpRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	crdGVR       = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	// The HTTPRoute CRD of the Gateway API experimental channel, as the
	// chart ships it (gatewayAPI.channel=experimental): it keeps
	// rules[].retry.
	experimentalHTTPRouteCRD = "../../deploy/charts/ambit/files/gateway-api-experimental/gateway.networking.k8s.io_httproutes.yaml"
)

// selectorService creates a ClusterIP Service name selecting sel on the
// test app's HTTP port (80 -> 8080).
func selectorService(t *testing.T, f *framework.Framework, ns, name string, sel map[string]string) *corev1.Service {
	t.Helper()
	svc, err := f.Client.CoreV1().Services(ns).Create(f.Ctx(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(framework.HTTPPort)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
	return svc
}

// applyYAML server-side applies one object written in YAML.
func applyYAML(t *testing.T, f *framework.Framework, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, doc string) *unstructured.Unstructured {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	u := &unstructured.Unstructured{Object: obj}
	body, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	force := true
	var ri dynamic.ResourceInterface = dyn.Resource(gvr)
	if ns != "" {
		ri = dyn.Resource(gvr).Namespace(ns)
	}
	out, err := ri.Patch(f.Ctx(), u.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: fieldManager, Force: &force})
	if err != nil {
		t.Fatalf("apply %s %s/%s: %v", u.GetKind(), ns, u.GetName(), err)
	}
	return out
}

// routeCondition returns the condition typ of the parent status Ambit
// wrote on HTTPRoute name (nil when there is none yet).
func routeCondition(t *testing.T, f *framework.Framework, dyn dynamic.Interface, ns, name, typ string) map[string]any {
	t.Helper()
	return routeConditionOf(t, f, dyn, httpRouteGVR, ns, name, typ)
}

// routeConditionOf is routeCondition for a route of resource gvr
// (httproutes, grpcroutes).
func routeConditionOf(t *testing.T, f *framework.Framework, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, name, typ string) map[string]any {
	t.Helper()
	u, err := dyn.Resource(gvr).Namespace(ns).Get(f.Ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cs := ambitConditions(u, "parents", typ); len(cs) > 0 {
		return cs[0]
	}
	return nil
}

// ambitConditions returns the conditions of type typ, for u's current
// generation, of the entries of status.<list> (a route's parents, a
// policy's ancestors) that Ambit's waypoint controller wrote.
func ambitConditions(u *unstructured.Unstructured, list, typ string) []map[string]any {
	entries, _, _ := unstructured.NestedSlice(u.Object, "status", list)
	var out []map[string]any
	for _, e := range entries {
		em, _ := e.(map[string]any)
		if em["controllerName"] != "ambit.dev/waypoint-controller" {
			continue
		}
		conds, _ := em["conditions"].([]any)
		for _, c := range conds {
			if cm, _ := c.(map[string]any); cm["type"] == typ && cm["observedGeneration"] == u.GetGeneration() {
				out = append(out, cm)
			}
		}
	}
	return out
}

func waitRouteCondition(t *testing.T, f *framework.Framework, dyn dynamic.Interface, ns, name, typ, status, reason string) map[string]any {
	t.Helper()
	return waitRouteConditionOf(t, f, dyn, httpRouteGVR, ns, name, typ, status, reason)
}

// waitRouteConditionOf is waitRouteCondition for a route of resource gvr.
func waitRouteConditionOf(t *testing.T, f *framework.Framework, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, name, typ, status, reason string) map[string]any {
	t.Helper()
	var got map[string]any
	err := f.Eventually(time.Minute, func() error {
		got = routeConditionOf(t, f, dyn, gvr, ns, name, typ)
		if got == nil || got["status"] != status || got["reason"] != reason {
			return fmt.Errorf("%s %s/%s condition %s is %v, want %s/%s", gvr.Resource, ns, name, typ, got, status, reason)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// getMany sends n requests from the client pod (one connection each) and
// returns how many answers each server name gave, and how many failed.
func getMany(t *testing.T, f *framework.Framework, ns, client, url string, n int, headers ...string) (names map[string]int, failed int) {
	t.Helper()
	args := []string{"ambit-testapp", "get", "--timeout", "10s", "--count", fmt.Sprint(n)}
	for _, h := range headers {
		args = append(args, "--header", h)
	}
	out, stderr, err := f.Exec(ns, client, "app", append(args, url)...)
	names = map[string]int{}
	ok := -1
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r echoReply
		if json.Unmarshal([]byte(line), &r) == nil && r.Name != "" {
			names[r.Name]++
			continue
		}
		var o, fl int
		if _, err := fmt.Sscanf(line, "%d ok, %d failed", &o, &fl); err == nil {
			ok, failed = o, fl
		}
	}
	if ok < 0 {
		t.Fatalf("GET %s x%d: no summary line (exec error %v); stderr: %s", url, n, err, excerptLines(stderr, 5))
	}
	return names, failed
}

// waypointMetric sums the counter name over the ready waypoint pods of
// Gateway gw, for the samples whose cluster label contains host.
func waypointMetric(t *testing.T, f *framework.Framework, ns, gw, name, host string) float64 {
	t.Helper()
	n := 0.0
	eachWaypointSample(t, f, ns, gw, name, func(l map[string]string, v float64) {
		if strings.Contains(l["cluster"], host) {
			n += v
		}
	})
	return n
}

func excerptLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("... (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}

// installExperimentalHTTPRoute applies the HTTPRoute CRD of the Gateway
// API experimental channel, as gatewayAPI.channel=experimental does
// (rules[].retry is an experimental field), and waits until it is
// Established. install's cleanup deletes the CRD it applied, this one
// included.
func installExperimentalHTTPRoute(t *testing.T, f *framework.Framework, dyn dynamic.Interface) {
	t.Helper()
	raw, err := os.ReadFile(experimentalHTTPRouteCRD)
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, f, dyn, crdGVR, "", string(raw))
	err = f.Eventually(time.Minute, func() error {
		u, err := dyn.Resource(crdGVR).Get(f.Ctx(), "httproutes.gateway.networking.k8s.io", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if u.GetAnnotations()["gateway.networking.k8s.io/channel"] != "experimental" {
			return fmt.Errorf("the HTTPRoute CRD is not the experimental one yet")
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("the HTTPRoute CRD is not Established")
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHTTPRoute programs a waypoint with Gateway API HTTPRoutes attached
// to Services (GAMMA): a 90/10 canary split and a header match, retries
// that turn a backend failing 30% of requests with 503 into success, and
// an invalid route that gets a status condition without disturbing the
// running routes.
func TestHTTPRoute(t *testing.T) {
	f := framework.New(t)
	nodes, dyn := installMesh(t, f)
	installExperimentalHTTPRoute(t, f, dyn)

	ns := f.Namespace("route", map[string]string{labelMode: "ambient"})
	for _, sa := range []string{"reviews", "client"} {
		serviceAccount(t, f, ns, sa)
	}
	f.TestApp(ns, "reviews-v1", framework.AppOptions{Node: nodes[0], ServiceAccount: "reviews", Labels: map[string]string{"app": "reviews", "version": "v1"}})
	f.TestApp(ns, "reviews-v2", framework.AppOptions{Node: nodes[1], ServiceAccount: "reviews", Labels: map[string]string{"app": "reviews", "version": "v2"}})
	f.TestApp(ns, "flaky", framework.AppOptions{Node: nodes[0], ServiceAccount: "reviews", Args: []string{
		"serve", "--http", fmt.Sprintf(":%d", framework.HTTPPort), "--tcp", "", "--name", "flaky", "--fail-rate", "0.3"}})
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	reviews := selectorService(t, f, ns, "reviews", map[string]string{"app": "reviews"})
	selectorService(t, f, ns, "reviews-v1", map[string]string{"app": "reviews", "version": "v1"})
	selectorService(t, f, ns, "reviews-v2", map[string]string{"app": "reviews", "version": "v2"})
	flaky := selectorService(t, f, ns, "flaky", map[string]string{"app": "flaky"})
	f.WaitEndpoints(ns, "reviews", 2)
	f.WaitEndpoints(ns, "reviews-v1", 1)
	f.WaitEndpoints(ns, "reviews-v2", 1)
	f.WaitEndpoints(ns, "flaky", 1)
	waitRedirection(t, f, ns, client.Name, "enabled")
	reviewsURL := fmt.Sprintf("http://%s/", reviews.Spec.ClusterIP)
	flakyURL := fmt.Sprintf("http://%s/", flaky.Spec.ClusterIP)

	createWaypoint(t, f, dyn, ns, "waypoint")
	useWaypoint(t, f, ns, "waypoint", "reviews", "flaky")

	applyYAML(t, f, dyn, httpRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 80}]
  rules:
  - matches: [{headers: [{name: user-agent, type: RegularExpression, value: ".*Mobile.*"}]}]
    backendRefs: [{name: reviews-v2, port: 80}]
  - backendRefs: [{name: reviews-v1, port: 80, weight: 90}, {name: reviews-v2, port: 80, weight: 10}]
`, ns))
	waitRouteCondition(t, f, dyn, ns, "reviews", "Accepted", "True", "Accepted")
	waitRouteCondition(t, f, dyn, ns, "reviews", "ResolvedRefs", "True", "ResolvedRefs")
	mobile := "User-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148"

	t.Run("a header match sends mobile clients to v2 only", func(t *testing.T) {
		// The route reaches the waypoint within seconds of its status.
		err := f.Eventually(time.Minute, func() error {
			names, failed := getMany(t, f, ns, client.Name, reviewsURL, 20, mobile)
			if failed > 0 || names["reviews-v2"] != 20 {
				return fmt.Errorf("mobile answers %v, %d failed; want 20 from reviews-v2", names, failed)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a 90/10 split over 1000 requests is within 4 percent", func(t *testing.T) {
		names, failed := getMany(t, f, ns, client.Name, reviewsURL, 1000)
		t.Logf("1000 requests: %v, %d failed", names, failed)
		if failed > 0 {
			t.Fatalf("%d of 1000 requests failed", failed)
		}
		if v1, v2 := names["reviews-v1"], names["reviews-v2"]; v1+v2 != 1000 || v2 < 60 || v2 > 140 {
			t.Fatalf("split v1=%d v2=%d, want v2 within 10%% ± 4%% (60 to 140 of 1000)", v1, v2)
		}
		// The waypoint labels requests with the backend service chosen.
		n := waypointRequests(t, f, ns, "waypoint", "reviews-v1."+ns+".svc") + waypointRequests(t, f, ns, "waypoint", "reviews-v2."+ns+".svc")
		if n < 1000 {
			t.Fatalf("the waypoint counted %v requests to reviews-v1 and -v2, want at least 1000", n)
		}
	})

	t.Run("retries turn a backend failing 30% into at least 99% success", func(t *testing.T) {
		applyYAML(t, f, dyn, httpRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: flaky}]
  rules:
  - retry: {attempts: 4, codes: [503], backoff: 10ms}
    backendRefs: [{name: flaky, port: 80}]
`, ns))
		waitRouteCondition(t, f, dyn, ns, "flaky", "Accepted", "True", "Accepted")
		u, err := dyn.Resource(httpRouteGVR).Namespace(ns).Get(f.Ctx(), "flaky", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "rules"); !found {
			t.Fatal("the flaky route has no rules")
		}
		rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
		if r, _ := rules[0].(map[string]any); r["retry"] == nil {
			t.Fatal("the API server dropped rules[].retry: the experimental HTTPRoute CRD is not in place")
		}
		var names map[string]int
		var failed int
		err = f.Eventually(time.Minute, func() error {
			names, failed = getMany(t, f, ns, client.Name, flakyURL, 1000)
			if failed > 10 {
				return fmt.Errorf("%d of 1000 requests failed, want at most 10", failed)
			}
			return nil
		})
		t.Logf("1000 requests to a backend failing 30%%: %v, %d failed", names, failed)
		if err != nil {
			t.Fatal(err)
		}
		// The successes came from retries (about 430 expected), not luck.
		if r := waypointMetric(t, f, ns, "waypoint", "ambit_waypoint_upstream_retries_total", "flaky."+ns+".svc"); r < 200 {
			t.Fatalf("the waypoint counted %v retries to flaky, want at least 200", r)
		}
	})

	t.Run("an invalid route gets a status and leaves the running routes alone", func(t *testing.T) {
		applyYAML(t, f, dyn, httpRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: reviews-v1, port: 80}}}]
    backendRefs: [{name: reviews-v1, port: 80}]
`, ns))
		c := waitRouteCondition(t, f, dyn, ns, "mirror", "Accepted", "False", "UnsupportedValue")
		if msg, _ := c["message"].(string); !strings.Contains(msg, "RequestMirror") {
			t.Fatalf("message %q does not name RequestMirror", msg)
		}
		names, failed := getMany(t, f, ns, client.Name, reviewsURL, 20, mobile)
		if failed > 0 || names["reviews-v2"] != 20 {
			t.Fatalf("mobile answers %v, %d failed; want the header route still in force", names, failed)
		}
	})

	t.Run("deleting the routes restores the default route", func(t *testing.T) {
		for _, name := range []string{"reviews", "mirror", "flaky"} {
			if err := dyn.Resource(httpRouteGVR).Namespace(ns).Delete(f.Ctx(), name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		err := f.Eventually(time.Minute, func() error {
			names, failed := getMany(t, f, ns, client.Name, reviewsURL, 20, mobile)
			if failed > 0 || names["reviews-v1"] == 0 || names["reviews-v2"] == 0 {
				return fmt.Errorf("mobile answers %v, %d failed; want both versions again", names, failed)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
