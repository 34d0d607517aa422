package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	cav1alpha1 "ambit.dev/api/ca/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/ca"
	"ambit.dev/controlplane/internal/config"
	kubectrl "ambit.dev/controlplane/internal/kube"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clients pairs kube with a fake dynamic client holding no policies.
func clients(kube kubernetes.Interface) Clients {
	return Clients{Kube: kube, Dynamic: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), kubectrl.PolicyListKinds())}
}

// waitTimeout only guards against a hung test; no test asserts on time.
const waitTimeout = 60 * time.Second

func TestRunServesEverythingAndStops(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambit-system"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"ambit.dev/dataplane-mode": "ambient"}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "uid-web"},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5", PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:10:244:1::5"}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		},
	)
	cfg, err := config.Parse([]string{
		"--xds-addr=127.0.0.1:0", "--ca-addr=127.0.0.1:0", "--monitoring-addr=127.0.0.1:0",
		"--dev-plaintext-xds-addr=[::1]:0", "--serving-names=127.0.0.1",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg, clients(client), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("Run did not return after cancel")
		}
	}()
	select {
	case <-a.Listening():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	addrs := a.Addrs()
	mon := "http://" + addrs.Monitoring.String()

	// Readiness turns true once the model synced and the CA has a root.
	deadline := time.Now().Add(waitTimeout)
	for {
		code, body := get(t, mon+"/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d: %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get(t, mon+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}

	// xDS over TLS, verified with the mesh root and the Service name.
	pool := x509.NewCertPool()
	for _, r := range a.ca.Roots() {
		pool.AddCert(r)
	}
	tlsCreds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "ambit-controlplane.ambit-system.svc", MinVersion: tls.VersionTLS12})
	for _, tc := range []struct {
		name  string
		addr  string
		creds credentials.TransportCredentials
	}{
		{"TLS", addrs.XDS.String(), tlsCreds},
		{"plaintext dev port (IPv6)", addrs.DevPlaintextXDS.String(), insecure.NewCredentials()},
	} {
		t.Run("xds "+tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(tc.addr, grpc.WithTransportCredentials(tc.creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			sctx, scancel := context.WithTimeout(ctx, waitTimeout)
			defer scancel()
			s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "test"}, TypeUrl: workloadv1alpha1.AddressTypeURL, ResourceNamesSubscribe: []string{"*"}}); err != nil {
				t.Fatal(err)
			}
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "uid-web" {
				t.Fatalf("got %d resources (%v), want the workload uid-web", len(r.GetResources()), r.GetResources())
			}
			w := &workloadv1alpha1.Address{}
			if err := r.GetResources()[0].GetResource().UnmarshalTo(w); err != nil {
				t.Fatal(err)
			}
			if w.GetWorkload().GetTunnelProtocol() != workloadv1alpha1.TunnelProtocol_HBONE || len(w.GetWorkload().GetAddresses()) != 2 {
				t.Fatalf("workload = %v, want HBONE with two addresses", w)
			}
		})
	}

	t.Run("ca over TLS", func(t *testing.T) {
		conn, err := grpc.NewClient(addrs.CA.String(), grpc.WithTransportCredentials(tlsCreds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, waitTimeout)
		defer ccancel()
		_, err = cav1alpha1.NewCertificateServiceClient(conn).GetTrustBundle(cctx, &cav1alpha1.GetTrustBundleRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("GetTrustBundle without a token: %v, want Unauthenticated (over a verified TLS connection)", err)
		}
	})

	// The only replica leads and publishes the trust bundle.
	waitFor(t, "the replica leads", a.Leading)
	waitFor(t, "the trust bundle is published", func() bool { return hasRootConfigMap(client) })

	_, metrics := get(t, mon+"/metrics")
	for _, m := range []string{"ambit_xds_connected_clients", "ambit_xds_pushes_total", "ambit_model_addresses{kind=\"workload\"} 1", "process_resident_memory_bytes", "ambit_controlplane_leader 1"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics has no %s", m)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunFailsOnBusyPort(t *testing.T) {
	cfg, err := config.Parse([]string{"--xds-addr=127.0.0.1:0", "--ca-addr=127.0.0.1:0", "--monitoring-addr=127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	first, err := New(cfg, clients(fake.NewClientset()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-first.Listening()

	cfg.XDSAddr = first.Addrs().XDS.String()
	second, err := New(cfg, clients(fake.NewClientset()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = second.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--xds-addr") {
		t.Fatalf("Run on a busy port: %v, want an error naming --xds-addr", err)
	}
}

// waitFor polls cond until it holds; the bound only catches a hung test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasRootConfigMap(client kubernetes.Interface) bool {
	cm, err := client.CoreV1().ConfigMaps("ambit-system").Get(context.Background(), ca.RootConfigMapName, metav1.GetOptions{})
	return err == nil && cm.Data[ca.KeyRootCert] != ""
}

// recordingKube is one replica's view of a shared fake API server: it
// counts the ConfigMap writes this replica makes.
type recordingKube struct {
	kubernetes.Interface
	cmWrites *atomic.Int32
}

func (k recordingKube) CoreV1() typedcorev1.CoreV1Interface {
	return recordingCore{k.Interface.CoreV1(), k.cmWrites}
}

type recordingCore struct {
	typedcorev1.CoreV1Interface
	cmWrites *atomic.Int32
}

func (c recordingCore) ConfigMaps(ns string) typedcorev1.ConfigMapInterface {
	return recordingConfigMaps{c.CoreV1Interface.ConfigMaps(ns), c.cmWrites}
}

type recordingConfigMaps struct {
	typedcorev1.ConfigMapInterface
	n *atomic.Int32
}

func (c recordingConfigMaps) Create(ctx context.Context, cm *corev1.ConfigMap, o metav1.CreateOptions) (*corev1.ConfigMap, error) {
	c.n.Add(1)
	return c.ConfigMapInterface.Create(ctx, cm, o)
}

func (c recordingConfigMaps) Update(ctx context.Context, cm *corev1.ConfigMap, o metav1.UpdateOptions) (*corev1.ConfigMap, error) {
	c.n.Add(1)
	return c.ConfigMapInterface.Update(ctx, cm, o)
}

func (c recordingConfigMaps) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, o metav1.PatchOptions, sub ...string) (*corev1.ConfigMap, error) {
	c.n.Add(1)
	return c.ConfigMapInterface.Patch(ctx, name, pt, data, o, sub...)
}

func (c recordingConfigMaps) Apply(ctx context.Context, cm *corev1ac.ConfigMapApplyConfiguration, o metav1.ApplyOptions) (*corev1.ConfigMap, error) {
	c.n.Add(1)
	return c.ConfigMapInterface.Apply(ctx, cm, o)
}

func (c recordingConfigMaps) Delete(ctx context.Context, name string, o metav1.DeleteOptions) error {
	c.n.Add(1)
	return c.ConfigMapInterface.Delete(ctx, name, o)
}

// replica is an App started by startReplica.
type replica struct {
	app      *App
	cmWrites atomic.Int32
	cancel   context.CancelFunc
	done     chan error
}

func startReplica(t *testing.T, shared *fake.Clientset, pod string) *replica {
	t.Helper()
	env := config.Env{
		Getenv:   func(k string) string { return map[string]string{config.EnvPodName: pod}[k] },
		Hostname: func() (string, error) { return pod, nil },
	}
	cfg, err := config.ParseEnv([]string{"--xds-addr=127.0.0.1:0", "--ca-addr=[::1]:0", "--monitoring-addr=127.0.0.1:0"}, io.Discard, env)
	if err != nil {
		t.Fatal(err)
	}
	// Fast handover for the test; a release on shutdown hands over within
	// about one RetryPeriod.
	cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod = 5*time.Second, 2*time.Second, 50*time.Millisecond
	r := &replica{done: make(chan error, 1)}
	r.app, err = New(cfg, clients(recordingKube{shared, &r.cmWrites}), slog.New(slog.DiscardHandler).With("pod", pod))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.app.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("%s: Run: %v", pod, err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("%s: Run did not return after cancel", pod)
		}
	}
	r.cancel = stop
	t.Cleanup(stop)
	return r
}

func (r *replica) ready() bool { ok, _ := r.app.Ready(); return ok }

// TestTwoReplicas runs two control planes on one API server: both serve
// (ready), only the Lease holder writes the trust bundle ConfigMap, and
// when it shuts down the other takes over and writes it.
func TestTwoReplicas(t *testing.T) {
	shared := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ambit-system"}})
	a := startReplica(t, shared, "cp-a")
	waitFor(t, "cp-a leads and published the trust bundle", func() bool { return a.app.Leading() && hasRootConfigMap(shared) })
	b := startReplica(t, shared, "cp-b")
	waitFor(t, "cp-b is ready (without leading)", b.ready)
	if b.app.Leading() {
		t.Fatal("cp-b leads while cp-a holds the Lease")
	}
	if !a.ready() {
		t.Fatal("cp-a is not ready")
	}
	if n := b.cmWrites.Load(); n != 0 {
		t.Fatalf("cp-b, not leading, made %d ConfigMap writes", n)
	}
	if !sameRoots(a.app.ca.Roots(), b.app.ca.Roots()) {
		t.Fatal("the replicas sign under different roots")
	}

	// cp-a shuts down; cp-b takes over and writes the bundle again (the
	// ConfigMap is deleted first so that its write is visible).
	a.cancel()
	if err := shared.CoreV1().ConfigMaps("ambit-system").Delete(context.Background(), ca.RootConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cp-b leads", b.app.Leading)
	waitFor(t, "cp-b published the trust bundle", func() bool { return b.cmWrites.Load() > 0 && hasRootConfigMap(shared) })
	lease, err := shared.CoordinationV1().Leases("ambit-system").Get(context.Background(), "ambit-controlplane", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h == nil || *h != "cp-b" {
		t.Fatalf("Lease holder %v, want cp-b", h)
	}
	if !b.ready() {
		t.Error("cp-b is not ready after taking over")
	}
}

func sameRoots(a, b []*x509.Certificate) bool {
	if len(a) == 0 || len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
