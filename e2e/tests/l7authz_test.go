//go:build e2e

package tests

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"ambit.dev/e2e/framework"
)

// status runs one request from client and returns nil when the answer has
// status want.
func status(f *framework.Framework, ns, client, method, url string, want int, headers ...string) error {
	_, err := request(f, ns, client, method, url, want, headers...)
	return err
}

// request is status returning the response body.
func request(f *framework.Framework, ns, client, method, url string, want int, headers ...string) (string, error) {
	args := []string{"ambit-testapp", "get", "--timeout", "5s", "--method", method, "--expect-status", fmt.Sprint(want)}
	for _, h := range headers {
		args = append(args, "--header", h)
	}
	out, stderr, err := f.Exec(ns, client, "app", append(args, url)...)
	if err != nil {
		return "", fmt.Errorf("%s %s from %s: want %d: %v (stdout %q, stderr %q)", method, url, client, want, err, excerptLines(out, 3), excerptLines(stderr, 3))
	}
	return strings.TrimSpace(out), nil
}

// waypointAccessLog returns the JSON access log lines of the ready waypoint
// pods of Gateway gw in ns.
func waypointAccessLog(t *testing.T, f *framework.Framework, ns, gw string) []map[string]any {
	t.Helper()
	pods, err := f.Client.CoreV1().Pods(ns).List(f.Ctx(), metav1.ListOptions{LabelSelector: "gateway.networking.k8s.io/gateway-name=" + gw})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, p := range pods.Items {
		raw, err := f.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "waypoint"}).DoRaw(f.Ctx())
		if err != nil {
			t.Fatalf("logs of waypoint %s: %v", p.Name, err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			var m map[string]any
			if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &m) == nil && m["response_code"] != nil {
				out = append(out, m)
			}
		}
	}
	return out
}

