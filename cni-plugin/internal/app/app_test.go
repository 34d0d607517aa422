package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"ambit.dev/cni-plugin/internal/config"
	"ambit.dev/cni-plugin/internal/netns"
	"ambit.dev/cni-plugin/internal/zdsserver/zdstest"
	"ambit.dev/pkg/enrol"
	"ambit.dev/pkg/redirect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 20 * time.Second

type rules struct {
	mu    sync.Mutex
	calls []string
}

func (r *rules) rec(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, op)
}

func (r *rules) Apply(context.Context, string, redirect.Config) error { r.rec("apply"); return nil }
func (r *rules) Check(context.Context, string, redirect.Config) (redirect.Status, error) {
	r.rec("check")
	return redirect.Status{}, nil
}
func (r *rules) Remove(context.Context, string, redirect.Config) error { r.rec("remove"); return nil }

func (r *rules) ops() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

type namespaces struct{ path string }

func (n namespaces) Find(ips []netip.Addr) (*os.File, error) {
	if len(ips) == 1 && ips[0] == netip.MustParseAddr("10.244.1.5") {
		return os.Open(n.path)
	}
	return nil, fmt.Errorf("%w: %v", netns.ErrNotFound, ips)
}

func (namespaces) Gateways(*os.File) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("10.244.1.1")}, nil
}

type installer struct {
	installed chan struct{}
	ran       chan struct{}
}

func (i *installer) Install(context.Context) error { close(i.installed); return nil }
func (i *installer) Run(ctx context.Context) error {
	close(i.ran)
	<-ctx.Done()
	return nil
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

func TestRunServesAndShutsDownWithoutUnenrolling(t *testing.T) {
	dir := t.TempDir()
	sandbox := filepath.Join(dir, "netns-web")
	if err := os.WriteFile(sandbox, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]string{
		"--node-name=node-1",
		"--zds-socket=" + filepath.Join(dir, "run", "ztunnel.sock"),
		"--cni-socket=" + filepath.Join(dir, "run", "cni.sock"),
		"--ready-addr=127.0.0.1:0", "--metrics-addr=127.0.0.1:0", "--install-cni=false",
	}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}}},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web", UID: "uid-web"},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}}},
		})
	r := &rules{}
	inst := &installer{installed: make(chan struct{}), ran: make(chan struct{})}
	a, err := New(cfg, client, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{
		Installer: inst, Rules: r, Namespaces: namespaces{path: sandbox},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	addrs, err := a.Addrs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan struct{}{inst.installed, inst.ran} {
		select {
		case <-ch:
		case <-time.After(waitTimeout):
			t.Fatal("the installer hook was not called")
		}
	}
	ready := "http://" + addrs.Ready.String() + "/healthz/ready"
	deadline := time.Now().Add(waitTimeout)
	for {
		code, body := get(t, ready)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %d %s", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fi, err := os.Stat(filepath.Join(dir, "run")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("socket directory: %v %v, want 0750", fi, err)
	}
	if code, _ := get(t, "http://"+addrs.Ready.String()+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("the ready port serves /metrics (HTTP %d); it must serve only /healthz/ready", code)
	}

	z := zdstest.Dial(t, cfg.ZDSSocket, nil)
	z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web"))
	deadline = time.Now().Add(waitTimeout)
	for {
		p, err := client.CoreV1().Pods("demo").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && p.Annotations[enrol.AnnotationRedirection] == enrol.RedirectionEnabled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pod never annotated enabled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, metrics := get(t, "http://"+addrs.Metrics.String()+"/metrics")
	for _, name := range []string{
		"ambit_node_agent_captures_total 1", "ambit_node_agent_captured_pods 1",
		"ambit_node_agent_zds_live_sessions 1", `ambit_node_agent_reconciles_total{result="success"}`,
	} {
		if !strings.Contains(metrics, name) {
			t.Errorf("metrics lack %q", name)
		}
	}

	// SIGTERM: everything stops; ztunnel is told nothing, no rule removed.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
	}
	for m := range z.Msgs {
		if m.Kind == "del" {
			t.Fatalf("shutdown sent %v to ztunnel", m)
		}
	}
	for _, op := range r.ops() {
		if op == "remove" {
			t.Fatal("shutdown removed rules")
		}
	}
}
