// Package framework is the Go e2e test framework over a running cluster
// (normally the one ambit-localcluster brings up): namespaces that clean up
// after themselves, the ambit-testapp server/client pods, readiness waits,
// exec into pods, and logs/events collected whenever a test fails.
package framework

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	"sigs.k8s.io/yaml"
)

// Flags (the framework's one config; `go test -args -kubeconfig=...`).
var (
	kubeconfig   = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster under test (default $KUBECONFIG)")
	artifacts    = flag.String("artifacts", os.Getenv("AMBIT_E2E_ARTIFACTS"), "directory for logs collected on failure (default $AMBIT_E2E_ARTIFACTS or a temp dir)")
	testAppImage = flag.String("testapp-image", "localhost/ambit-testapp:dev", "image of ambit-testapp, imported into every node")
	ambitctl     = flag.String("ambitctl", cmpOr(os.Getenv("AMBIT_E2E_AMBITCTL"), "../../bin/ambitctl"), "the ambitctl binary under test (default $AMBIT_E2E_AMBITCTL or bin/ambitctl of the repository; `make build` builds it)")
)

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Ambitctl returns the path of the ambitctl binary under test.
func Ambitctl() string { return *ambitctl }

// Framework is one test's handle on the cluster.
type Framework struct {
	t      *testing.T
	Client kubernetes.Interface
	Config *rest.Config
}

// New connects to the cluster. A missing or unreachable cluster fails the
// test: an e2e test never skips.
func New(t *testing.T) *Framework {
	t.Helper()
	if *kubeconfig == "" {
		t.Fatal("no cluster: set KUBECONFIG (run `make cluster-up` or use `make test-e2e`, which brings one up)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v", *kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		t.Fatalf("cluster at %s does not answer: %v (is it up? `ambit-localcluster status`)", cfg.Host, err)
	}
	return &Framework{t: t, Client: cs, Config: cfg}
}

// Ctx returns a context bounded by the test's deadline (or 10 minutes).
func (f *Framework) Ctx() context.Context {
	d, ok := f.t.Deadline()
	if !ok {
		d = time.Now().Add(10 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), d)
	f.t.Cleanup(cancel)
	return ctx
}

// ReadyNodes returns the names of Ready nodes, sorted; it fails the test if
// fewer than min are ready.
func (f *Framework) ReadyNodes(min int) []string {
	f.t.Helper()
	nodes, err := f.Client.CoreV1().Nodes().List(f.Ctx(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				names = append(names, n.Name)
			}
		}
	}
	sort.Strings(names)
	if len(names) < min {
		f.t.Fatalf("need %d Ready nodes, have %v", min, names)
	}
	return names
}

// Namespace creates a namespace with a random suffix and deletes it when the
// test ends; if the test failed, pods, events and logs are collected first.
func (f *Framework) Namespace(prefix string, labels map[string]string) string {
	f.t.Helper()
	name := fmt.Sprintf("%s-%s", prefix, rand.String(5))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := f.Client.CoreV1().Namespaces().Create(f.Ctx(), ns, metav1.CreateOptions{}); err != nil {
		f.t.Fatalf("create namespace %s: %v", name, err)
	}
	f.t.Cleanup(func() {
		if f.t.Failed() {
			f.CollectDiagnostics(name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := f.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			f.t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// AppOptions shape a test-app pod.
type AppOptions struct {
	Node   string            // pin to this node (spec.nodeName)
	Args   []string          // ambit-testapp arguments; default: serve
	Labels map[string]string // pod labels
	// Annotations, ServiceAccount, HostNetwork and ExtraContainers let tests
	// build the special pods the mesh must leave alone.
	Annotations     map[string]string
	ServiceAccount  string
	HostNetwork     bool
	ExtraContainers []corev1.Container
	// RestartNever runs the pod once (for a client command that exits).
	RestartNever bool
}

// Server ports of `ambit-testapp serve` as deployed by TestApp.
const (
	HTTPPort = 8080
	TCPPort  = 9000
)

// TestApp creates an ambit-testapp pod (server by default) and waits until
// it is Ready (the server has a readiness probe, so kubelet probes are
// exercised too).
func (f *Framework) TestApp(ns, name string, o AppOptions) *corev1.Pod {
	f.t.Helper()
	f.CreateTestApp(ns, name, o)
	return f.WaitPodReady(ns, name, 2*time.Minute)
}

// CreateTestApp creates an ambit-testapp pod like TestApp, without waiting.
func (f *Framework) CreateTestApp(ns, name string, o AppOptions) {
	f.t.Helper()
	args := o.Args
	server := len(args) == 0
	if server {
		args = []string{"serve", "--http", fmt.Sprintf(":%d", HTTPPort), "--tcp", fmt.Sprintf(":%d", TCPPort), "--name", name}
	}
	labels := map[string]string{"app": name}
	for k, v := range o.Labels {
		labels[k] = v
	}
	c := corev1.Container{
		Name:            "app",
		Image:           *testAppImage,
		ImagePullPolicy: corev1.PullNever,
		Args:            args,
		Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"},
		}}},
	}
	if server {
		c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: HTTPPort}, {Name: "tcp", ContainerPort: TCPPort}}
		c.ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(HTTPPort)}},
			PeriodSeconds: 1,
		}
	}
	zero := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: o.Annotations},
		Spec: corev1.PodSpec{
			NodeName:                      o.Node,
			ServiceAccountName:            o.ServiceAccount,
			HostNetwork:                   o.HostNetwork,
			TerminationGracePeriodSeconds: &zero,
			Containers:                    append([]corev1.Container{c}, o.ExtraContainers...),
		},
	}
	if o.RestartNever {
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	if _, err := f.Client.CoreV1().Pods(ns).Create(f.Ctx(), pod, metav1.CreateOptions{}); err != nil {
		f.t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
}

// TestAppImage is the ambit-testapp image reference.
func TestAppImage() string { return *testAppImage }

// Service creates a ClusterIP Service selecting app=<name> on the test-app
// ports (80 -> 8080, 9000 -> 9000).
func (f *Framework) Service(ns, name string) *corev1.Service {
	f.t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(HTTPPort)},
				{Name: "tcp", Port: TCPPort, TargetPort: intstr.FromInt32(TCPPort)},
			},
		},
	}
	out, err := f.Client.CoreV1().Services(ns).Create(f.Ctx(), svc, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatalf("create service %s/%s: %v", ns, name, err)
	}
	return out
}

