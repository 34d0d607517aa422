//go:build e2e

package tests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"ambit.dev/e2e/framework"
)

var (
	istioVSGVR  = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	istioDRGVR  = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	istioAPGVR  = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}
	istioPAGVR  = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
	httpRouteGV = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
)

// istioCRDFile is the Istio CRD file of the istio.io/api module ambitctl
// builds against (850 kB: read from the module cache, not copied).
func istioCRDFile(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	cmd.Dir = filepath.Join("..", "..", "ambitctl")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m istio.io/api in ambitctl/ (go mod download there): %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml")
}

// installIstioCRDs creates Istio's CRDs (the module's own file) and waits
// until each is Established; they are deleted when the test ends.
func installIstioCRDs(t *testing.T, f *framework.Framework, dyn dynamic.Interface) {
	t.Helper()
	raw, err := os.ReadFile(istioCRDFile(t))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 64*1024)
	var names []string
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("Istio CRD file: %v", err)
		}
		if obj == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if _, err := dyn.Resource(crdGVR).Create(f.Ctx(), u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create CRD %s: %v", u.GetName(), err)
		}
		names = append(names, u.GetName())
	}
	t.Cleanup(func() {
		for _, n := range names {
			_ = dyn.Resource(crdGVR).Delete(f.Ctx(), n, metav1.DeleteOptions{})
		}
	})
	for _, n := range names {
		err := f.Eventually(time.Minute, func() error {
			u, err := dyn.Resource(crdGVR).Get(f.Ctx(), n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return fmt.Errorf("CRD %s not Established", n)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("installed %d Istio CRDs from %s", len(names), istioCRDFile(t))
}

// sidecarTemplate is a "sidecar-era" pod template: the test server plus
// an istio-proxy container (no Envoy: ambit-testapp sleep) and the
// injector's annotation, as istioctl kube-inject writes them.
func sidecarTemplate(name string, labels map[string]string) corev1.PodTemplateSpec {
	grace := int64(10)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
			"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: framework.TestAppImage(), ImagePullPolicy: corev1.PullNever,
				Args:  []string{"serve", "--http", fmt.Sprintf(":%d", framework.HTTPPort), "--tcp", fmt.Sprintf(":%d", framework.TCPPort), "--name", name},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: framework.HTTPPort}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(framework.HTTPPort)}},
					PeriodSeconds: 1,
				},
				// Stay up while endpoints drop the pod, as
				// production Deployments do.
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}},
			}, {
				Name: "istio-proxy", Image: framework.TestAppImage(), ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"},
			}},
		},
	}
}

// sidecarDeployment creates a sidecar-era Deployment (sidecarTemplate).
// It rolls one pod at a time without going below its replicas.
func sidecarDeployment(t *testing.T, f *framework.Framework, ns, name string, labels map[string]string) {
	t.Helper()
	one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &one, MaxUnavailable: &zero}},
			Template: sidecarTemplate(name, labels),
		},
	}
	if _, err := f.Client.AppsV1().Deployments(ns).Create(f.Ctx(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment %s/%s: %v", ns, name, err)
	}
}