// TestL7Authz binds a Service to a waypoint and attaches an
// AuthorizationPolicy to it with targetRefs: the waypoint allows GET
// /public* from the client's SPIFFE principal and answers everything else
// 403, and its access log names the deciding policy and the client's
// principal. A client with another ServiceAccount is denied; an invalid
// policy gets a status condition and leaves the running configuration
// alone; CEL validation rejects what the API forbids.
func TestL7Authz(t *testing.T) {
	f := framework.New(t)
	nodes, dyn := installMesh(t, f)

	ns := f.Namespace("l7authz", map[string]string{labelMode: "ambient"})
	for _, sa := range []string{"web", "client", "intruder"} {
		serviceAccount(t, f, ns, sa)
	}
	f.TestApp(ns, "web-1", framework.AppOptions{Node: nodes[0], ServiceAccount: "web", Labels: map[string]string{"app": "web"}})
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	intruder := f.TestApp(ns, "intruder", framework.AppOptions{Node: nodes[0], ServiceAccount: "intruder", Args: []string{"sleep"}})
	web := selectorService(t, f, ns, "web", map[string]string{"app": "web"})
	f.WaitEndpoints(ns, "web", 1)
	waitRedirection(t, f, ns, client.Name, "enabled")
	waitRedirection(t, f, ns, intruder.Name, "enabled")
	base := fmt.Sprintf("http://%s", web.Spec.ClusterIP)

	createWaypoint(t, f, dyn, ns, "waypoint")
	patch := `{"metadata":{"labels":{"ambit.dev/use-waypoint":"waypoint"}}}`
	if _, err := f.Client.CoreV1().Services(ns).Patch(f.Ctx(), "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Traffic flows through the waypoint before any policy.
	if err := f.Eventually(time.Minute, func() error {
		before := waypointRequests(t, f, ns, "waypoint", "web."+ns+".svc")
		if err := status(f, ns, client.Name, "POST", base+"/admin", 200); err != nil {
			return err
		}
		if after := waypointRequests(t, f, ns, "waypoint", "web."+ns+".svc"); after <= before {
			return fmt.Errorf("the waypoint did not count the request yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	pol := newPolicies(t, f)
	clientID := "cluster.local/ns/" + ns + "/sa/client"
	policyID := "ns[" + ns + "]-policy[web-public]-rule[0]"
	p := pol.mustApply(fmt.Sprintf(`
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-public, namespace: %s}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["%s"]}}]
    to: [{operation: {methods: [GET], paths: ["/public*"]}}]
`, ns, clientID))
	if c := pol.accepted(p); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "waypoint "+ns+"/waypoint") {
		t.Fatalf("Accepted = %+v, want True naming the waypoint", c)
	}

	t.Run("the client may GET /public and nothing else", func(t *testing.T) {
		if err := f.Eventually(time.Minute, func() error {
			return status(f, ns, client.Name, "POST", base+"/admin", 403, "X-Request-Id: l7authz-admin")
		}); err != nil {
			t.Fatal(err)
		}
		if err := status(f, ns, client.Name, "GET", base+"/public", 200); err != nil {
			t.Fatal(err)
		}
		body, err := request(f, ns, client.Name, "GET", base+"/private", 403)
		if err != nil {
			t.Fatal(err)
		}
		if body != "RBAC: access denied" {
			t.Fatalf("403 body %q, want Envoy's %q", body, "RBAC: access denied")
		}
	})

	t.Run("another ServiceAccount is denied /public", func(t *testing.T) {
		if err := status(f, ns, intruder.Name, "GET", base+"/public", 403); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the access log names the policy and the client", func(t *testing.T) {
		err := f.Eventually(30*time.Second, func() error {
			lines := waypointAccessLog(t, f, ns, "waypoint")
			var denied, allowed bool
			for _, l := range lines {
				if l["request_id"] == "l7authz-admin" && l["response_code"] == 403.0 &&
					l["response_code_details"] == "rbac_access_denied_matched_policy[none]" &&
					l["source_principal"] == "spiffe://"+clientID && l["method"] == "POST" {
					denied = true
				}
				if l["path"] == "/public" && l["response_code"] == 200.0 && l["source_principal"] == "spiffe://"+clientID {
					allowed = true
				}
			}
			if !denied || !allowed {
				return fmt.Errorf("access log (%d lines) lacks the denied POST /admin (%v) or the allowed GET /public (%v) by %s", len(lines), denied, allowed, clientID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		allowed, denied := 0.0, 0.0
		eachWaypointSample(t, f, ns, "waypoint", "ambit_waypoint_rbac_decisions_total", func(l map[string]string, v float64) {
			switch {
			case l["result"] == "allowed" && l["policy"] == policyID:
				allowed += v
			case l["result"] == "denied" && l["policy"] == "none":
				denied += v
			}
		})
		if allowed < 1 || denied < 3 {
			t.Errorf("ambit_waypoint_rbac_decisions_total: %v allowed by %s, %v denied by none; want at least 1 and 3", allowed, policyID, denied)
		}
	})

	t.Run("an invalid policy gets a status and leaves the running config alone", func(t *testing.T) {
		bad := pol.mustApply(fmt.Sprintf(`
apiVersion: security.ambit.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-missing, namespace: %s}
spec:
  targetRefs: [{kind: Service, group: "", name: no-such-service}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
`, ns))
		if c := pol.accepted(bad); c.Status != metav1.ConditionFalse || c.Reason != "TargetNotFound" || !strings.Contains(c.Message, "no-such-service") {
			t.Fatalf("Accepted = %+v, want False/TargetNotFound naming the Service", c)
		}
		for range 3 {
			if err := status(f, ns, client.Name, "GET", base+"/public", 200); err != nil {
				t.Fatal(err)
			}
			if err := status(f, ns, client.Name, "POST", base+"/admin", 403); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("access log sampling from the Gateway annotation", func(t *testing.T) {
		annotate := func(v string) {
			t.Helper()
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"ambit.dev/access-log-sampling":%q}}}`, v)
			if _, err := dyn.Resource(gatewayGVR).Namespace(ns).Patch(f.Ctx(), "waypoint", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		condition := func(status, reason string) {
			t.Helper()
			err := f.Eventually(30*time.Second, func() error {
				u, err := dyn.Resource(gatewayGVR).Namespace(ns).Get(f.Ctx(), "waypoint", metav1.GetOptions{})
				if err != nil {
					return err
				}
				conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
				for _, c := range conds {
					if m, _ := c.(map[string]any); m["type"] == "ambit.dev/AccessLogSampling" && m["status"] == status && m["reason"] == reason {
						return nil
					}
				}
				return fmt.Errorf("no condition ambit.dev/AccessLogSampling %s/%s yet: %v", status, reason, conds)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		annotate("150")
		condition("False", "InvalidValue")
		annotate("0")
		condition("True", "Applied")
		// 0%: allowed requests stop being logged, denials still are.
		err := f.Eventually(time.Minute, func() error {
			marker := fmt.Sprintf("/public/sampled-%d", time.Now().UnixNano())
			if err := status(f, ns, client.Name, "GET", base+marker, 200); err != nil {
				return err
			}
			if err := status(f, ns, client.Name, "POST", base+marker, 403); err != nil {
				return err
			}
			// The waypoint writes its access log in batches, within
			// proxy.DefaultAccessLogFlush (1 s): both lines come in
			// the same one.
			var got200, got403 bool
			for wait := time.Now().Add(5 * time.Second); !got403 && time.Now().Before(wait); time.Sleep(250 * time.Millisecond) {
				for _, l := range waypointAccessLog(t, f, ns, "waypoint") {
					if l["path"] == marker {
						got200 = got200 || l["response_code"] == 200.0
						got403 = got403 || l["response_code"] == 403.0
					}
				}
			}
			if got200 || !got403 {
				return fmt.Errorf("at 0%% sampling: 200 logged %v (want false), 403 logged %v (want true)", got200, got403)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("CEL validation", func(t *testing.T) {
		cases := []struct{ name, spec, want string }{
			{"both", `{selector: {matchLabels: {app: web}}, targetRefs: [{kind: Service, group: "", name: web}]}`, "not both"},
			{"bad-kind", `{targetRefs: [{kind: Deployment, group: apps, name: web}]}`, "targetRefs entries must be a Service"},
			{"bad-when", `{targetRefs: [{kind: Service, group: "", name: web}], rules: [{when: [{key: request.auth.claims, values: [a]}]}]}`, "when.key must be one of"},
		}
		for _, tc := range cases {
			_, err := pol.apply(fmt.Sprintf("apiVersion: security.ambit.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: %s}\nspec: %s\n", tc.name, ns, tc.spec))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want rejected with %q", tc.name, err, tc.want)
			}
		}
	})
}