// WaitEndpoints waits until the Service has n ready endpoints in its
// EndpointSlices (kube-proxy and the mesh program from those).
func (f *Framework) WaitEndpoints(ns, svc string, n int) {
	f.t.Helper()
	err := f.Eventually(time.Minute, func() error {
		slices, err := f.Client.DiscoveryV1().EndpointSlices(ns).List(f.Ctx(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
		if err != nil {
			return err
		}
		ready := 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready == nil || *e.Conditions.Ready {
					ready++
				}
			}
		}
		if ready < n {
			return fmt.Errorf("service %s/%s has %d ready endpoints, want %d", ns, svc, ready, n)
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// WaitPodReady waits for the pod's Ready condition.
func (f *Framework) WaitPodReady(ns, name string, timeout time.Duration) *corev1.Pod {
	f.t.Helper()
	var pod *corev1.Pod
	err := f.Eventually(timeout, func() error {
		p, err := f.Client.CoreV1().Pods(ns).Get(f.Ctx(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("pod %s/%s is %s, not Ready", ns, name, p.Status.Phase)
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return pod
}

// Eventually polls fn until it returns nil or timeout passes.
func (f *Framework) Eventually(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Exec runs a command in a pod's container and returns stdout and stderr.
func (f *Framework) Exec(ns, pod, container string, cmd ...string) (string, string, error) {
	req := f.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(f.Config, "POST", req.URL())
	if err != nil {
		return "", "", err
	}
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(f.Ctx(), 2*time.Minute)
	defer cancel()
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		err = fmt.Errorf("exec %v in %s/%s: %w (stderr: %s)", cmd, ns, pod, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), stderr.String(), err
}

// CollectDiagnostics writes pods, events and container logs of ns to the
// artifacts directory and logs the events and log tails into the test.
func (f *Framework) CollectDiagnostics(ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := *artifacts
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "ambit-e2e-artifacts")
	}
	dir = filepath.Join(dir, strings.ReplaceAll(f.t.Name(), "/", "_"), ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Logf("diagnostics: %v", err)
		return
	}
	var summary strings.Builder
	pods, err := f.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		f.t.Logf("diagnostics: list pods in %s: %v", ns, err)
		return
	}
	for _, p := range pods.Items {
		b, _ := yaml.Marshal(p)
		_ = os.WriteFile(filepath.Join(dir, "pod-"+p.Name+".yaml"), b, 0o644)
		fmt.Fprintf(&summary, "pod %s node=%s phase=%s ip=%s\n", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
		for _, c := range p.Spec.Containers {
			raw, err := f.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
			if err != nil {
				raw = []byte("logs unavailable: " + err.Error())
			}
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("log-%s-%s.txt", p.Name, c.Name)), raw, 0o644)
			fmt.Fprintf(&summary, "--- logs %s/%s (tail)\n%s\n", p.Name, c.Name, tail(string(raw), 20))
		}
	}
	events, err := f.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		var eb strings.Builder
		for _, e := range events.Items {
			fmt.Fprintf(&eb, "%s %s %s/%s: %s\n", e.LastTimestamp.Format(time.RFC3339), e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
		}
		_ = os.WriteFile(filepath.Join(dir, "events.txt"), []byte(eb.String()), 0o644)
		summary.WriteString("--- events\n" + eb.String())
	}
	f.t.Logf("diagnostics for namespace %s (full copy in %s):\n%s", ns, dir, summary.String())
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
