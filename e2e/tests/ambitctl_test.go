//go:build e2e

package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"ambit.dev/e2e/framework"
)

// ctlResult is one ambitctl run.
type ctlResult struct {
	out  string // stdout and stderr
	code int
}

// ambitctl runs the binary under test against the cluster.
func ambitctl(t *testing.T, f *framework.Framework, args ...string) ctlResult {
	t.Helper()
	bin, err := filepath.Abs(framework.Ambitctl())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("ambitctl binary %s: %v (build it with `make build`, or pass -ambitctl / AMBIT_E2E_AMBITCTL)", bin, err)
	}
	ctx, cancel := context.WithTimeout(f.Ctx(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+os.Getenv("KUBECONFIG"))
	out, err := cmd.CombinedOutput()
	r := ctlResult{out: string(out)}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("ambitctl %s: %v", strings.Join(args, " "), err)
		}
		r.code = ee.ExitCode()
	}
	t.Logf("ambitctl %s (exit %d):\n%s", strings.Join(args, " "), r.code, r.out)
	return r
}

func (r ctlResult) expect(t *testing.T, code int, contains ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d", r.code, code)
	}
	for _, s := range contains {
		if !strings.Contains(r.out, s) {
			t.Fatalf("output does not contain %q", s)
		}
	}
}

