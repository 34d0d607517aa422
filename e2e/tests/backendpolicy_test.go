//go:build e2e

package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"ambit.dev/e2e/framework"
)

var backendPolicyGVR = schema.GroupVersionResource{Group: "networking.ambit.dev", Version: "v1alpha1", Resource: "backendpolicies"}

// ejectedMetric is the waypoint gauge of the endpoints outlier detection
// has ejected now, per cluster (XDS.md §14).
const ejectedMetric = "ambit_waypoint_outlier_ejected_hosts"

// answers is what a batch of requests got.
type answers struct {
	ok     map[string]int // server name → 200 answers
	failed map[string]int // server name → non-200 answers from the server
	// overloaded counts answers marked x-envoy-overloaded: true (the
	// waypoint's circuit breaker answered, not a server).
	overloaded int
	// total is the number of requests sent.
	total int
}

func (a answers) okCount() int { return sum(a.ok) }

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// failedAnswer matches the line `ambit-testapp get` writes for an answer
// with another status; the testapp's JSON body starts with its name.
var failedAnswer = regexp.MustCompile(`status (\d+), want 200([^;]*(?:; x-envoy-[^;]*)*); body: (?:\{"name":"([^"]*)")?`)

// getAnswers sends n requests to url from the client pod (one connection
// each) and sorts the answers by server and status.
func getAnswers(t *testing.T, f *framework.Framework, ns, client, url string, n int) answers {
	t.Helper()
	a, err := tryAnswers(f, ns, client, url, n)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tryAnswers is getAnswers for any goroutine: it returns what went wrong.
func tryAnswers(f *framework.Framework, ns, client, url string, n int) (answers, error) {
	out, stderr, err := f.Exec(ns, client, "app", "ambit-testapp", "get", "--timeout", "10s", "--count", fmt.Sprint(n), url)
	a := answers{ok: map[string]int{}, failed: map[string]int{}, total: n}
	summary := false
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r echoReply
		if json.Unmarshal([]byte(line), &r) == nil && r.Name != "" {
			a.ok[r.Name]++
			continue
		}
		var o, fl int
		if _, err := fmt.Sscanf(line, "%d ok, %d failed", &o, &fl); err == nil {
			summary = true
		}
	}
	if !summary {
		return a, fmt.Errorf("GET %s x%d: no summary line (exec error %v); stderr: %s", url, n, err, excerptLines(stderr, 5))
	}
	for _, line := range strings.Split(stderr, "\n") {
		// With n > 1 each failed request has a "request i/n failed:" line,
		// and the last one is repeated in the exit error.
		if n > 1 && !strings.HasPrefix(line, "request ") {
			continue
		}
		m := failedAnswer.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if strings.Contains(m[0], "x-envoy-overloaded: true") {
			a.overloaded++
		}
		if m[3] != "" {
			a.failed[m[3]]++
		}
	}
	return a, nil
}

// concurrentAnswers runs clients getAnswers of n requests each at once and
// adds up their answers.
func concurrentAnswers(f *framework.Framework, ns, client, url string, clients, n int) (answers, error) {
	total := answers{ok: map[string]int{}, failed: map[string]int{}}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			a, err := tryAnswers(f, ns, client, url, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			for k, v := range a.ok {
				total.ok[k] += v
			}
			for k, v := range a.failed {
				total.failed[k] += v
			}
			total.overloaded += a.overloaded
			total.total += a.total
		})
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

