//go:build e2e

package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"ambit.dev/e2e/framework"
)

var grpcRouteGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "grpcroutes"}

const grpcPort = 9090

// grpcService creates a Service name selecting sel with a gRPC port
// (9090, appProtocol grpc) and an HTTP/1 port (80 -> 8080).
func grpcService(t *testing.T, f *framework.Framework, ns, name string, sel map[string]string) *corev1.Service {
	t.Helper()
	grpc := "grpc"
	svc, err := f.Client.CoreV1().Services(ns).Create(f.Ctx(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{
			{Name: "grpc", Port: grpcPort, TargetPort: intstr.FromInt32(grpcPort), AppProtocol: &grpc},
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(framework.HTTPPort)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
	return svc
}

// grpcMany makes n health-check calls from the client pod over one
// HTTP/2 connection and returns how many answers each backend gave (its
// x-served-by header), and how many failed.
func grpcMany(t *testing.T, f *framework.Framework, ns, client, addr string, n int, metadata ...string) (served map[string]int, failed int) {
	t.Helper()
	args := []string{"ambit-testapp", "grpc-check", "--timeout", "10s", "--count", fmt.Sprint(n)}
	for _, m := range metadata {
		args = append(args, "--metadata", m)
	}
	out, stderr, err := f.Exec(ns, client, "app", append(args, addr)...)
	served = map[string]int{}
	ok := -1
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if rest, found := strings.CutPrefix(line, "served-by="); found {
			name, result, _ := strings.Cut(rest, " ")
			if result == "status=SERVING" {
				served[name]++
			}
			continue
		}
		var o, fl int
		if _, err := fmt.Sscanf(line, "%d ok, %d failed", &o, &fl); err == nil {
			ok, failed = o, fl
		}
	}
	if ok < 0 {
		t.Fatalf("grpc-check %s x%d: no summary line (exec error %v); stderr: %s", addr, n, err, excerptLines(stderr, 5))
	}
	return served, failed
}

// TestGRPCRoute programs a waypoint with a GRPCRoute attached to a Service
// (GAMMA): gRPC calls over HTTP/2 are routed by method and metadata, the
// waypoint counts them, a GRPCRoute on a port that is not HTTP/2 gets a
// status condition without disturbing the running routes, and deleting
// the route restores the service's own load balancing.
func TestGRPCRoute(t *testing.T) {
	f := framework.New(t)
	nodes, dyn := installMesh(t, f)
	ns := f.Namespace("grpc", map[string]string{labelMode: "ambient"})
	for _, sa := range []string{"echo", "client"} {
		serviceAccount(t, f, ns, sa)
	}
	for i, v := range []string{"v1", "v2"} {
		f.TestApp(ns, "echo-"+v, framework.AppOptions{Node: nodes[i], ServiceAccount: "echo", Labels: map[string]string{"app": "echo", "version": v},
			Args: []string{"serve-grpc", "--grpc", fmt.Sprintf(":%d", grpcPort), "--name", "echo-" + v}})
	}
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	echo := grpcService(t, f, ns, "echo", map[string]string{"app": "echo"})
	for _, v := range []string{"v1", "v2"} {
		grpcService(t, f, ns, "echo-"+v, map[string]string{"app": "echo", "version": v})
		f.WaitEndpoints(ns, "echo-"+v, 1)
	}
	f.WaitEndpoints(ns, "echo", 2)
	waitRedirection(t, f, ns, client.Name, "enabled")
	addr := fmt.Sprintf("%s:%d", echo.Spec.ClusterIP, grpcPort)

	createWaypoint(t, f, dyn, ns, "waypoint")
	patch := `{"metadata":{"labels":{"ambit.dev/use-waypoint":"waypoint"}}}`
	if _, err := f.Client.CoreV1().Services(ns).Patch(f.Ctx(), "echo", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	applyYAML(t, f, dyn, grpcRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: %d}]
  rules:
  - matches: [{method: {service: grpc.health.v1.Health, method: Check}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: echo-v2, port: %d}]
  - backendRefs: [{name: echo-v1, port: %d}]
`, ns, grpcPort, grpcPort, grpcPort))
	waitRouteConditionOf(t, f, dyn, grpcRouteGVR, ns, "echo", "Accepted", "True", "Accepted")
	waitRouteConditionOf(t, f, dyn, grpcRouteGVR, ns, "echo", "ResolvedRefs", "True", "ResolvedRefs")

	t.Run("calls are routed by method and metadata through the waypoint", func(t *testing.T) {
		err := f.Eventually(time.Minute, func() error {
			canary, failed := grpcMany(t, f, ns, client.Name, addr, 20, "x-canary: yes")
			if failed > 0 || canary["echo-v2"] != 20 {
				return fmt.Errorf("canary answers %v, %d failed; want 20 from echo-v2", canary, failed)
			}
			rest, failed := grpcMany(t, f, ns, client.Name, addr, 20)
			if failed > 0 || rest["echo-v1"] != 20 {
				return fmt.Errorf("other answers %v, %d failed; want 20 from echo-v1", rest, failed)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		n, principals := waypointSamples(t, f, ns, "waypoint", "echo-v2."+ns+".svc")
		want := "spiffe://cluster.local/ns/" + ns + "/sa/client"
		if n < 20 || !principals[want] {
			t.Fatalf("the waypoint counted %v calls to echo-v2 from %v, want at least 20 from %s", n, principals, want)
		}
	})

	t.Run("a GRPCRoute on an HTTP/1 port is refused and the running routes stay", func(t *testing.T) {
		applyYAML(t, f, dyn, grpcRouteGVR, ns, fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: plain, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules: [{backendRefs: [{name: echo-v2, port: %d}]}]
`, ns, grpcPort))
		c := waitRouteConditionOf(t, f, dyn, grpcRouteGVR, ns, "plain", "Accepted", "False", "UnsupportedProtocol")
		if msg, _ := c["message"].(string); !strings.Contains(msg, "not an HTTP/2 port") {
			t.Fatalf("message %q does not say the port is not HTTP/2", msg)
		}
		rest, failed := grpcMany(t, f, ns, client.Name, addr, 20)
		if failed > 0 || rest["echo-v1"] != 20 {
			t.Fatalf("answers %v, %d failed; want 20 from echo-v1 still", rest, failed)
		}
	})

	t.Run("deleting the route restores the service's own balancing", func(t *testing.T) {
		for _, name := range []string{"echo", "plain"} {
			if err := dyn.Resource(grpcRouteGVR).Namespace(ns).Delete(f.Ctx(), name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		err := f.Eventually(time.Minute, func() error {
			served, failed := grpcMany(t, f, ns, client.Name, addr, 40)
			if failed > 0 || served["echo-v1"] == 0 || served["echo-v2"] == 0 {
				return fmt.Errorf("answers %v, %d failed; want both backends", served, failed)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