// TestAmbitctl drives a whole life cycle with the ambitctl binary: pre-flight,
// install (twice: idempotent), post-install check, enroll, status, the
// ztunnel views through the apiserver, a missing component caught by check,
// unenroll and uninstall.
func TestAmbitctl(t *testing.T) {
	f := framework.New(t)
	nodes := f.ReadyNodes(2)
	t.Cleanup(func() {
		if t.Failed() {
			f.CollectDiagnostics(systemNS)
		}
		// Leave the cluster as found: no Ambit, no CRDs, no namespace.
		ambitctl(t, f, "uninstall", "--unenroll", "--delete-crds")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		_ = f.Client.CoreV1().Namespaces().Delete(ctx, systemNS, metav1.DeleteOptions{})
		for ctx.Err() == nil {
			if _, err := f.Client.CoreV1().Namespaces().Get(ctx, systemNS, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return
			}
			time.Sleep(time.Second)
		}
		t.Errorf("cleanup: namespace %s still exists after 3m", systemNS)
	})

	ambitctl(t, f, "check", "--pre").expect(t, 0, "all checks passed")
	// Before install, check names what is missing and how to fix it.
	ambitctl(t, f, "check").expect(t, 1, "ambitctl install")

	first := ambitctl(t, f, "install")
	first.expect(t, 0, "Ambit is ready")
	ambitctl(t, f, "install").expect(t, 0, "0 created, 0 configured")
	ambitctl(t, f, "check").expect(t, 0, "all checks passed")

	ns := f.Namespace("ctl", nil)
	serviceAccount(t, f, ns, "server")
	server := f.TestApp(ns, "server", framework.AppOptions{Node: nodes[0], ServiceAccount: "server"})
	ambitctl(t, f, "enroll", ns).expect(t, 0, ns)
	waitRedirection(t, f, ns, server.Name, "enabled")
	ambitctl(t, f, "status").expect(t, 0, ns, server.Name, "enabled")

	serverID := "spiffe://cluster.local/ns/" + ns + "/sa/server"
	err := f.Eventually(time.Minute, func() error {
		if r := ambitctl(t, f, "ztunnel", "certs", "--node", nodes[0]); r.code != 0 || !strings.Contains(r.out, serverID) {
			return fmt.Errorf("the ztunnel on %s has no certificate for %s yet", nodes[0], serverID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := ambitctl(t, f, "ztunnel", "workloads", "--node", nodes[0], "-o", "json")
	r.expect(t, 0)
	var ws []map[string]any
	if err := json.Unmarshal([]byte(r.out), &ws); err != nil {
		t.Fatalf("ztunnel workloads -o json is not a JSON list: %v", err)
	}
	found := false
	for _, w := range ws {
		found = found || (w["name"] == server.Name && w["namespace"] == ns && w["captured"] == true)
	}
	if !found {
		t.Fatalf("ztunnel workloads on %s does not list %s/%s as captured", nodes[0], ns, server.Name)
	}

	t.Run("check catches a node without ztunnel", func(t *testing.T) {
		// ztunnel only on the second node: check must name the first.
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":%q}}}}}`, nodes[1])
		if _, err := f.Client.AppsV1().DaemonSets(systemNS).Patch(f.Ctx(), "ztunnel", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { setZtunnelScheduling(t, f, true) })
		var line string
		err := f.Eventually(2*time.Minute, func() error {
			r := ambitctl(t, f, "check")
			line = ""
			for l := range strings.Lines(r.out) {
				if !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, "ztunnel") {
					continue
				}
				if strings.Contains(l, "node "+nodes[1]) {
					return fmt.Errorf("check blames node %s, where ztunnel runs: %s", nodes[1], l)
				}
				if strings.Contains(l, "node "+nodes[0]) {
					line = l
				}
			}
			if r.code != 1 || line == "" {
				return fmt.Errorf("check (exit %d) has no FAIL line naming ztunnel on node %s", r.code, nodes[0])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("check says: %s", strings.TrimSpace(line))
		setZtunnelScheduling(t, f, true)
		daemonPods(t, f, "ztunnel", nodes)
		ambitctl(t, f, "check").expect(t, 0, "all checks passed")
	})

	// Waypoints: one made with ambitctl, one the control plane provisions
	// for an HTTPRoute. Uninstall refuses to delete the user's own unasked.
	dyn, err := dynamic.NewForConfig(f.Config)
	if err != nil {
		t.Fatal(err)
	}
	ambitctl(t, f, "waypoint", "apply", "-n", ns).expect(t, 0, "waypoint "+ns+"/waypoint created", "is Programmed")
	selectorService(t, f, ns, "web", map[string]string{"app": "none"})
	applyYAML(t, f, dyn, httpRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`, ns))
	err = f.Eventually(2*time.Minute, func() error {
		if label, _ := serviceWaypointLabel(t, f, ns, "web"); label != "ambit-auto-waypoint" {
			return fmt.Errorf("Service web is bound to %q, want the auto-provisioned waypoint", label)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ambitctl(t, f, "uninstall").expect(t, 1, "1 waypoint(s) you created are still deployed ("+ns+"/waypoint)", "--unenroll")
	ambitctl(t, f, "waypoint", "delete", "-n", ns).expect(t, 0)

	// Uninstalling under enrolled pods would cut them off: refused.
	ambitctl(t, f, "uninstall").expect(t, 1, "1 namespace(s) are enrolled ("+ns+")", "--unenroll")
	ambitctl(t, f, "unenroll", ns).expect(t, 0, ns)
	waitRedirection(t, f, ns, server.Name, "")

	ambitctl(t, f, "uninstall").expect(t, 0, "waypoint "+ns+"/ambit-auto-waypoint deleted (auto-provisioned)",
		"Service "+ns+"/web: auto-provisioned waypoint binding removed", "GatewayClass ambit-waypoint deleted", "Ambit is uninstalled")
	if label, _ := serviceWaypointLabel(t, f, ns, "web"); label != "" {
		t.Fatalf("Service web still labelled %q after uninstall", label)
	}
	// The waypoint's Deployment goes with its Gateway (owner reference).
	err = f.Eventually(time.Minute, func() error {
		ds, err := f.Client.AppsV1().Deployments(ns).List(f.Ctx(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(ds.Items) > 0 {
			return fmt.Errorf("%d Deployment(s) left in %s, the first %s", len(ds.Items), ns, ds.Items[0].Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ds := range []string{"ztunnel", "ambit-node-agent"} {
		if _, err := f.Client.AppsV1().DaemonSets(systemNS).Get(f.Ctx(), ds, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("DaemonSet %s after uninstall: %v, want not found", ds, err)
		}
	}
	if _, err := f.Client.Discovery().ServerResourcesForGroupVersion("security.ambit.dev/v1alpha1"); err != nil {
		t.Fatalf("the CRDs were removed by a plain uninstall (they keep users' policies): %v", err)
	}
	ambitctl(t, f, "check").expect(t, 1, "FAIL")
}
