package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

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

// ruleCall is one call of fakeRules.
type ruleCall struct {
	op  string
	ino uint64
	cfg redirect.Config
}

// fakeRules records rule operations by the inode of the netns path.
type fakeRules struct {
	mu        sync.Mutex
	calls     []ruleCall
	installed map[uint64]bool
	failApply error
}

func newFakeRules() *fakeRules { return &fakeRules{installed: map[uint64]bool{}} }

func inoOf(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func (r *fakeRules) do(op, path string, cfg redirect.Config) uint64 {
	ino := inoOf(path)
	r.calls = append(r.calls, ruleCall{op: op, ino: ino, cfg: cfg})
	return ino
}

func (r *fakeRules) Apply(_ context.Context, path string, cfg redirect.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ino := r.do("apply", path, cfg)
	if r.failApply != nil {
		return r.failApply
	}
	r.installed[ino] = true
	return nil
}

func (r *fakeRules) Check(_ context.Context, path string, cfg redirect.Config) (redirect.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ino := r.do("check", path, cfg)
	if !r.installed[ino] {
		return redirect.Status{Problems: []string{"IPv4: chain nat/AMBIT_OUTPUT missing"}}, nil
	}
	return redirect.Status{}, nil
}

func (r *fakeRules) Remove(_ context.Context, path string, cfg redirect.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.installed, r.do("remove", path, cfg))
	return nil
}

func (r *fakeRules) setFailApply(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failApply = err
}

func (r *fakeRules) callsOn(ino uint64) []ruleCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ruleCall
	for _, c := range r.calls {
		if c.ino == ino {
			out = append(out, c)
		}
	}
	return out
}

func (r *fakeRules) isInstalled(ino uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.installed[ino]
}

// fakeNS stands for the node's network namespaces: one temporary file per
// pod sandbox, found by IP.
type fakeNS struct {
	t    *testing.T
	dir  string
	mu   sync.Mutex
	byIP map[netip.Addr]string
	gws  []netip.Addr
}

func newFakeNS(t *testing.T) *fakeNS {
	return &fakeNS{t: t, dir: t.TempDir(), byIP: map[netip.Addr]string{},
		gws: []netip.Addr{netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("fd00:244:1::1")}}
}

// sandbox creates a "netns" holding ips and returns its inode.
func (n *fakeNS) sandbox(name string, ips ...string) uint64 {
	n.t.Helper()
	p := filepath.Join(n.dir, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		n.t.Fatal(err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ip := range ips {
		n.byIP[netip.MustParseAddr(ip)] = p
	}
	return inoOf(p)
}

func (n *fakeNS) Find(ips []netip.Addr) (*os.File, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ip := range ips {
		if p, ok := n.byIP[ip]; ok {
			return os.Open(p)
		}
	}
	return nil, fmt.Errorf("%w (looked for %v)", netns.ErrNotFound, ips)
}

func (n *fakeNS) Gateways(*os.File) ([]netip.Addr, error) { return n.gws, nil }

// env is an agent with a fake API server, fake rules and namespaces, and a
// real ZDS server on a temporary socket.
type env struct {
	t      *testing.T
	client *fake.Clientset
	agent  *Agent
	zds    *zdsserver.Server
	rules  *fakeRules
	ns     *fakeNS
	sock   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newEnv(t *testing.T, objs ...runtime.Object) *env {
	t.Helper()
	e := &env{t: t, client: fake.NewClientset(objs...), rules: newFakeRules(), ns: newFakeNS(t)}
	return e.build(e.rules, e.ns)
}

// build makes the ZDS server and the agent on rules and namespaces.
func (e *env) build(rules Rules, nss Namespaces) *env {
	t := e.t
	t.Helper()
	var err error
	var ag *Agent
	e.zds, err = zdsserver.New(discard(), zdsserver.Options{OnLive: func() { ag.EnqueueAll() }})
	if err != nil {
		t.Fatal(err)
	}
	ag, err = New(e.client, rules, nss, e.zds, Config{NodeName: node, CNIAddTimeout: 5 * time.Second}, discard())
	if err != nil {
		t.Fatal(err)
	}
	e.agent = ag
	e.sock = filepath.Join(t.TempDir(), "zds.sock")
	e.ctx, e.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		e.cancel()
		e.wg.Wait()
	})
	return e
}

// serveZDS starts the ZDS server.
func (e *env) serveZDS() {
	e.t.Helper()
	l, err := zds.Listen(e.sock)
	if err != nil {
		e.t.Fatal(err)
	}
	e.wg.Go(func() {
		if err := e.zds.Serve(e.ctx, l); err != nil {
			e.t.Errorf("zds Serve: %v", err)
		}
	})
}

// runAgent starts the agent and waits until it synced.
func (e *env) runAgent() {
	e.t.Helper()
	e.wg.Go(func() {
		if err := e.agent.Run(e.ctx); err != nil {
			e.t.Errorf("agent Run: %v", err)
		}
	})
	select {
	case <-e.agent.Synced():
	case <-time.After(waitTimeout):
		e.t.Fatal("agent did not sync")
	}
}

func (e *env) run() {
	e.serveZDS()
	e.runAgent()
}

// ztunnel connects an auto-acking test ztunnel.
func (e *env) ztunnel(nack func(zdstest.Msg) string) *zdstest.Ztunnel {
	e.t.Helper()
	return zdstest.Dial(e.t, e.sock, nack)
}

func namespace(name string, labelled bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if labelled {
		ns.Labels = map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}
	}
	return ns
}

