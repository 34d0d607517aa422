package cniserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"ambit.dev/cni-plugin/internal/agent"
	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/cni-plugin/internal/netns"
	"ambit.dev/cni-plugin/internal/zdsserver"
	"ambit.dev/cni-plugin/internal/zdsserver/zdstest"
	"ambit.dev/pkg/enrol"
	"ambit.dev/pkg/redirect"
	"ambit.dev/pkg/zds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout only guards against a hung test; no test asserts on time.
const waitTimeout = 20 * time.Second

const node = "node-1"

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// rules records the redirection operations by netns inode.
type rules struct {
	mu        sync.Mutex
	installed map[uint64]redirect.Config
}

func ino(path string) uint64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	k, err := netns.KeyOf(f)
	if err != nil {
		return 0
	}
	return k.Ino
}

func (r *rules) Apply(_ context.Context, path string, cfg redirect.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.installed[ino(path)] = cfg
	return nil
}

func (r *rules) Check(_ context.Context, path string, _ redirect.Config) (redirect.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.installed[ino(path)]; !ok {
		return redirect.Status{Problems: []string{"IPv4: chain nat/AMBIT_PREROUTING missing"}}, nil
	}
	return redirect.Status{}, nil
}

func (r *rules) Remove(_ context.Context, path string, _ redirect.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.installed, ino(path))
	return nil
}

func (r *rules) get(i uint64) (redirect.Config, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.installed[i]
	return c, ok
}

func (r *rules) wipe() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.installed)
}

// namespaces never finds running pods (the CNI path brings its netns) and
// reports one gateway per family.
type namespaces struct{}

func (namespaces) Find(ips []netip.Addr) (*os.File, error) {
	return nil, fmt.Errorf("%w: %v", netns.ErrNotFound, ips)
}

func (namespaces) Gateways(*os.File) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("fd00:244:1::1")}, nil
}

type env struct {
	t      *testing.T
	client *fake.Clientset
	rules  *rules
	zds    *zdsserver.Server
	agent  *agent.Agent
	reg    *prometheus.Registry
	zsock  string
	cni    *cniapi.Client
	selfNS uint64
}

// start runs an agent, its ZDS server and the CNI server on temporary
// sockets until the test ends.
func start(t *testing.T, addTimeout time.Duration, objs ...runtime.Object) *env {
	t.Helper()
	r := &rules{installed: map[uint64]redirect.Config{}}
	e := startWith(t, addTimeout, r, namespaces{}, objs...)
	e.rules = r
	return e
}