// sidecarStatefulSet creates a one-replica sidecar-era StatefulSet
// (sidecarTemplate, RollingUpdate) governed by Service service, and waits
// until its pod is Ready.
func sidecarStatefulSet(t *testing.T, f *framework.Framework, ns, name, service string, labels map[string]string) {
	t.Helper()
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			ServiceName:    service,
			Selector:       &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
			Template:       sidecarTemplate(name, labels),
		},
	}
	if _, err := f.Client.AppsV1().StatefulSets(ns).Create(f.Ctx(), s, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create statefulset %s/%s: %v", ns, name, err)
	}
	if err := f.Eventually(3*time.Minute, func() error {
		s, err := f.Client.AppsV1().StatefulSets(ns).Get(f.Ctx(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s.Status.ObservedGeneration < s.Generation || s.Status.ReadyReplicas != 1 {
			return fmt.Errorf("statefulset %s/%s: %d/1 ready", ns, name, s.Status.ReadyReplicas)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// checkMigrated reports the live pods matching selector that still have a
// sidecar or are not captured, and returns how many are live.
func checkMigrated(t *testing.T, f *framework.Framework, ns, selector string) int {
	t.Helper()
	pods, err := f.Client.CoreV1().Pods(ns).List(f.Ctx(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		live++
		if _, ok := p.Annotations["sidecar.istio.io/status"]; ok || len(p.Spec.Containers) != 1 {
			t.Errorf("pod %s still has a sidecar: %d containers, annotations %v", p.Name, len(p.Spec.Containers), p.Annotations)
		}
		if p.Annotations[annoRedirection] != "enabled" {
			t.Errorf("pod %s not captured: %s=%q", p.Name, annoRedirection, p.Annotations[annoRedirection])
		}
	}
	return live
}

// checkSidecarBack reports a pod template without its sidecar after
// rollback (or still carrying the removed-sidecar annotation).
func checkSidecarBack(t *testing.T, what string, objAnnotations map[string]string, tmpl corev1.PodTemplateSpec) {
	t.Helper()
	if _, ok := tmpl.Annotations["sidecar.istio.io/status"]; !ok || len(tmpl.Spec.Containers) != 2 || objAnnotations["ambit.dev/migration-sidecar"] != "" {
		t.Errorf("%s after rollback: template annotations %v, %d containers, annotations %v", what, tmpl.Annotations, len(tmpl.Spec.Containers), objAnnotations)
	}
}

// loopStats are the client loop's results.
type loopStats struct {
	mu       sync.Mutex
	ok, fail int
	// failedBatches are the [start, end] of the batches with failures.
	failedBatches [][2]time.Time
	errs          []string
}

// clientLoop sends batches of GETs from the client pod until stop closes.
func clientLoop(f *framework.Framework, ns, client, url string, stop <-chan struct{}, st *loopStats, done *sync.WaitGroup) {
	defer done.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		out, stderr, err := f.Exec(ns, client, "app", "ambit-testapp", "get", "--timeout", "3s", "--count", "10", "--interval", "50ms", url)
		end := time.Now()
		var o, fl int
		found := false
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if _, err := fmt.Sscanf(line, "%d ok, %d failed", &o, &fl); err == nil {
				found = true
			}
		}
		st.mu.Lock()
		if !found {
			st.errs = append(st.errs, fmt.Sprintf("%s: exec: %v %s", start.Format(time.TimeOnly), err, excerptLines(stderr, 3)))
		} else {
			st.ok += o
			st.fail += fl
			if fl > 0 {
				st.failedBatches = append(st.failedBatches, [2]time.Time{start, end})
				var why []string
				for _, l := range strings.Split(stderr+out, "\n") {
					if l != "" && !strings.HasPrefix(l, "{") {
						why = append(why, l)
					}
				}
				st.errs = append(st.errs, fmt.Sprintf("%s: %d failed: %s", start.Format(time.TimeOnly), fl, excerptLines(strings.Join(why, "\n"), 3)))
			}
		}
		st.mu.Unlock()
	}
}

// stepTimes watches the namespace's migration record and notes when each
// step was first seen done.
func stepTimes(f *framework.Framework, ns string, stop <-chan struct{}, done *sync.WaitGroup) map[string]time.Time {
	seen := map[string]time.Time{}
	var mu sync.Mutex
	go func() {
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			n, err := f.Client.CoreV1().Namespaces().Get(f.Ctx(), ns, metav1.GetOptions{})
			if err != nil {
				continue
			}
			rec := n.Annotations["ambit.dev/migration"]
			mu.Lock()
			for _, s := range []string{"apply-objects", "waypoint", "label-ambient", "remove-injection-label", "restart", "verify"} {
				if _, ok := seen[s]; !ok && strings.Contains(rec, `"`+s+`"`) {
					seen[s] = time.Now()
				}
			}
			mu.Unlock()
		}
	}()
	return seen
}

// TestMigrate moves a namespace of sidecar-era Deployments (and a
// StatefulSet, and a PodDisruptionBudget over the Deployments) with Istio
// objects (VirtualService 90/10, DestinationRule with outlier detection,
// AuthorizationPolicy, PeerAuthentication PERMISSIVE) to Ambit with
// ambitctl migrate plan/apply while a client in an enrolled namespace
// calls it, checks the split and the policy under Ambit, and rolls back.
// Ambit's CA runs as an intermediate of a stand-in Istio root (the
// cacerts Secret of deploy/ca/istio-intermediate.sh), and the migrated
// pods' certificates are checked to chain to it.
func TestMigrate(t *testing.T) {
	f := framework.New(t)
	// Ambit's CA signs under the cluster's "Istio root" (the cacerts
	// Secret), as docs/migration.md's shared-root section says.
	istioRoot := plugIstioRoot(t, f)
	nodes, dyn := installMesh(t, f)
	installIstioCRDs(t, f, dyn)

	clients := f.Namespace("mclients", map[string]string{labelMode: "ambient"})
	serviceAccount(t, f, clients, "client")
	serviceAccount(t, f, clients, "intruder")
	client := f.TestApp(clients, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	intruder := f.TestApp(clients, "intruder", framework.AppOptions{Node: nodes[0], ServiceAccount: "intruder", Args: []string{"sleep"}})

	ns := f.Namespace("legacy", map[string]string{"istio-injection": "enabled"})
	sidecarDeployment(t, f, ns, "reviews-v1", map[string]string{"app": "reviews", "version": "v1"})
	sidecarDeployment(t, f, ns, "reviews-v2", map[string]string{"app": "reviews", "version": "v2"})
	reviews := selectorService(t, f, ns, "reviews", map[string]string{"app": "reviews"})
	selectorService(t, f, ns, "reviews-v1", map[string]string{"app": "reviews", "version": "v1"})
	selectorService(t, f, ns, "reviews-v2", map[string]string{"app": "reviews", "version": "v2"})
	// A StatefulSet with its own Service, not called by the client loop.
	selectorService(t, f, ns, "ratings", map[string]string{"app": "ratings"})
	sidecarStatefulSet(t, f, ns, "ratings", "ratings", map[string]string{"app": "ratings"})
	minOne := intstr.FromInt32(1)
	if _, err := f.Client.PolicyV1().PodDisruptionBudgets(ns).Create(f.Ctx(), &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: &minOne,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "reviews"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PodDisruptionBudget %s/reviews: %v", ns, err)
	}
	waitDeploymentReady(t, f, ns, "reviews-v1")
	waitDeploymentReady(t, f, ns, "reviews-v2")
	f.WaitEndpoints(ns, "reviews", 2)

	clientID := "cluster.local/ns/" + clients + "/sa/client"
	applyYAML(t, f, dyn, istioVSGVR, ns, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
`)
	applyYAML(t, f, dyn, istioDRGVR, ns, `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`)
	applyYAML(t, f, dyn, istioAPGVR, ns, fmt.Sprintf(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-allow}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["%s"]}}]
    to: [{operation: {methods: [GET]}}]
`, clientID))
	applyYAML(t, f, dyn, istioPAGVR, ns, `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: PERMISSIVE}
`)

	// The local cluster has no DNS: the Service's address.
	url := fmt.Sprintf("http://%s/", reviews.Spec.ClusterIP)
	// Sidecar era: the client (Ambit) reaches the sidecar pods in
	// plaintext.
	if _, failed := getMany(t, f, clients, client.Name, url, 20); failed > 0 {
		t.Fatalf("before migrating: %d of 20 requests failed", failed)
	}

	plan := ambitctl(t, f, "migrate", "plan", "-n", ns)
	plan.expect(t, 0, "VirtualService/reviews", "HTTPRoute/reviews", "DestinationRule/reviews", "BackendPolicy/reviews",
		"AuthorizationPolicy/reviews-allow", "PeerAuthentication/default")
	dry := ambitctl(t, f, "migrate", "apply", "-n", ns, "--dry-run")
	dry.expect(t, 0, "dry run", "remove namespace labels istio-injection=enabled",
		"deployment/reviews-v1, deployment/reviews-v2, statefulset/ratings")
	if n, _ := f.Client.CoreV1().Namespaces().Get(f.Ctx(), ns, metav1.GetOptions{}); n.Labels["istio-injection"] != "enabled" || n.Annotations["ambit.dev/migration"] != "" {
		t.Fatalf("--dry-run changed the namespace: %v %v", n.Labels, n.Annotations)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	st := &loopStats{}
	wg.Add(2)
	go clientLoop(f, clients, client.Name, url, stop, st, &wg)
	steps := stepTimes(f, ns, stop, &wg)
	applyStart := time.Now()
	res := ambitctl(t, f, "migrate", "apply", "-n", ns, "--timeout", "3m")
	applyEnd := time.Now()
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	// verify saw each pod served by its node's ztunnel with a Valid
	// certificate of its identity, and the client loop's traffic reach the
	// namespace over HBONE.
	res.expect(t, 0, "migrated to Ambit", "served by ztunnel with their identity",
		"inbound to spiffe://cluster.local/ns/"+ns+"/sa/default: ", "over HBONE (mutual TLS) from spiffe://cluster.local/ns/")
	t.Logf("migrate apply took %s; client loop: %d ok, %d failed; steps done at %v", applyEnd.Sub(applyStart).Round(time.Second), st.ok, st.fail, steps)
	for _, e := range st.errs {
		t.Logf("client loop: %s", e)
	}
	if st.ok < 100 {
		t.Errorf("the client loop sent only %d successful requests during the migration", st.ok)
	}
	// Failures are allowed only while pods restart.
	restartFrom, restartTo := steps["remove-injection-label"], steps["restart"]
	for _, b := range st.failedBatches {
		if restartFrom.IsZero() || restartTo.IsZero() || b[1].Before(restartFrom) || b[0].After(restartTo.Add(2*time.Second)) {
			t.Errorf("requests failed outside the restarts (%s–%s): batch %s–%s", restartFrom.Format(time.TimeOnly), restartTo.Format(time.TimeOnly), b[0].Format(time.TimeOnly), b[1].Format(time.TimeOnly))
		}
	}
	// Re-running is a no-op.
	ambitctl(t, f, "migrate", "apply", "-n", ns).expect(t, 0, "already migrated")
	// The migrated pods' certificates chain to the Istio root.
	checkSharedRoot(t, f, istioRoot, "spiffe://cluster.local/ns/"+ns+"/sa/default")

	// No sidecars, every pod captured.
	if live := checkMigrated(t, f, ns, "app=reviews"); live != 2 {
		t.Errorf("%d live reviews pods, want 2", live)
	}
	if live := checkMigrated(t, f, ns, "app=ratings"); live != 1 {
		t.Errorf("%d live ratings pods, want 1", live)
	}

	// The 90/10 split holds within ±4 % over 1000 requests.
	names := map[string]int{}
	failed := 0
	for range 4 {
		n, fl := getMany(t, f, clients, client.Name, url, 250)
		for k, v := range n {
			names[k] += v
		}
		failed += fl
	}
	t.Logf("split over 1000 requests: %v, %d failed", names, failed)
	if failed > 0 || names["reviews-v2"] < 60 || names["reviews-v2"] > 140 || names["reviews-v1"]+names["reviews-v2"] != 1000 {
		t.Errorf("split %v (%d failed), want reviews-v2 at 10 %% ± 4 %% of 1000", names, failed)
	}
	// The policy holds: another identity is refused, and so is a POST.
	if _, fl := getMany(t, f, clients, intruder.Name, url, 5); fl != 5 {
		t.Errorf("intruder: %d of 5 requests refused, want all", fl)
	}
	out, _, _ := f.Exec(clients, client.Name, "app", "ambit-testapp", "get", "--method", "POST", "--expect-status", "403", "--count", "2", "--timeout", "5s", url)
	if !strings.Contains(out, "2 ok, 0 failed") {
		t.Errorf("POST from the client not refused with 403: %s", excerptLines(out, 3))
	}

	// Rollback returns labels and objects to the start.
	ambitctl(t, f, "migrate", "rollback", "-n", ns, "--dry-run").expect(t, 0, "istio-injection=enabled", "HTTPRoute/reviews")
	ambitctl(t, f, "migrate", "rollback", "-n", ns, "--timeout", "3m").expect(t, 0, "rolled back")
	n, err := f.Client.CoreV1().Namespaces().Get(f.Ctx(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["istio-injection"] != "enabled" || n.Labels[labelMode] != "" || n.Annotations["ambit.dev/migration"] != "" {
		t.Errorf("after rollback: labels %v annotations %v", n.Labels, n.Annotations)
	}
	for _, gvr := range []schema.GroupVersionResource{httpRouteGV,
		{Group: "networking.ambit.dev", Version: "v1alpha1", Resource: "backendpolicies"},
		{Group: "security.ambit.dev", Version: "v1alpha1", Resource: "authorizationpolicies"},
		{Group: "security.ambit.dev", Version: "v1alpha1", Resource: "peerauthentications"}} {
		l, err := dyn.Resource(gvr).Namespace(ns).List(f.Ctx(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range l.Items {
			t.Errorf("after rollback %s %s is left", gvr.Resource, o.GetName())
		}
	}
	for _, name := range []string{"reviews-v1", "reviews-v2"} {
		d, err := f.Client.AppsV1().Deployments(ns).Get(f.Ctx(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkSidecarBack(t, "deployment "+name, d.Annotations, d.Spec.Template)
	}
	sts, err := f.Client.AppsV1().StatefulSets(ns).Get(f.Ctx(), "ratings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkSidecarBack(t, "statefulset ratings", sts.Annotations, sts.Spec.Template)
	// The sidecar pods serve the client again (plaintext).
	if err := f.Eventually(time.Minute, func() error {
		if _, fl := getMany(t, f, clients, client.Name, url, 10); fl > 0 {
			return fmt.Errorf("%d of 10 failed", fl)
		}
		return nil
	}); err != nil {
		t.Errorf("after rollback: %v", err)
	}
	// Istio's objects were never touched.
	for _, gvr := range []schema.GroupVersionResource{istioVSGVR, istioDRGVR, istioAPGVR, istioPAGVR} {
		l, err := dyn.Resource(gvr).Namespace(ns).List(f.Ctx(), metav1.ListOptions{})
		if err != nil || len(l.Items) != 1 {
			t.Errorf("Istio %s after rollback: %v %v", gvr.Resource, l, err)
		}
	}
}