func pod(namespace, name, nodeName string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "sa-" + name,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

// annotation returns the pod's redirection annotation and whether it is set.
func (e *env) annotation(namespace, name string) (string, bool) {
	p, err := e.client.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", false
	}
	v, ok := p.Annotations[enrol.AnnotationRedirection]
	return v, ok
}

// waitAnnotation waits until the annotation is want ("" means absent).
func (e *env) waitAnnotation(namespace, name, want string) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		v, ok := e.annotation(namespace, name)
		if (want == "" && !ok) || (want != "" && v == want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("pod %s/%s annotation = %q (set %v), want %q", namespace, name, v, ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) waitUntil(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) setNamespaceLabel(name string, labelled bool) {
	e.t.Helper()
	if _, err := e.client.CoreV1().Namespaces().Update(context.Background(), namespace(name, labelled), metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) patches(namespace, name string) int {
	n := 0
	for _, a := range e.client.Actions() {
		if a.GetVerb() == "patch" && a.GetNamespace() == namespace && a.GetResource().Resource == "pods" {
			if pa, ok := a.(interface{ GetName() string }); ok && pa.GetName() == name {
				n++
			}
		}
	}
	return n
}

func TestLabelEnrolsRunningPodAndUnlabelReleasesIt(t *testing.T) {
	e := newEnv(t,
		namespace("demo", false),
		pod("demo", "web", node, "10.244.1.5", "fd00:244:1::5"),
		pod("demo", "elsewhere", "node-2", "10.244.2.5"),
	)
	webIno := e.ns.sandbox("web", "10.244.1.5", "fd00:244:1::5")
	otherIno := e.ns.sandbox("elsewhere", "10.244.2.5")
	e.run()
	z := e.ztunnel(nil)

	e.setNamespaceLabel("demo", true)
	m := z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web"))
	if m.Ino != webIno || m.FDs != 1 || m.Name != "demo/web" || m.SA != "sa-web" {
		t.Fatalf("ztunnel got %+v, want the netns of demo/web (inode %d) with service account sa-web", m, webIno)
	}
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
	calls := e.rules.callsOn(webIno)
	if len(calls) != 1 || calls[0].op != "apply" {
		t.Fatalf("rule calls on web's netns = %+v, want one apply", calls)
	}
	wantCfg := redirect.Config{Families: []redirect.Family{redirect.IPv4, redirect.IPv6},
		ProbeSourceIPs: []netip.Addr{netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("fd00:244:1::1")}}
	if !slices.Equal(calls[0].cfg.Families, wantCfg.Families) || !slices.Equal(calls[0].cfg.ProbeSourceIPs, wantCfg.ProbeSourceIPs) {
		t.Fatalf("applied %+v, want families and probe sources of %+v", calls[0].cfg, wantCfg)
	}

	e.setNamespaceLabel("demo", false)
	z.WaitFor(t, waitTimeout, zdstest.Is("del", "uid-web"))
	e.waitAnnotation("demo", "web", "")
	// A reconcile from a cache that has not seen the annotation's removal
	// yet may remove again (idempotent); nothing is applied after.
	calls = e.rules.callsOn(webIno)
	if len(calls) < 2 {
		t.Fatalf("rule calls on web's netns = %+v, want apply then remove", calls)
	}
	for _, c := range calls[1:] {
		if c.op != "remove" || !slices.Equal(c.cfg.Families, wantCfg.Families) {
			t.Fatalf("rule calls on web's netns = %+v, want apply then remove", calls)
		}
	}
	if len(e.agent.Captured()) != 0 {
		t.Fatalf("still captured: %v", e.agent.Captured())
	}
	if c := e.rules.callsOn(otherIno); len(c) != 0 {
		t.Fatalf("a pod of another node was touched: %+v", c)
	}
	if _, ok := e.annotation("demo", "elsewhere"); ok {
		t.Fatal("a pod of another node was annotated")
	}
}

func TestPendingUntilZtunnelConnects(t *testing.T) {
	e := newEnv(t, namespace("demo", true), pod("demo", "web", node, "10.244.1.5"))
	ino := e.ns.sandbox("web", "10.244.1.5")
	e.run()
	e.waitAnnotation("demo", "web", enrol.RedirectionPending)
	if !e.rules.isInstalled(ino) {
		t.Fatal("rules are not installed while waiting for ztunnel")
	}
	// The replay of a new ztunnel carries the pod; its ack enables it.
	z := zdstest.Dial(t, e.sock, nil)
	if m := z.Next(t, waitTimeout); m.Kind != "add" || m.UID != "uid-web" || m.Ino != ino {
		t.Fatalf("first replayed request = %+v, want add uid-web", m)
	}
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
}

func TestNackLeavesPendingAndRetries(t *testing.T) {
	e := newEnv(t, namespace("demo", true), pod("demo", "web", node, "fd00:244:1::5"))
	e.ns.sandbox("web", "fd00:244:1::5")
	e.run()
	z := e.ztunnel(func(m zdstest.Msg) string {
		if m.Kind == "add" {
			return "cannot bind 15008 in netns of pod demo/web: address in use"
		}
		return ""
	})
	z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web"))
	e.waitAnnotation("demo", "web", enrol.RedirectionPending)
	z.SetNack(nil)
	z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web"))
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
}

func TestRulesFailureLeavesPendingAndRetries(t *testing.T) {
	e := newEnv(t, namespace("demo", true), pod("demo", "web", node, "10.244.1.5"))
	ino := e.ns.sandbox("web", "10.244.1.5")
	e.rules.setFailApply(errors.New("iptables: no chain/target/match by that name"))
	e.run()
	z := e.ztunnel(nil)
	e.waitAnnotation("demo", "web", enrol.RedirectionPending)
	e.rules.setFailApply(nil)
	z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web"))
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
	if !e.rules.isInstalled(ino) {
		t.Fatal("rules not installed after the retry")
	}
}

func TestRestartKeepsPodsItCannotFind(t *testing.T) {
	e := newEnv(t,
		namespace("demo", true),
		pod("demo", "a", node, "10.244.1.5"),
		pod("demo", "b", node, "10.244.1.6"), // its netns cannot be found
		pod("demo", "c", node),               // no sandbox yet: not kept
	)
	inoA := e.ns.sandbox("a", "10.244.1.5")
	// ztunnel is connected (from before the restart) while the agent starts.
	e.serveZDS()
	z := zdstest.Dial(t, e.sock, nil)
	e.runAgent()

	// The first replay mentions both running pods, b as a Keep.
	seen := map[string]zdstest.Msg{}
	for {
		m := z.Next(t, waitTimeout)
		if m.Kind == "snapshot" {
			break
		}
		seen[m.UID] = m
	}
	if seen["uid-b"].Kind != "keep" {
		t.Fatalf("replay = %v; want keep for uid-b", seen)
	}
	if k := seen["uid-a"].Kind; k != "keep" && k != "add" {
		t.Fatalf("replay = %v; want uid-a kept or added", seen)
	}
	if _, ok := seen["uid-c"]; ok {
		t.Fatalf("replay = %v; a pod without a sandbox was replayed", seen)
	}
	if seen["uid-a"].Kind == "keep" {
		if m := z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-a")); m.Ino != inoA {
			t.Fatalf("add uid-a carried inode %d, want %d", m.Ino, inoA)
		}
	}
	e.waitAnnotation("demo", "a", enrol.RedirectionEnabled)
	e.waitAnnotation("demo", "b", enrol.RedirectionPending)

	// A ztunnel connecting now (an upgrade) gets a, with its netns, and
	// still keeps b.
	z2 := zdstest.Dial(t, e.sock, nil)
	var got []string
	for {
		m := z2.Next(t, waitTimeout)
		got = append(got, m.String())
		if m.Kind == "snapshot" {
			break
		}
	}
	if want := []string{"add:uid-a", "keep:uid-b", "snapshot:"}; !slices.Equal(got, want) {
		t.Fatalf("second replay = %v, want %v", got, want)
	}
}

func TestDeletedPodIsForgotten(t *testing.T) {
	e := newEnv(t, namespace("demo", true), pod("demo", "web", node, "10.244.1.5"))
	ino := e.ns.sandbox("web", "10.244.1.5")
	e.run()
	z := e.ztunnel(nil)
	z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-web"))
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
	if err := e.client.CoreV1().Pods("demo").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	z.WaitFor(t, waitTimeout, zdstest.Is("del", "uid-web"))
	e.waitUntil("the pod is forgotten", func() bool { return len(e.agent.Captured()) == 0 && !e.zds.Has("uid-web") })
	for _, c := range e.rules.callsOn(ino) {
		if c.op == "remove" {
			t.Fatal("rules were removed from a deleted pod's netns (they die with it)")
		}
	}
}

func TestOptOutLabelReleasesPod(t *testing.T) {
	e := newEnv(t, namespace("demo", true), pod("demo", "web", node, "10.244.1.5"))
	ino := e.ns.sandbox("web", "10.244.1.5")
	e.run()
	z := e.ztunnel(nil)
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
	p, err := e.client.CoreV1().Pods("demo").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeNone}
	if _, err := e.client.CoreV1().Pods("demo").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	z.WaitFor(t, waitTimeout, zdstest.Is("del", "uid-web"))
	e.waitAnnotation("demo", "web", "")
	if e.rules.isInstalled(ino) {
		t.Fatal("rules still installed after opt-out")
	}
}