// backendPolicyAncestors returns the Accepted reason and message of each
// ancestor Ambit wrote on BackendPolicy name for its current generation.
func backendPolicyAncestors(t *testing.T, f *framework.Framework, dyn dynamic.Interface, ns, name string) (reasons, messages []string) {
	t.Helper()
	u, err := dyn.Resource(backendPolicyGVR).Namespace(ns).Get(f.Ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cm := range ambitConditions(u, "ancestors", "Accepted") {
		r, _ := cm["reason"].(string)
		m, _ := cm["message"].(string)
		reasons, messages = append(reasons, r), append(messages, m)
	}
	return reasons, messages
}

// waitBackendPolicy waits until the ancestors of BackendPolicy name have
// the Accepted reasons want, and returns their messages.
func waitBackendPolicy(t *testing.T, f *framework.Framework, dyn dynamic.Interface, ns, name string, want ...string) []string {
	t.Helper()
	var messages []string
	err := f.Eventually(time.Minute, func() error {
		var reasons []string
		reasons, messages = backendPolicyAncestors(t, f, dyn, ns, name)
		if !slices.Equal(reasons, want) {
			return fmt.Errorf("BackendPolicy %s/%s: Accepted reasons %v (%v), want %v", ns, name, reasons, messages, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return messages
}

// TestBackendPolicy programs a waypoint with BackendPolicies: outlier
// detection ejects one of two always-failing backends of four, and never
// more than its 25 % cap, so the other keeps getting traffic while the
// success rate rises; a connection pool of one request answers the excess
// of concurrent requests 503 with x-envoy-overloaded; the API server
// rejects an invalid policy with a readable message, and a second policy
// on the same Service is Conflicted.
func TestBackendPolicy(t *testing.T) {
	f := framework.New(t)
	nodes, dyn := installMesh(t, f)
	// The waypoint retries a 503 twice by default (XDS.md §7.1), which
	// would hide the failing backends: an HTTPRoute turns retries off
	// (rules[].retry is in the experimental channel).
	installExperimentalHTTPRoute(t, f, dyn)

	ns := f.Namespace("backendpolicy", map[string]string{labelMode: "ambient"})
	for _, sa := range []string{"backend", "client"} {
		serviceAccount(t, f, ns, sa)
	}
	for i, name := range []string{"good-1", "good-2", "bad-1", "bad-2"} {
		o := framework.AppOptions{Node: nodes[i%2], ServiceAccount: "backend", Labels: map[string]string{"app": "backend", "health": name[:len(name)-2]}}
		if strings.HasPrefix(name, "bad") {
			// Every request to / is answered 503 (the readiness probe,
			// /healthz, still passes).
			o.Args = []string{"serve", "--http", fmt.Sprintf(":%d", framework.HTTPPort), "--tcp", "", "--name", name, "--fail-rate", "1"}
		}
		f.CreateTestApp(ns, name, o)
	}
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	backend := selectorService(t, f, ns, "backend", map[string]string{"app": "backend"})
	limited := selectorService(t, f, ns, "limited", map[string]string{"app": "backend", "health": "good"})
	solo := selectorService(t, f, ns, "solo", map[string]string{"app": "backend", "health": "good"})
	f.WaitEndpoints(ns, "backend", 4)
	f.WaitEndpoints(ns, "limited", 2)
	f.WaitEndpoints(ns, "solo", 2)
	waitRedirection(t, f, ns, client.Name, "enabled")
	backendURL := fmt.Sprintf("http://%s/", backend.Spec.ClusterIP)
	limitedURL := fmt.Sprintf("http://%s/delay/400", limited.Spec.ClusterIP)

	createWaypoint(t, f, dyn, ns, "waypoint")
	useWaypoint(t, f, ns, "waypoint", "backend", "limited")
	applyYAML(t, f, dyn, httpRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-retries, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: backend}]
  rules:
  - retry: {attempts: 0}
    backendRefs: [{name: backend, port: 80}]
`, ns))
	waitRouteCondition(t, f, dyn, ns, "no-retries", "Accepted", "True", "Accepted")
	host := "backend." + ns + ".svc"
	// Before any policy: round robin over 2 good and 2 bad, about half
	// succeed, through the waypoint.
	var before answers
	err := f.Eventually(time.Minute, func() error {
		before = getAnswers(t, f, ns, client.Name, backendURL, 100)
		if waypointRequests(t, f, ns, "waypoint", host) < 100 {
			return fmt.Errorf("the waypoint has not counted the requests to %s yet", host)
		}
		if before.failed["bad-1"] == 0 || before.failed["bad-2"] == 0 {
			return fmt.Errorf("answers %+v: want both bad backends answering 503", before)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	beforeRate := float64(before.okCount()) / float64(before.total)
	t.Logf("without outlier detection: %d of %d ok (%v), failed %v", before.okCount(), before.total, before.ok, before.failed)

	t.Run("outlier detection ejects one failing backend of four, never more than 25%", func(t *testing.T) {
		applyYAML(t, f, dyn, backendPolicyGVR, ns, fmt.Sprintf(`
apiVersion: networking.ambit.dev/v1alpha1
kind: BackendPolicy
metadata: {name: eject, namespace: %s}
spec:
  targetRefs: [{group: "", kind: Service, name: backend}]
  outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 25}
`, ns))
		waitBackendPolicy(t, f, dyn, ns, "eject", "Accepted")
		var after answers
		var ejected float64
		err := f.Eventually(time.Minute, func() error {
			// Enough requests for a bad backend to fail 3 times in a row.
			getAnswers(t, f, ns, client.Name, backendURL, 40)
			ejected = waypointMetric(t, f, ns, "waypoint", ejectedMetric, host)
			if ejected != 1 {
				return fmt.Errorf("%s for %s is %v, want 1", ejectedMetric, host, ejected)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		after = getAnswers(t, f, ns, client.Name, backendURL, 300)
		afterRate := float64(after.okCount()) / float64(after.total)
		t.Logf("with outlier detection: %d of %d ok (%v), failed %v; ejected %v", after.okCount(), after.total, after.ok, after.failed, ejected)
		// Exactly one bad backend still answers: the other is ejected, and
		// the cap (25% of 4 = 1) keeps the second one in.
		var answering []string
		for _, b := range []string{"bad-1", "bad-2"} {
			if after.failed[b] > 0 {
				answering = append(answering, b)
			}
		}
		if len(answering) != 1 {
			t.Fatalf("failing backends answering %v (%v), want exactly one: one ejected, the other kept by maxEjectionPercent 25", answering, after.failed)
		}
		if after.ok["good-1"] == 0 || after.ok["good-2"] == 0 {
			t.Fatalf("good backends answered %v, want both", after.ok)
		}
		// Round robin over 3 endpoints, 1 bad: about 2/3 succeed (1/2
		// before).
		if afterRate < 0.6 || afterRate < beforeRate+0.1 {
			t.Fatalf("success rate %.2f with outlier detection, %.2f without: want at least 0.6 and 0.1 better", afterRate, beforeRate)
		}
		// Still ejected: the gauge has not moved.
		if ejected = waypointMetric(t, f, ns, "waypoint", ejectedMetric, host); ejected != 1 {
			t.Fatalf("%s for %s is %v after 300 more requests, want 1 (the cap)", ejectedMetric, host, ejected)
		}
	})

	t.Run("a second policy on the same Service is Conflicted", func(t *testing.T) {
		applyYAML(t, f, dyn, backendPolicyGVR, ns, fmt.Sprintf(`
apiVersion: networking.ambit.dev/v1alpha1
kind: BackendPolicy
metadata: {name: eject-too, namespace: %s}
spec:
  targetRefs: [{group: "", kind: Service, name: backend}]
  loadBalancer: {algorithm: LeastRequest}
`, ns))
		msgs := waitBackendPolicy(t, f, dyn, ns, "eject-too", "Conflicted")
		if !strings.Contains(msgs[0], "BackendPolicy eject") {
			t.Fatalf("Conflicted message %q does not name the winner eject", msgs[0])
		}
		waitBackendPolicy(t, f, dyn, ns, "eject", "Accepted")
	})

	t.Run("an invalid policy is rejected by the API server", func(t *testing.T) {
		for _, tc := range []struct{ spec, want string }{
			{`{targetRefs: [{group: "", kind: Service, name: backend}], outlierDetection: {consecutive5xxErrors: 3, maxEjectionPercent: 150}}`,
				"should be less than or equal to 100"},
			{`{targetRefs: [{group: apps, kind: Deployment, name: backend}], loadBalancer: {algorithm: EWMA}}`,
				`a targetRef must be a Service: group "" (core) and kind Service`},
			{`{targetRefs: [{group: "", kind: Service, name: backend}]}`,
				"a BackendPolicy must set at least one of connectionPool, outlierDetection and loadBalancer"},
		} {
			var spec map[string]any
			if err := yaml.Unmarshal([]byte(tc.spec), &spec); err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "networking.ambit.dev/v1alpha1", "kind": "BackendPolicy",
				"metadata": map[string]any{"name": "invalid", "namespace": ns}, "spec": spec,
			}}
			_, err := dyn.Resource(backendPolicyGVR).Namespace(ns).Create(f.Ctx(), u, metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("creating %s: %v, want a rejection saying %q", tc.spec, err, tc.want)
			}
		}
	})

	t.Run("a connection pool of one request answers the excess 503 x-envoy-overloaded", func(t *testing.T) {
		applyYAML(t, f, dyn, backendPolicyGVR, ns, fmt.Sprintf(`
apiVersion: networking.ambit.dev/v1alpha1
kind: BackendPolicy
metadata: {name: limit, namespace: %s}
spec:
  targetRefs: [{group: "", kind: Service, name: limited, sectionName: http}]
  connectionPool:
    tcp: {maxConnections: 1}
    http: {maxRequests: 1, maxPendingRequests: 1}
`, ns))
		waitBackendPolicy(t, f, dyn, ns, "limit", "Accepted")
		err := f.Eventually(time.Minute, func() error {
			// 6 clients at once, each 5 requests that take 400ms.
			total, err := concurrentAnswers(f, ns, client.Name, limitedURL, 6, 5)
			if err != nil {
				return err
			}
			t.Logf("30 concurrent requests: %d ok, %d answered 503 x-envoy-overloaded", total.okCount(), total.overloaded)
			if total.overloaded == 0 || total.okCount() == 0 || total.overloaded+total.okCount() != total.total {
				return fmt.Errorf("%d ok, %d overloaded of %d: want some of each and nothing else", total.okCount(), total.overloaded, total.total)
			}
			if n := sum(total.failed); n > 0 {
				return fmt.Errorf("%d answers from a server failed: %v", n, total.failed)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a policy on a Service without a waypoint provisions one", func(t *testing.T) {
		applyYAML(t, f, dyn, backendPolicyGVR, ns, fmt.Sprintf(`
apiVersion: networking.ambit.dev/v1alpha1
kind: BackendPolicy
metadata: {name: solo, namespace: %s}
spec:
  targetRefs: [{group: "", kind: Service, name: solo}]
  loadBalancer: {algorithm: EWMA, choiceCount: 2}
`, ns))
		start := time.Now()
		msgs := waitBackendPolicy(t, f, dyn, ns, "solo", "Accepted")
		t.Logf("policy applied -> waypoint provisioned and Service bound: %v (%s)", time.Since(start).Round(100*time.Millisecond), msgs[0])
		if l, a := serviceWaypointLabel(t, f, ns, "solo"); l != autoGateway || a != autoGateway {
			t.Fatalf("Service solo: use-waypoint=%q auto-waypoint=%q, want both %q", l, a, autoGateway)
		}
		soloHost := "solo." + ns + ".svc"
		err := f.Eventually(time.Minute, func() error {
			a, err := tryAnswers(f, ns, client.Name, fmt.Sprintf("http://%s/", solo.Spec.ClusterIP), 20)
			if err != nil {
				return err
			}
			if a.okCount() != 20 {
				return fmt.Errorf("answers %+v, want 20 ok", a)
			}
			if n := waypointRequests(t, f, ns, autoGateway, soloHost); n < 20 {
				return fmt.Errorf("the provisioned waypoint counted %v requests to %s, want at least 20", n, soloHost)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("deleting the policy lifts the limit", func(t *testing.T) {
		if err := dyn.Resource(backendPolicyGVR).Namespace(ns).Delete(f.Ctx(), "limit", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := f.Eventually(time.Minute, func() error {
			total, err := concurrentAnswers(f, ns, client.Name, limitedURL, 4, 3)
			if err != nil {
				return err
			}
			if overloaded, ok := total.overloaded, total.okCount(); overloaded > 0 || ok != 12 {
				return fmt.Errorf("%d ok, %d overloaded of 12 without a policy: want all ok", ok, overloaded)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
