//go:build e2e

package tests

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"ambit.dev/e2e/framework"
)

const (
	labelMode       = "ambit.dev/dataplane-mode"
	annoRedirection = "ambit.dev/redirection"
	ztMetricsPort   = 15020
)

// daemonPods waits until DaemonSet name runs a Ready pod on every node and
// returns the pod per node.
func daemonPods(t *testing.T, f *framework.Framework, name string, nodes []string) map[string]*corev1.Pod {
	t.Helper()
	var byNode map[string]*corev1.Pod
	err := f.Eventually(3*time.Minute, func() error {
		pods, err := f.Client.CoreV1().Pods(systemNS).List(f.Ctx(), metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		byNode = map[string]*corev1.Pod{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				byNode[p.Spec.NodeName] = &p
			}
		}
		for _, n := range nodes {
			if byNode[n] == nil {
				return fmt.Errorf("no ready %s pod on node %s", name, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return byNode
}

// restartDaemon deletes every pod of DaemonSet name and waits for new Ready
// ones on every node.
func restartDaemon(t *testing.T, f *framework.Framework, name string, nodes []string) {
	t.Helper()
	old := daemonPods(t, f, name, nodes)
	for _, p := range old {
		if err := f.Client.CoreV1().Pods(systemNS).Delete(f.Ctx(), p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	err := f.Eventually(3*time.Minute, func() error {
		now := daemonPods(t, f, name, nodes)
		for n, p := range now {
			if p.UID == old[n].UID {
				return fmt.Errorf("%s pod on %s not replaced yet", name, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func serviceAccount(t *testing.T, f *framework.Framework, ns, name string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := f.Client.CoreV1().ServiceAccounts(ns).Create(f.Ctx(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func setNamespaceLabel(t *testing.T, f *framework.Framework, ns string, value *string) {
	t.Helper()
	v := "null"
	if value != nil {
		v = fmt.Sprintf("%q", *value)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, labelMode, v)
	if _, err := f.Client.CoreV1().Namespaces().Patch(f.Ctx(), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
}

// waitRedirection waits until the pod's ambit.dev/redirection annotation is
// want ("" = absent) and returns the pod.
func waitRedirection(t *testing.T, f *framework.Framework, ns, name, want string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := f.Eventually(time.Minute, func() error {
		p, err := f.Client.CoreV1().Pods(ns).Get(f.Ctx(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		if got := p.Annotations[annoRedirection]; got != want {
			return fmt.Errorf("pod %s/%s: %s=%q, want %q", ns, name, annoRedirection, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// rules returns the Ambit rules in the pod's netns.
func rules(t *testing.T, f *framework.Framework, pod *corev1.Pod) []string {
	t.Helper()
	r, err := framework.AmbitRules(pod.Status.PodIP)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func waitRules(t *testing.T, f *framework.Framework, pod *corev1.Pod, present bool) []string {
	t.Helper()
	var got []string
	err := f.Eventually(time.Minute, func() error {
		got = rules(t, f, pod)
		if present == (len(got) > 0) {
			return nil
		}
		return fmt.Errorf("pod %s/%s has %d Ambit rules in its netns, want them present=%v", pod.Namespace, pod.Name, len(got), present)
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// connKey selects ztunnel's istio_tcp_connections_opened_total series of
// one side (reporter) between two pods, each matched by workload name or
// principal (a brand-new pod's name may not be known to the peer's ztunnel
// yet; its principal, proved by its certificate, always is).
type connKey struct{ reporter, srcName, srcID, dstName, dstID string }

// opened returns the connections counted for k, mTLS and not.
func opened(t *testing.T, f *framework.Framework, nodeIP string, k connKey) (mtls, other float64) {
	t.Helper()
	m, err := framework.Metrics(fmt.Sprintf("http://%s:%d/metrics", nodeIP, ztMetricsPort))
	if err != nil {
		t.Fatalf("ztunnel metrics on %s: %v", nodeIP, err)
	}
	for _, s := range m["istio_tcp_connections_opened_total"] {
		l := s.Metric
		if string(l["reporter"]) != k.reporter {
			continue
		}
		if string(l["source_workload"]) != k.srcName && string(l["source_principal"]) != k.srcID {
			continue
		}
		if string(l["destination_workload"]) != k.dstName && string(l["destination_principal"]) != k.dstID {
			continue
		}
		if l["connection_security_policy"] == model.LabelValue("mutual_tls") {
			mtls += float64(s.Value)
		} else {
			other += float64(s.Value)
		}
	}
	return mtls, other
}

func principalsSeen(t *testing.T, f *framework.Framework, nodeIP, reporter, src, dst string) []string {
	t.Helper()
	m, err := framework.Metrics(fmt.Sprintf("http://%s:%d/metrics", nodeIP, ztMetricsPort))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range m["istio_tcp_connections_opened_total"] {
		l := s.Metric
		if string(l["reporter"]) == reporter && string(l["source_workload"]) == src && string(l["destination_workload"]) == dst {
			out = append(out, string(l["source_principal"])+" -> "+string(l["destination_principal"]))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tcpExchange runs `ambit-testapp tcp` in a pod against addr and returns the
// peer the server saw, or the error.
func tcpExchange(f *framework.Framework, ns, pod, addr string) (string, error) {
	out, _, err := f.Exec(ns, pod, "app", "ambit-testapp", "tcp", "--timeout", "3s", addr)
	if err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(out, "\n")
	peer, ok := strings.CutPrefix(first, "peer=")
	if !ok {
		return "", fmt.Errorf("unexpected reply %q", out)
	}
	return peer, nil
}

// serverConnections counts the "tcp connection" lines of the test app
// server's log that come from ip.
func serverConnections(t *testing.T, f *framework.Framework, ns, pod, ip string) int {
	t.Helper()
	raw, err := f.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "app"}).DoRaw(f.Ctx())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.Contains(l, "tcp connection") && strings.Contains(l, ip) {
			n++
		}
	}
	return n
}

// TestEnrolment installs Ambit (control plane, ztunnel, node agent) and
// checks the node agent's promise: labelling a namespace captures its
// running pods without restart, new pods are captured before their app
// runs, restarts lose nothing, nothing leaves in plaintext when ztunnel is
// down, pods that must be left alone are, and removing the label undoes it.
func TestEnrolment(t *testing.T) {
	f := framework.New(t)
	nodes := f.ReadyNodes(2)
	install(t, f)
	waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
	zt := daemonPods(t, f, "ztunnel", nodes)
	daemonPods(t, f, "ambit-node-agent", nodes)
	serverNodeIP, clientNodeIP := zt[nodes[0]].Status.HostIP, zt[nodes[1]].Status.HostIP

	ns := f.Namespace("enrol", nil)
	for _, sa := range []string{"server", "client", "fresh"} {
		serviceAccount(t, f, ns, sa)
	}
	server := f.TestApp(ns, "server", framework.AppOptions{Node: nodes[0], ServiceAccount: "server"})
	client := f.TestApp(ns, "client", framework.AppOptions{Node: nodes[1], ServiceAccount: "client", Args: []string{"sleep"}})
	url := fmt.Sprintf("http://%s:%d/", server.Status.PodIP, framework.HTTPPort)
	tcpAddr := fmt.Sprintf("%s:%d", server.Status.PodIP, framework.TCPPort)
	serverID := "spiffe://cluster.local/ns/" + ns + "/sa/server"
	clientID := "spiffe://cluster.local/ns/" + ns + "/sa/client"
	hbone := connKey{reporter: "destination", srcName: "client", srcID: clientID, dstName: "server", dstID: serverID}

	t.Run("plaintext before the label", func(t *testing.T) {
		if r := get(t, f, ns, client.Name, url); peerIP(t, r.Peer) != client.Status.PodIP {
			t.Fatalf("server saw %s, want the client pod IP %s", r.Peer, client.Status.PodIP)
		}
		if got := rules(t, f, server); len(got) != 0 {
			t.Fatalf("unenrolled server has Ambit rules: %v", got)
		}
		if mtls, _ := opened(t, f, serverNodeIP, hbone); mtls != 0 {
			t.Fatalf("ztunnel counted %v mTLS connections before enrolment", mtls)
		}
	})

	ambient := "ambient"
	t.Run("label enrols running pods without restart, traffic goes over HBONE", func(t *testing.T) {
		setNamespaceLabel(t, f, ns, &ambient)
		for _, p := range []*corev1.Pod{server, client} {
			now := waitRedirection(t, f, ns, p.Name, "enabled")
			if now.UID != p.UID || now.Status.ContainerStatuses[0].RestartCount != 0 {
				t.Fatalf("pod %s was restarted or replaced (uid %s -> %s, restarts %d)", p.Name, p.UID, now.UID, now.Status.ContainerStatuses[0].RestartCount)
			}
			waitRules(t, f, p, true)
		}
		before, _ := opened(t, f, serverNodeIP, hbone)
		// The control plane publishes the pods as HBONE shortly after the
		// label; until then the client's ztunnel sends to the server's
		// inbound plaintext port. Retry until a connection is mTLS.
		err := f.Eventually(time.Minute, func() error {
			r := get(t, f, ns, client.Name, url)
			if peerIP(t, r.Peer) != client.Status.PodIP {
				t.Fatalf("server saw %s, want the client pod IP %s", r.Peer, client.Status.PodIP)
			}
			if mtls, _ := opened(t, f, serverNodeIP, hbone); mtls <= before {
				return fmt.Errorf("no new mTLS connection from client to server counted by the server's ztunnel")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{clientID + " -> " + serverID}
		if got := principalsSeen(t, f, serverNodeIP, "destination", "client", "server"); !slices.Equal(got, want) {
			t.Fatalf("server-side ztunnel principals %v, want %v", got, want)
		}
		if got := principalsSeen(t, f, clientNodeIP, "source", "client", "server"); !slices.Contains(got, clientID+" -> "+serverID) {
			t.Fatalf("client-side ztunnel principals %v, want %s -> %s", got, clientID, serverID)
		}
	})

	t.Run("kubelet probes keep passing", func(t *testing.T) {
		time.Sleep(3 * time.Second) // several probe periods (1s) after enrolment
		p := f.WaitPodReady(ns, server.Name, 10*time.Second)
		if p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Fatalf("server restarted %d times", p.Status.ContainerStatuses[0].RestartCount)
		}
	})

	t.Run("new pod is captured before its app runs", func(t *testing.T) {
		// The pod's only command is one TCP exchange with the server, at
		// start: it must already travel over HBONE.
		f.CreateTestApp(ns, "fresh", framework.AppOptions{Node: nodes[1], ServiceAccount: "fresh", RestartNever: true,
			Args: []string{"tcp", "--timeout", "20s", tcpAddr}})
		var pod *corev1.Pod
		err := f.Eventually(2*time.Minute, func() error {
			p, err := f.Client.CoreV1().Pods(ns).Get(f.Ctx(), "fresh", metav1.GetOptions{})
			if err != nil {
				return err
			}
			pod = p
			if p.Status.Phase != corev1.PodSucceeded {
				return fmt.Errorf("pod fresh is %s", p.Status.Phase)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Annotations[annoRedirection] != "enabled" {
			t.Fatalf("pod fresh: %s=%q, want enabled", annoRedirection, pod.Annotations[annoRedirection])
		}
		freshID := "spiffe://cluster.local/ns/" + ns + "/sa/fresh"
		mtls, other := opened(t, f, serverNodeIP, connKey{reporter: "destination", srcName: "fresh", srcID: freshID, dstName: "server", dstID: serverID})
		if mtls != 1 || other != 0 {
			t.Fatalf("server-side ztunnel counted %v mTLS and %v other connections from the new pod, want exactly 1 mTLS", mtls, other)
		}
	})

	t.Run("pods left alone: opt-out, hostNetwork, istio-proxy sidecar", func(t *testing.T) {
		optout := f.TestApp(ns, "optout", framework.AppOptions{Node: nodes[1], Args: []string{"sleep"}, Labels: map[string]string{labelMode: "none"}})
		sidecar := f.TestApp(ns, "sidecar", framework.AppOptions{Node: nodes[1], Args: []string{"sleep"},
			ExtraContainers: []corev1.Container{{Name: "istio-proxy", Image: framework.TestAppImage(), ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"}}}})
		hostnet := f.TestApp(ns, "hostnet", framework.AppOptions{Node: nodes[1], Args: []string{"sleep"}, HostNetwork: true})
		time.Sleep(2 * time.Second) // give the agent a chance to (wrongly) act
		for _, p := range []*corev1.Pod{optout, sidecar, hostnet} {
			now, err := f.Client.CoreV1().Pods(ns).Get(f.Ctx(), p.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := now.Annotations[annoRedirection]; ok {
				t.Errorf("pod %s got %s=%s", p.Name, annoRedirection, v)
			}
		}
		for _, p := range []*corev1.Pod{optout, sidecar} {
			if got := rules(t, f, p); len(got) != 0 {
				t.Errorf("pod %s has Ambit rules: %v", p.Name, got)
			}
		}
		// The opted-out pod still reaches the enrolled server (plaintext,
		// accepted by the server's ztunnel in PERMISSIVE mode).
		if peer, err := tcpExchange(f, ns, optout.Name, tcpAddr); err != nil || peerIP(t, peer) != optout.Status.PodIP {
			t.Fatalf("opt-out pod -> server: peer %q, %v", peer, err)
		}
	})

	t.Run("ztunnel and node agent restarts keep pods enrolled, rules not duplicated", func(t *testing.T) {
		before := rules(t, f, server)
		restartDaemon(t, f, "ambit-node-agent", nodes)
		restartDaemon(t, f, "ztunnel", nodes)
		for _, p := range []*corev1.Pod{server, client} {
			waitRedirection(t, f, ns, p.Name, "enabled")
		}
		if after := rules(t, f, server); !slices.Equal(after, before) {
			t.Fatalf("server rules changed across restarts:\nbefore %v\nafter  %v", before, after)
		}
		mtls, _ := opened(t, f, serverNodeIP, hbone) // counters restart with ztunnel
		err := f.Eventually(time.Minute, func() error {
			get(t, f, ns, client.Name, url)
			if now, _ := opened(t, f, serverNodeIP, hbone); now <= mtls {
				return fmt.Errorf("no mTLS connection counted after the restarts")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("control plane away: established and new mTLS connections keep working", func(t *testing.T) {
		// A connection established before the outage and still open after.
		slow := make(chan error, 1)
		go func() {
			out, _, err := f.Exec(ns, client.Name, "app", "ambit-testapp", "get", "--timeout", "90s", url+"delay/30000")
			if err == nil && !strings.Contains(out, client.Status.PodIP) {
				err = fmt.Errorf("slow request answered %q, without the client's IP as peer", out)
			}
			slow <- err
		}()
		time.Sleep(time.Second)
		scaleControlPlane(t, f, 0)
		t.Cleanup(func() { scaleControlPlane(t, f, 1) })
		if err := f.Eventually(2*time.Minute, func() error {
			if n := len(controlPlanePods(t, f)); n > 0 {
				return fmt.Errorf("%d control plane pods still exist", n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// New connections between known pods: still mTLS.
		before, _ := opened(t, f, serverNodeIP, hbone)
		if r := get(t, f, ns, client.Name, url); peerIP(t, r.Peer) != client.Status.PodIP {
			t.Fatalf("server saw %s, want %s", r.Peer, client.Status.PodIP)
		}
		if after, _ := opened(t, f, serverNodeIP, hbone); after <= before {
			t.Fatalf("no new mTLS connection counted while the control plane was away (%v -> %v)", before, after)
		}
		scaleControlPlane(t, f, 1)
		waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
		if err := <-slow; err != nil {
			t.Fatalf("connection established before the outage: %v", err)
		}
	})

	t.Run("ztunnel down: enrolled pods fail closed, new pods wait", func(t *testing.T) {
		setZtunnelScheduling(t, f, false)
		restored := false
		t.Cleanup(func() {
			if !restored {
				setZtunnelScheduling(t, f, true)
			}
		})
		waitNoPods(t, f, "ztunnel")
		seen := serverConnections(t, f, ns, server.Name, client.Status.PodIP)
		for range 3 {
			if peer, err := tcpExchange(f, ns, client.Name, tcpAddr); err == nil {
				t.Fatalf("client reached the server with ztunnel down (server saw %s)", peer)
			}
		}
		if now := serverConnections(t, f, ns, server.Name, client.Status.PodIP); now != seen {
			t.Fatalf("server logged %d new connections from the client while ztunnel was down", now-seen)
		}
		// A new pod of the namespace cannot start without ztunnel.
		f.CreateTestApp(ns, "waiting", framework.AppOptions{Node: nodes[0], Args: []string{"sleep"}})
		waitSandboxFailure(t, f, ns, "waiting", "ztunnel")
		setZtunnelScheduling(t, f, true)
		restored = true
		daemonPods(t, f, "ztunnel", nodes)
		waiting := f.WaitPodReady(ns, "waiting", 2*time.Minute)
		if waiting.Annotations[annoRedirection] != "enabled" {
			waitRedirection(t, f, ns, "waiting", "enabled")
		}
		if err := f.Eventually(time.Minute, func() error {
			_, err := tcpExchange(f, ns, client.Name, tcpAddr)
			return err
		}); err != nil {
			t.Fatalf("client -> server after ztunnel is back: %v", err)
		}
	})

	t.Run("node agent down: enrolled pods keep mTLS, pods outside the mesh start, mesh pods wait", func(t *testing.T) {
		setDaemonScheduling(t, f, "ambit-node-agent", false)
		restored := false
		t.Cleanup(func() {
			if !restored {
				setDaemonScheduling(t, f, "ambit-node-agent", true)
			}
		})
		waitNoPods(t, f, "ambit-node-agent")
		before, _ := opened(t, f, serverNodeIP, hbone)
		get(t, f, ns, client.Name, url)
		if after, _ := opened(t, f, serverNodeIP, hbone); after <= before {
			t.Fatal("no mTLS connection counted while the node agent was away")
		}
		// The plugin stays installed and decides from the API server.
		plain := f.Namespace("plain", nil)
		f.TestApp(plain, "outside", framework.AppOptions{Node: nodes[0], Args: []string{"sleep"}})
		f.CreateTestApp(ns, "meshpod", framework.AppOptions{Node: nodes[0], Args: []string{"sleep"}})
		waitSandboxFailure(t, f, ns, "meshpod", "ambit-node-agent")
		setDaemonScheduling(t, f, "ambit-node-agent", true)
		restored = true
		daemonPods(t, f, "ambit-node-agent", nodes)
		f.WaitPodReady(ns, "meshpod", 2*time.Minute)
		waitRedirection(t, f, ns, "meshpod", "enabled")
	})

	t.Run("removing the label: plaintext again, rules gone", func(t *testing.T) {
		setNamespaceLabel(t, f, ns, nil)
		for _, p := range []*corev1.Pod{server, client} {
			waitRedirection(t, f, ns, p.Name, "")
			waitRules(t, f, p, false)
		}
		before, _ := opened(t, f, serverNodeIP, hbone)
		r := get(t, f, ns, client.Name, url)
		if peerIP(t, r.Peer) != client.Status.PodIP {
			t.Fatalf("server saw %s, want %s", r.Peer, client.Status.PodIP)
		}
		if after, _ := opened(t, f, serverNodeIP, hbone); after != before {
			t.Fatalf("mTLS connections still counted after unlabelling (%v -> %v)", before, after)
		}
	})
}

// waitNoPods waits until DaemonSet name has no pod left.
func waitNoPods(t *testing.T, f *framework.Framework, name string) {
	t.Helper()
	if err := f.Eventually(2*time.Minute, func() error {
		pods, err := f.Client.CoreV1().Pods(systemNS).List(f.Ctx(), metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d %s pods still exist", len(pods.Items), name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitSandboxFailure waits for a FailedCreatePodSandBox event of pod name
// whose message contains want.
func waitSandboxFailure(t *testing.T, f *framework.Framework, ns, name, want string) {
	t.Helper()
	if err := f.Eventually(time.Minute, func() error {
		evs, err := f.Client.CoreV1().Events(ns).List(f.Ctx(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "FailedCreatePodSandBox" && strings.Contains(e.Message, want) {
				return nil
			}
		}
		return fmt.Errorf("no FailedCreatePodSandBox event mentioning %q for pod %s", want, name)
	}); err != nil {
		t.Fatal(err)
	}
	if p, err := f.Client.CoreV1().Pods(ns).Get(f.Ctx(), name, metav1.GetOptions{}); err != nil || p.Status.Phase == corev1.PodRunning {
		t.Fatalf("pod %s started (%v)", name, err)
	}
}

// setZtunnelScheduling removes every ztunnel pod (a node selector no node
// has) or lets them back.
func setZtunnelScheduling(t *testing.T, f *framework.Framework, run bool) {
	t.Helper()
	setDaemonScheduling(t, f, "ztunnel", run)
}

// setDaemonScheduling removes every pod of DaemonSet name, or lets them back.
func setDaemonScheduling(t *testing.T, f *framework.Framework, name string, run bool) {
	t.Helper()
	sel := `{"ambit.dev/e2e-no-such-node":"true"}`
	if run {
		sel = "null"
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":%s}}}}`, sel)
	if _, err := f.Client.AppsV1().DaemonSets(systemNS).Patch(f.Ctx(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch %s DaemonSet: %v", name, err)
	}
}

// TestUninstallLeavesNodesClean installs and uninstalls Ambit, then checks
// that a pod of a namespace still labelled ambient starts normally: the node
// agent took its CNI plugin out of the nodes' configuration.
func TestUninstallLeavesNodesClean(t *testing.T) {
	f := framework.New(t)
	nodes := f.ReadyNodes(2)
	t.Run("install", func(t *testing.T) {
		install(t, f)
		waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
		daemonPods(t, f, "ztunnel", nodes)
		daemonPods(t, f, "ambit-node-agent", nodes)
	}) // the subtest's cleanup uninstalls
	if err := f.Eventually(2*time.Minute, func() error {
		_, err := f.Client.CoreV1().Namespaces().Get(f.Ctx(), systemNS, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("namespace %s still exists (%v)", systemNS, err)
	}); err != nil {
		t.Fatal(err)
	}
	ns := f.Namespace("after", map[string]string{labelMode: "ambient"})
	for _, n := range nodes {
		name := "after-" + strings.ReplaceAll(n, ".", "-")
		p := f.TestApp(ns, name, framework.AppOptions{Node: n})
		if _, ok := p.Annotations[annoRedirection]; ok {
			t.Fatalf("pod %s annotated after uninstall", name)
		}
		if got := rules(t, f, p); len(got) != 0 {
			t.Fatalf("pod %s has Ambit rules after uninstall: %v", name, got)
		}
	}
}