func TestAnnotationIsNotPatchedAgain(t *testing.T) {
	e := newEnv(t, namespace("demo", true), pod("demo", "web", node, "10.244.1.5"))
	e.ns.sandbox("web", "10.244.1.5")
	e.run()
	e.ztunnel(nil)
	e.waitAnnotation("demo", "web", enrol.RedirectionEnabled)
	// (It may have been pending first, if ztunnel's replay came after the
	// first reconcile.) Once the agent's cache has seen the value, more
	// events for the pod must not patch it again: a relabel of the
	// namespace, a status update, a full resync.
	e.waitUntil("the cache holds the annotation", func() bool {
		p, err := e.agent.podLister.Pods("demo").Get("web")
		return err == nil && p.Annotations[enrol.AnnotationRedirection] == enrol.RedirectionEnabled
	})
	time.Sleep(100 * time.Millisecond) // let reconciles of earlier events finish
	before := e.patches("demo", "web")
	e.setNamespaceLabel("demo", true)
	p, _ := e.client.CoreV1().Pods("demo").Get(context.Background(), "web", metav1.GetOptions{})
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
	if _, err := e.client.CoreV1().Pods("demo").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.agent.EnqueueAll()
	time.Sleep(300 * time.Millisecond) // let any (wrong) extra patch happen
	if n := e.patches("demo", "web"); n != before {
		t.Fatalf("the pod was patched %d more times after it was enabled, want 0", n-before)
	}
}

