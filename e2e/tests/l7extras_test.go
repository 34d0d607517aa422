//go:build e2e

package tests

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"ambit.dev/e2e/framework"
)

var httpFaultGVR = schema.GroupVersionResource{Group: "networking.ambit.dev", Version: "v1alpha1", Resource: "httpfaults"}

var (
	traceparentRE = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$`)
	requestIDRE   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

// tryApply server-side applies one object written in YAML and returns the
// API server's error (for objects validation must refuse).
func tryApply(t *testing.T, f *framework.Framework, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns, doc string) error {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	body, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	force := true
	_, err = dyn.Resource(gvr).Namespace(ns).Patch(f.Ctx(), (&unstructured.Unstructured{Object: obj}).GetName(), types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: fieldManager, Force: &force})
	return err
}

// backendHeaders sends one request from the client pod and returns the
// request headers the backend saw.
func backendHeaders(t *testing.T, f *framework.Framework, ns, client, url string, headers ...string) map[string]string {
	t.Helper()
	args := []string{"ambit-testapp", "get", "--timeout", "10s"}
	for _, h := range headers {
		args = append(args, "--header", h)
	}
	out, stderr, err := f.Exec(ns, client, "app", append(args, url)...)
	if err != nil {
		t.Fatalf("GET %s: %v; stderr: %s", url, err, excerptLines(stderr, 5))
	}
	var r struct {
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil || r.Headers == nil {
		t.Fatalf("GET %s: not an echo: %q", url, out)
	}
	return r.Headers
}

// TestL7Extras exercises fault injection (HTTPFault ExtensionRef filters,
// XDS.md §15) and trace context headers (XDS.md §16) on a waypoint: a 50%
// abort over 1000 requests, a 200 ms delay, a missing HTTPFault answering
// 500 with ResolvedRefs=False until it is created, the CRD's validation
// messages, and the traceparent, B3 and x-request-id headers the backend
// receives.
func TestL7Extras(t *testing.T) {
	f := framework.New(t)
	nodes, dyn := installMesh(t, f)
	ns := f.Namespace("l7x", map[string]string{labelMode: "ambient"})
	for _, sa := range []string{"web", "client"} {
		serviceAccount(t, f, ns, sa)
	}
	f.TestApp(ns, "web", framework.AppOptions{Node: nodes[0], ServiceAccount: "web", Labels: map[string]string{"app": "web"}})
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	web := selectorService(t, f, ns, "web", map[string]string{"app": "web"})
	f.WaitEndpoints(ns, "web", 1)
	waitRedirection(t, f, ns, client.Name, "enabled")
	base := fmt.Sprintf("http://%s", web.Spec.ClusterIP)

	createWaypoint(t, f, dyn, ns, "waypoint")
	patch := `{"metadata":{"labels":{"ambit.dev/use-waypoint":"waypoint"}}}`
	if _, err := f.Client.CoreV1().Services(ns).Patch(f.Ctx(), "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("the CRD refuses invalid faults with readable messages", func(t *testing.T) {
		for _, tc := range []struct{ spec, want string }{
			{"{}", "an HTTPFault needs delay, abort or both"},
			{"{abort: {httpStatus: 503, grpcStatus: 14}}", "abort needs exactly one of httpStatus"},
			{"{abort: {httpStatus: 99}}", "abort.httpStatus must be an HTTP status between 200 and 599"},
			{"{abort: {httpStatus: 503, percentage: 150}}", "abort.percentage must be between 0 and 100"},
			{"{delay: {fixedDelay: soon}}", "delay.fixedDelay must be a duration"},
			{"{delay: {fixedDelay: 0s}}", "delay.fixedDelay must be more than 0s"},
		} {
			err := tryApply(t, f, dyn, httpFaultGVR, ns, fmt.Sprintf("{apiVersion: networking.ambit.dev/v1alpha1, kind: HTTPFault, metadata: {name: bad, namespace: %s}, spec: %s}", ns, tc.spec))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("spec %s: error %v, want one saying %q", tc.spec, err, tc.want)
			}
		}
	})

	applyYAML(t, f, dyn, httpFaultGVR, ns, fmt.Sprintf(`
apiVersion: networking.ambit.dev/v1alpha1
kind: HTTPFault
metadata: {name: half-abort, namespace: %s}
spec:
  abort: {httpStatus: 503, percentage: 50}
`, ns))
	applyYAML(t, f, dyn, httpFaultGVR, ns, fmt.Sprintf(`
apiVersion: networking.ambit.dev/v1alpha1
kind: HTTPFault
metadata: {name: slow, namespace: %s}
spec:
  delay: {fixedDelay: 200ms, percentage: 100}
`, ns))
	applyYAML(t, f, dyn, httpRouteGVR, ns, faultRoute(ns, "faults", "/abort", "half-abort", "/slow", "slow")+"  - backendRefs: [{name: web, port: 80}]\n")
	waitRouteCondition(t, f, dyn, ns, "faults", "Accepted", "True", "Accepted")
	waitRouteCondition(t, f, dyn, ns, "faults", "ResolvedRefs", "True", "ResolvedRefs")
	// The route reaches the waypoint within seconds of its status: wait
	// until /slow is delayed.
	err := f.Eventually(time.Minute, func() error {
		start := time.Now()
		if _, failed := getMany(t, f, ns, client.Name, base+"/slow", 1); failed > 0 {
			return fmt.Errorf("GET /slow failed")
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			return fmt.Errorf("GET /slow took %s, not delayed yet", d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a 50 percent abort aborts 50 ± 5 percent of 1000 requests", func(t *testing.T) {
		before := faultsInjected(t, f, ns, "abort")
		names, failed := getMany(t, f, ns, client.Name, base+"/abort", 1000)
		t.Logf("1000 requests: %v answered, %d aborted", names, failed)
		if names["web"]+failed != 1000 || failed < 450 || failed > 550 {
			t.Fatalf("%d of 1000 aborted (%v answered), want 450 to 550", failed, names)
		}
		if got := faultsInjected(t, f, ns, "abort") - before; int(got) != failed {
			t.Fatalf("the waypoint counted %v injected aborts, the client saw %d failures", got, failed)
		}
	})

	t.Run("a fixed delay of 200 ms at 100 percent adds at least 200 ms", func(t *testing.T) {
		const n = 10
		timed := func(path string) time.Duration {
			start := time.Now()
			if _, failed := getMany(t, f, ns, client.Name, base+path, n); failed > 0 {
				t.Fatalf("%d of %d requests to %s failed", failed, n, path)
			}
			return time.Since(start)
		}
		before := faultsInjected(t, f, ns, "delay")
		plain, slow := timed("/"), timed("/slow")
		t.Logf("%d requests: %s without, %s with the delay", n, plain, slow)
		if slow < n*200*time.Millisecond || slow-plain < n*190*time.Millisecond {
			t.Fatalf("%d delayed requests took %s (undelayed %s), want at least %s more", n, slow, plain, n*200*time.Millisecond)
		}
		if got := faultsInjected(t, f, ns, "delay") - before; got != n {
			t.Fatalf("the waypoint counted %v injected delays, want %d", got, n)
		}
	})

	t.Run("a missing HTTPFault answers 500 and sets ResolvedRefs False until it exists", func(t *testing.T) {
		applyYAML(t, f, dyn, httpRouteGVR, ns, faultRoute(ns, "missing", "/missing", "later"))
		c := waitRouteCondition(t, f, dyn, ns, "missing", "ResolvedRefs", "False", "FilterNotFound")
		if msg, _ := c["message"].(string); !strings.Contains(msg, "HTTPFault "+ns+"/later does not exist") {
			t.Fatalf("ResolvedRefs message %q does not name the HTTPFault", msg)
		}
		waitRouteCondition(t, f, dyn, ns, "missing", "Accepted", "True", "Accepted")
		if err := f.Eventually(time.Minute, func() error { return expectStatus(t, f, ns, client.Name, base+"/missing", 500) }); err != nil {
			t.Fatal(err)
		}
		// Other routes of the Service keep working.
		if names, failed := getMany(t, f, ns, client.Name, base+"/", 20); failed > 0 || names["web"] != 20 {
			t.Fatalf("GET / while a rule's HTTPFault is missing: %v, %d failed", names, failed)
		}
		// The HTTPFault appearing re-resolves the route.
		applyYAML(t, f, dyn, httpFaultGVR, ns, fmt.Sprintf(`
apiVersion: networking.ambit.dev/v1alpha1
kind: HTTPFault
metadata: {name: later, namespace: %s}
spec:
  abort: {httpStatus: 418, percentage: 100}
`, ns))
		waitRouteCondition(t, f, dyn, ns, "missing", "ResolvedRefs", "True", "ResolvedRefs")
		if err := f.Eventually(time.Minute, func() error { return expectStatus(t, f, ns, client.Name, base+"/missing", 418) }); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a request without trace context reaches the backend with new traceparent, B3 and x-request-id", func(t *testing.T) {
		h := backendHeaders(t, f, ns, client.Name, base+"/")
		m := traceparentRE.FindStringSubmatch(h["Traceparent"])
		if m == nil {
			t.Fatalf("backend saw traceparent %q, want a valid one; headers %v", h["Traceparent"], h)
		}
		if h["X-B3-Traceid"] != m[1] || h["X-B3-Spanid"] != m[2] || h["X-B3-Sampled"] == "" || h["X-B3-Parentspanid"] != "" {
			t.Fatalf("B3 headers %v do not match traceparent %s of a new trace", h, h["Traceparent"])
		}
		if !requestIDRE.MatchString(h["X-Request-Id"]) {
			t.Fatalf("x-request-id %q is not a UUID v4", h["X-Request-Id"])
		}
	})

	t.Run("a request with traceparent keeps its trace id with a new parent span id", func(t *testing.T) {
		const trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		h := backendHeaders(t, f, ns, client.Name, base+"/", "traceparent: 00-"+trace+"-"+span+"-01", "tracestate: ambit=e2e", "x-request-id: e2e-1")
		m := traceparentRE.FindStringSubmatch(h["Traceparent"])
		if m == nil || m[1] != trace || m[2] == span {
			t.Fatalf("backend saw traceparent %q, want trace %s with a span id other than %s", h["Traceparent"], trace, span)
		}
		if h["X-B3-Traceid"] != trace || h["X-B3-Spanid"] != m[2] || h["X-B3-Parentspanid"] != span || h["X-B3-Sampled"] != "1" {
			t.Fatalf("B3 headers %v, want trace %s, span %s, parent %s, sampled", h, trace, m[2], span)
		}
		if h["Tracestate"] != "ambit=e2e" || h["X-Request-Id"] != "e2e-1" {
			t.Fatalf("tracestate %q, x-request-id %q: want both kept", h["Tracestate"], h["X-Request-Id"])
		}
		// A malformed traceparent is replaced, never forwarded.
		h = backendHeaders(t, f, ns, client.Name, base+"/", "traceparent: 00-"+strings.ToUpper(trace)+"-"+span+"-01")
		if m := traceparentRE.FindStringSubmatch(h["Traceparent"]); m == nil || strings.EqualFold(m[1], trace) {
			t.Fatalf("backend saw traceparent %q for a malformed one, want a new valid trace", h["Traceparent"])
		}
	})
}

// faultRoute is an HTTPRoute name on Service web whose rules send each
// path prefix (pathFaults: path, HTTPFault name, ...) to web through an
// HTTPFault ExtensionRef filter.
func faultRoute(ns, name string, pathFaults ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: %s, namespace: %s}\n", name, ns)
	b.WriteString("spec:\n  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]\n  rules:\n")
	for i := 0; i+1 < len(pathFaults); i += 2 {
		fmt.Fprintf(&b, "  - matches: [{path: {type: PathPrefix, value: %s}}]\n", pathFaults[i])
		fmt.Fprintf(&b, "    filters: [{type: ExtensionRef, extensionRef: {group: networking.ambit.dev, kind: HTTPFault, name: %s}}]\n", pathFaults[i+1])
		b.WriteString("    backendRefs: [{name: web, port: 80}]\n")
	}
	return b.String()
}

// expectStatus sends one request from the client pod and checks its
// status code.
func expectStatus(t *testing.T, f *framework.Framework, ns, client, url string, code int) error {
	t.Helper()
	_, stderr, err := f.Exec(ns, client, "app", "ambit-testapp", "get", "--timeout", "10s", "--expect-status", fmt.Sprint(code), url)
	if err != nil {
		return fmt.Errorf("GET %s: want status %d: %v %s", url, code, err, excerptLines(stderr, 3))
	}
	return nil
}

// faultsInjected sums ambit_waypoint_faults_injected_total{kind} over the
// waypoint's pods.
func faultsInjected(t *testing.T, f *framework.Framework, ns, kind string) float64 {
	t.Helper()
	n := 0.0
	eachWaypointSample(t, f, ns, "waypoint", "ambit_waypoint_faults_injected_total", func(l map[string]string, v float64) {
		if l["kind"] == kind {
			n += v
		}
	})
	return n
}