// startWith is start with the given rules and namespaces.
func startWith(t *testing.T, addTimeout time.Duration, rls agent.Rules, nss agent.Namespaces, objs ...runtime.Object) *env {
	t.Helper()
	e := &env{t: t, client: fake.NewClientset(objs...), reg: prometheus.NewRegistry()}
	var err error
	e.zds, err = zdsserver.New(discard(), zdsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.agent, err = agent.New(e.client, rls, nss, e.zds, agent.Config{NodeName: node, CNIAddTimeout: addTimeout}, discard())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(discard(), e.agent, Options{Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e.zsock = filepath.Join(dir, "ztunnel.sock")
	zl, err := zds.Listen(e.zsock)
	if err != nil {
		t.Fatal(err)
	}
	csock := filepath.Join(dir, "sub", "cni.sock")
	cl, err := Listen(csock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(csock)); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("socket directory: %v, %v; want mode 0750", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = e.zds.Serve(ctx, zl) })
	wg.Go(func() { _ = e.agent.Run(ctx) })
	wg.Go(func() {
		if err := srv.Serve(ctx, cl); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-e.agent.Synced():
	case <-time.After(waitTimeout):
		t.Fatal("agent did not sync")
	}
	e.cni = cniapi.NewClient(csock, waitTimeout)
	e.selfNS = ino("/proc/self/ns/net")
	return e
}

func namespace(name string, labelled bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if labelled {
		ns.Labels = map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}
	}
	return ns
}

// newPod is a pod whose sandbox is being created: no IPs in its status yet.
func newPod(namespace, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "sa-" + name, Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
}

// request is the ADD the plugin sends for a pod; the netns is the test's
// own (as the plugin — this process — sees it).
func request(namespace, name string, ips ...string) cniapi.PodRequest {
	return cniapi.PodRequest{
		ContainerID: "sandbox-" + name, Netns: "/proc/self/ns/net", IfName: "eth0",
		PodNamespace: namespace, PodName: name, PodUID: "uid-" + name, IPs: ips,
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) addCount(enrolled string) uint64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ambit_node_agent_cni_add_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "enrolled" && l.GetValue() == enrolled {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

func TestAddOfPodOutsideTheMesh(t *testing.T) {
	e := start(t, 5*time.Second, namespace("plain", false), newPod("plain", "web"))
	resp, err := e.cni.Add(ctxT(t), request("plain", "web", "10.244.1.5"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Enrolled || !strings.Contains(resp.Reason, "not labelled") {
		t.Fatalf("Add = %+v, want not enrolled with a reason", resp)
	}
	if _, ok := e.rules.get(e.selfNS); ok {
		t.Fatal("rules installed for a pod outside the mesh")
	}
	if n := e.addCount("false"); n != 1 {
		t.Fatalf("cni_add_duration{enrolled=false} count = %d, want 1", n)
	}
}

func TestAddCapturesAndWaitsForZtunnel(t *testing.T) {
	for _, tc := range []struct {
		name string
		ips  []string
		fams []redirect.Family
	}{
		{name: "IPv4", ips: []string{"10.244.1.5"}, fams: []redirect.Family{redirect.IPv4}},
		{name: "IPv6", ips: []string{"fd00:244:1::5"}, fams: []redirect.Family{redirect.IPv6}},
		{name: "dual stack", ips: []string{"10.244.1.5", "fd00:244:1::5"}, fams: []redirect.Family{redirect.IPv4, redirect.IPv6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, 5*time.Second, namespace("demo", true), newPod("demo", "web"))
			z := zdstest.Dial(t, e.zsock, nil)
			resp, err := e.cni.Add(ctxT(t), request("demo", "web", tc.ips...))
			if err != nil {
				t.Fatal(err)
			}
			if !resp.Enrolled {
				t.Fatalf("Add = %+v, want enrolled", resp)
			}
			// By the time ADD answered, ztunnel had the netns.
			m := z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web"))
			if m.Ino != e.selfNS || m.Name != "demo/web" || m.SA != "sa-web" {
				t.Fatalf("ztunnel got %+v, want demo/web (sa-web) in netns inode %d", m, e.selfNS)
			}
			if !e.zds.Acked("uid-web") {
				t.Fatal("ADD answered before ztunnel acked")
			}
			cfg, ok := e.rules.get(e.selfNS)
			if !ok || !slices.Equal(cfg.Families, tc.fams) || len(cfg.ProbeSourceIPs) != 2 {
				t.Fatalf("rules = %+v (installed %v), want families %v and the gateways as probe sources", cfg, ok, tc.fams)
			}
			if n := e.addCount("true"); n != 1 {
				t.Fatalf("cni_add_duration{enrolled=true} count = %d, want 1", n)
			}

			// CHECK passes while captured, fails when the rules are gone.
			if _, err := e.cni.Check(ctxT(t), request("demo", "web", tc.ips...)); err != nil {
				t.Fatalf("Check of a captured pod: %v", err)
			}
			e.rules.wipe()
			if _, err := e.cni.Check(ctxT(t), request("demo", "web", tc.ips...)); err == nil || !strings.Contains(err.Error(), "not in place") {
				t.Fatalf("Check without rules = %v, want an error saying the rules are not in place", err)
			}

			// DEL forgets the sandbox.
			if _, err := e.cni.Del(ctxT(t), request("demo", "web")); err != nil {
				t.Fatal(err)
			}
			z.WaitFor(t, waitTimeout, zdstest.Is("del", "uid-web"))
			if len(e.agent.Captured()) != 0 || e.zds.Has("uid-web") {
				t.Fatalf("after DEL: captured %v, ztunnel has it: %v", e.agent.Captured(), e.zds.Has("uid-web"))
			}
			if _, err := e.cni.Check(ctxT(t), request("demo", "web", tc.ips...)); err == nil || !strings.Contains(err.Error(), "holds no netns") {
				t.Fatalf("Check after DEL = %v, want not captured", err)
			}
		})
	}
}

func TestAddFailsWhenNoZtunnelAcks(t *testing.T) {
	t.Run("no ztunnel connected", func(t *testing.T) {
		e := start(t, 300*time.Millisecond, namespace("demo", true), newPod("demo", "web"))
		_, err := e.cni.Add(ctxT(t), request("demo", "web", "10.244.1.5"))
		if err == nil || !strings.Contains(err.Error(), "demo/web is in the mesh") || !strings.Contains(err.Error(), node) ||
			!strings.Contains(err.Error(), "is the ztunnel pod running?") || !strings.Contains(err.Error(), "the runtime will retry") {
			t.Fatalf("Add = %v, want the mesh/ztunnel error", err)
		}
		if len(e.agent.Captured()) != 0 || e.zds.Has("uid-web") {
			t.Fatal("a failed ADD left the sandbox captured")
		}
	})
	t.Run("ztunnel nacks", func(t *testing.T) {
		e := start(t, 5*time.Second, namespace("demo", true), newPod("demo", "web"))
		zdstest.Dial(t, e.zsock, func(m zdstest.Msg) string {
			if m.Kind == "add" {
				return "cannot bind 15008: address in use"
			}
			return ""
		})
		_, err := e.cni.Add(ctxT(t), request("demo", "web", "fd00:244:1::5"))
		if err == nil || !strings.Contains(err.Error(), "address in use") {
			t.Fatalf("Add = %v, want ztunnel's nack", err)
		}
	})
	t.Run("ztunnel connects during the ADD", func(t *testing.T) {
		e := start(t, waitTimeout, namespace("demo", true), newPod("demo", "web"))
		done := make(chan error, 1)
		go func() {
			_, err := e.cni.Add(ctxT(t), request("demo", "web", "10.244.1.5"))
			done <- err
		}()
		e.waitUntil(func() bool { return e.zds.Has("uid-web") })
		zdstest.Dial(t, e.zsock, nil)
		if err := <-done; err != nil {
			t.Fatalf("Add with a late ztunnel: %v", err)
		}
	})
}

func (e *env) waitUntil(cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAddLooksUpNewAndRecreatedPods(t *testing.T) {
	e := start(t, 5*time.Second, namespace("demo", true))
	zdstest.Dial(t, e.zsock, nil)
	// Created after the agent synced; its ADD may come before the watch
	// event.
	if _, err := e.client.CoreV1().Pods("demo").Create(ctxT(t), newPod("demo", "fresh"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if resp, err := e.cni.Add(ctxT(t), request("demo", "fresh", "10.244.1.7")); err != nil || !resp.Enrolled {
		t.Fatalf("Add of a new pod = %+v, %v", resp, err)
	}
	// The runtime asks for another uid than the API server has.
	req := request("demo", "fresh", "10.244.1.7")
	req.PodUID = "uid-of-a-deleted-pod"
	if _, err := e.cni.Add(ctxT(t), req); err == nil || !strings.Contains(err.Error(), "recreated") {
		t.Fatalf("Add with a stale uid = %v, want a recreated-pod error", err)
	}
	if _, err := e.cni.Add(ctxT(t), request("demo", "missing", "10.244.1.8")); err == nil || !strings.Contains(err.Error(), "read pod demo/missing") {
		t.Fatalf("Add of a missing pod = %v", err)
	}
}

func TestDelOfAnOlderSandboxKeepsTheCurrentOne(t *testing.T) {
	e := start(t, 5*time.Second, namespace("demo", true), newPod("demo", "web"))
	z := zdstest.Dial(t, e.zsock, nil)
	if _, err := e.cni.Add(ctxT(t), request("demo", "web", "10.244.1.5")); err != nil {
		t.Fatal(err)
	}
	old := request("demo", "web")
	old.ContainerID = "sandbox-before"
	if _, err := e.cni.Del(ctxT(t), old); err != nil {
		t.Fatal(err)
	}
	if !e.zds.Has("uid-web") || len(e.agent.Captured()) != 1 {
		t.Fatal("the DEL of an older sandbox released the current one")
	}
	// A DEL for a pod the agent never saw succeeds.
	if resp, err := e.cni.Del(ctxT(t), request("demo", "unknown")); err != nil || resp.Enrolled {
		t.Fatalf("Del of an unknown pod = %+v, %v", resp, err)
	}
	z.Close()
}

// recorder is a Handler that records the caller's pid as resolved by open.
type recorder struct {
	pid int
}

func (r *recorder) CNIAdd(_ context.Context, req cniapi.PodRequest, open OpenFunc) (cniapi.PodResponse, error) {
	f, err := open(req.Netns)
	if err != nil {
		return cniapi.PodResponse{}, err
	}
	f.Close()
	return cniapi.PodResponse{Enrolled: true, Reason: "recorded"}, nil
}

func (r *recorder) CNIDel(context.Context, cniapi.PodRequest, OpenFunc) (cniapi.PodResponse, error) {
	return cniapi.PodResponse{}, nil
}

func (r *recorder) CNICheck(context.Context, cniapi.PodRequest, OpenFunc) (cniapi.PodResponse, error) {
	return cniapi.PodResponse{}, fmt.Errorf("pod demo/web is in the mesh but its redirection rules are not in place")
}

func TestNetnsIsOpenedInTheCallersRoot(t *testing.T) {
	h := &recorder{}
	var gotPID int
	var gotPath string
	srv, err := New(discard(), h, Options{OpenInRootOf: func(pid int, path string) (*os.File, error) {
		gotPID, gotPath = pid, path
		return netns.OpenInRootOf(pid, path)
	}})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "cni.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want 0600", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()

	c := cniapi.NewClient(sock, waitTimeout)
	resp, err := c.Add(ctxT(t), request("demo", "web"))
	if err != nil || !resp.Enrolled {
		t.Fatalf("Add = %+v, %v", resp, err)
	}
	if gotPID != os.Getpid() || gotPath != "/proc/self/ns/net" {
		t.Fatalf("opened %q in the root of pid %d, want /proc/self/ns/net in %d", gotPath, gotPID, os.Getpid())
	}
	// An error reaches the plugin with its message.
	if _, err := c.Check(ctxT(t), request("demo", "web")); err == nil || !strings.Contains(err.Error(), "not in place") {
		t.Fatalf("Check = %v", err)
	}
	// A path that is not a netns is refused.
	req := request("demo", "web")
	req.Netns = "/etc/hostname"
	if _, err := c.Add(ctxT(t), req); err == nil || !strings.Contains(err.Error(), "not a namespace") {
		t.Fatalf("Add with a non-netns path = %v", err)
	}
	// A malformed body is a 400 with a JSON error.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	hresp, err := hc.Post("http://agent"+cniapi.PathAdd, "application/json", bytes.NewReader([]byte("{")))
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	hc.CloseIdleConnections()
	if hresp.StatusCode != http.StatusBadRequest {
		t.Fatalf("malformed body: HTTP %d, want 400", hresp.StatusCode)
	}
	if n := testutil.CollectAndCount(srv.metrics.requests); n == 0 {
		t.Fatal("no request was counted")
	}
}