// A pod that runs to completion right after its CNI ADD: the CNI DEL of its
// sandbox can reach the agent before the informer shows the pod running.
// The agent must not go looking for the gone netns and mark the pod
// pending; it stays annotated as it was captured.
func TestShortLivedPodIsNotLeftPending(t *testing.T) {
	job := pod("demo", "job", node)
	job.Status.Phase = corev1.PodPending
	e := newEnv(t, namespace("demo", true), job)
	e.ns.sandbox("job", "10.244.1.9")
	e.run()
	z := e.ztunnel(nil)

	req := cniapi.PodRequest{ContainerID: "c1", Netns: filepath.Join(e.ns.dir, "job"), PodNamespace: "demo", PodName: "job",
		PodUID: "uid-job", IPs: []string{"10.244.1.9"}}
	if resp, err := e.agent.CNIAdd(e.ctx, req, os.Open); err != nil || !resp.Enrolled {
		t.Fatalf("CNIAdd = %+v, %v", resp, err)
	}
	z.WaitFor(t, waitTimeout, zdstest.Is("add", "uid-job"))
	e.waitAnnotation("demo", "job", enrol.RedirectionEnabled)
	if _, err := e.agent.CNIDel(e.ctx, req, os.Open); err != nil {
		t.Fatal(err)
	}
	z.WaitFor(t, waitTimeout, zdstest.Is("del", "uid-job"))
	e.ns.mu.Lock()
	delete(e.ns.byIP, netip.MustParseAddr("10.244.1.9")) // the netns is gone
	e.ns.mu.Unlock()

	running := pod("demo", "job", node, "10.244.1.9")
	running.Annotations = map[string]string{enrol.AnnotationRedirection: enrol.RedirectionEnabled}
	if _, err := e.client.CoreV1().Pods("demo").UpdateStatus(e.ctx, running, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitUntil("the agent saw the pod running", func() bool {
		p, err := e.agent.podLister.Pods("demo").Get("job")
		return err == nil && len(p.Status.PodIPs) == 1
	})
	time.Sleep(200 * time.Millisecond) // room for a wrong reconcile
	if v, _ := e.annotation("demo", "job"); v != enrol.RedirectionEnabled {
		t.Fatalf("annotation = %q after the sandbox was deleted, want it left %q", v, enrol.RedirectionEnabled)
	}
	if len(e.agent.Captured()) != 0 {
		t.Fatalf("captured after the CNI DEL: %v", e.agent.Captured())
	}
}
