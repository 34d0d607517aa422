//go:build e2e

package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"ambit.dev/e2e/framework"
)

const (
	manifestPath = "../../deploy/manifests/ambit.yaml"
	systemNS     = "ambit-system"
	fieldManager = "ambit-e2e"
)

// ztWorkload and ztCert are the parts of `ztunnel-admin workloads|certs -o
// json` the test reads.
type ztWorkload struct {
	UID       string   `json:"uid"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Node      string   `json:"node"`
	Protocol  string   `json:"protocol"`
	Addresses []string `json:"addresses"`
}

type ztCert struct {
	Identity string `json:"identity"`
	State    string `json:"state"`
}

// install applies the manifests in file order with server-side apply and
// removes everything it applied when the test ends (the namespace last,
// waiting until it is gone so that a next run starts clean).
func install(t *testing.T, f *framework.Framework) {
	t.Helper()
	raw, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatalf("read %s: %v", manifestPath, err)
	}
	dyn, err := dynamic.NewForConfig(f.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(f.Client.Discovery()))
	type applied struct {
		gvr       schema.GroupVersionResource
		namespace string
		name      string
	}
	var done []applied
	t.Cleanup(func() {
		if t.Failed() {
			f.CollectDiagnostics(systemNS)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for _, a := range slices.Backward(done) {
			var err error
			if a.namespace != "" {
				err = dyn.Resource(a.gvr).Namespace(a.namespace).Delete(ctx, a.name, metav1.DeleteOptions{})
			} else {
				err = dyn.Resource(a.gvr).Delete(ctx, a.name, metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: delete %s %s/%s: %v", a.gvr.Resource, a.namespace, a.name, err)
			}
		}
		// The namespace also holds what the control plane created (CA
		// Secret, root ConfigMap).
		for ctx.Err() == nil {
			if _, err := f.Client.CoreV1().Namespaces().Get(ctx, systemNS, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return
			}
			time.Sleep(time.Second)
		}
		t.Errorf("cleanup: namespace %s still exists after 3m", systemNS)
	})
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode %s: %v", manifestPath, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("map %s: %v", gvk, err)
		}
		body, err := json.Marshal(obj.Object)
		if err != nil {
			t.Fatal(err)
		}
		a := applied{gvr: m.Resource, name: obj.GetName()}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			a.namespace = obj.GetNamespace()
			ri = dyn.Resource(m.Resource).Namespace(a.namespace)
		}
		force := true
		if _, err := ri.Patch(f.Ctx(), obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: fieldManager, Force: &force}); err != nil {
			t.Fatalf("apply %s %s/%s: %v", gvk.Kind, a.namespace, a.name, err)
		}
		done = append(done, a)
	}
}

func waitDeploymentReady(t *testing.T, f *framework.Framework, ns, name string) {
	t.Helper()
	err := f.Eventually(3*time.Minute, func() error {
		d, err := f.Client.AppsV1().Deployments(ns).Get(f.Ctx(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.ReadyReplicas != want || d.Status.UpdatedReplicas != want {
			return fmt.Errorf("deployment %s/%s: %d/%d ready", ns, name, d.Status.ReadyReplicas, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ztunnels waits until the ztunnel DaemonSet runs a Ready pod on every one
// of nodes and returns the pod name per node.
func ztunnels(t *testing.T, f *framework.Framework, nodes []string) map[string]string {
	t.Helper()
	var byNode map[string]string
	err := f.Eventually(3*time.Minute, func() error {
		ds, err := f.Client.AppsV1().DaemonSets(systemNS).Get(f.Ctx(), "ztunnel", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.NumberReady != int32(len(nodes)) {
			return fmt.Errorf("ztunnel DaemonSet: %d of %d pods ready", ds.Status.NumberReady, len(nodes))
		}
		pods, err := f.Client.CoreV1().Pods(systemNS).List(f.Ctx(), metav1.ListOptions{LabelSelector: "app=ztunnel"})
		if err != nil {
			return err
		}
		byNode = map[string]string{}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				byNode[p.Spec.NodeName] = p.Name
			}
		}
		for _, n := range nodes {
			if byNode[n] == "" {
				return fmt.Errorf("no ready ztunnel pod on node %s", n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return byNode
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// admin runs ztunnel-admin in a ztunnel pod and decodes its JSON output.
func admin(f *framework.Framework, pod string, out any, args ...string) error {
	stdout, _, err := f.Exec(systemNS, pod, "ztunnel", append(append([]string{"ztunnel-admin"}, args...), "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		return fmt.Errorf("decode ztunnel-admin %v output %q: %w", args, stdout, err)
	}
	return nil
}

func workloadsOf(f *framework.Framework, pod string) (map[string]ztWorkload, error) {
	var ws []ztWorkload
	if err := admin(f, pod, &ws, "workloads"); err != nil {
		return nil, err
	}
	out := map[string]ztWorkload{}
	for _, w := range ws {
		out[w.UID] = w
	}
	return out, nil
}

func certsOf(f *framework.Framework, pod string) (map[string]ztCert, error) {
	var cs []ztCert
	if err := admin(f, pod, &cs, "certs"); err != nil {
		return nil, err
	}
	out := map[string]ztCert{}
	for _, c := range cs {
		out[c.Identity] = c
	}
	return out, nil
}

// waitKnown waits until every ztunnel lists pod as an HBONE workload on its
// node with its IP.
func waitKnown(t *testing.T, f *framework.Framework, zt map[string]string, pod *corev1.Pod) {
	t.Helper()
	for node, z := range zt {
		err := f.Eventually(time.Minute, func() error {
			ws, err := workloadsOf(f, z)
			if err != nil {
				return err
			}
			w, ok := ws[string(pod.UID)]
			if !ok {
				return fmt.Errorf("ztunnel %s (node %s) does not list pod %s/%s (uid %s)", z, node, pod.Namespace, pod.Name, pod.UID)
			}
			if w.Name != pod.Name || w.Namespace != pod.Namespace || w.Node != pod.Spec.NodeName || w.Protocol != "HBONE" || !slices.Contains(w.Addresses, pod.Status.PodIP) {
				return fmt.Errorf("ztunnel %s lists pod %s as %+v; want node %s, HBONE, address %s", z, pod.Name, w, pod.Spec.NodeName, pod.Status.PodIP)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func waitGone(t *testing.T, f *framework.Framework, zt map[string]string, uid types.UID) {
	t.Helper()
	for node, z := range zt {
		err := f.Eventually(time.Minute, func() error {
			ws, err := workloadsOf(f, z)
			if err != nil {
				return err
			}
			if w, ok := ws[string(uid)]; ok {
				return fmt.Errorf("ztunnel %s (node %s) still lists %s/%s", z, node, w.Namespace, w.Name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// waitCert waits until ztunnel z holds a valid certificate for id (or, with
// present false, none at all).
func waitCert(t *testing.T, f *framework.Framework, z, id string, present bool) {
	t.Helper()
	err := f.Eventually(time.Minute, func() error {
		cs, err := certsOf(f, z)
		if err != nil {
			return err
		}
		c, ok := cs[id]
		switch {
		case present && !ok:
			return fmt.Errorf("ztunnel %s holds no certificate for %s", z, id)
		case present && c.State != "Valid":
			return fmt.Errorf("ztunnel %s holds the certificate of %s in state %q", z, id, c.State)
		case !present && ok:
			return fmt.Errorf("ztunnel %s still holds the certificate of %s", z, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func scaleControlPlane(t *testing.T, f *framework.Framework, replicas int32) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := f.Client.AppsV1().Deployments(systemNS).Patch(f.Ctx(), "ambit-controlplane", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("scale the control plane to %d: %v", replicas, err)
	}
}

func controlPlanePods(t *testing.T, f *framework.Framework) []corev1.Pod {
	t.Helper()
	pods, err := f.Client.CoreV1().Pods(systemNS).List(f.Ctx(), metav1.ListOptions{LabelSelector: "app=ambit-controlplane"})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// TestControlplaneWorkloadDiscovery deploys the control plane and ztunnel
// (xDS mode) and checks that pods of an ambient namespace reach every
// ztunnel, that the pod's node's ztunnel holds its certificate, that removal
// propagates, and that ztunnels keep their state while the control plane is
// away and resync when it is back.
func TestControlplaneWorkloadDiscovery(t *testing.T) {
	f := framework.New(t)
	nodes := f.ReadyNodes(2)
	install(t, f)
	waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
	zt := ztunnels(t, f, nodes)

	ns := f.Namespace("cp", map[string]string{"ambit.dev/dataplane-mode": "ambient"})
	id := "spiffe://cluster.local/ns/" + ns + "/sa/default"
	node := nodes[0]

	app1 := f.TestApp(ns, "app1", framework.AppOptions{Node: node})
	t.Run("pod appears in every ztunnel and its node's ztunnel holds its certificate", func(t *testing.T) {
		waitKnown(t, f, zt, app1)
		waitCert(t, f, zt[node], id, true)
	})

	t.Run("deleted pod disappears and its certificate is dropped", func(t *testing.T) {
		if err := f.Client.CoreV1().Pods(ns).Delete(f.Ctx(), app1.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitGone(t, f, zt, app1.UID)
		waitCert(t, f, zt[node], id, false)
	})

	app2 := f.TestApp(ns, "app2", framework.AppOptions{Node: nodes[1]})
	waitKnown(t, f, zt, app2)
	waitCert(t, f, zt[nodes[1]], id, true)

	t.Run("control plane pod deleted: state kept, resync after the restart", func(t *testing.T) {
		for _, p := range controlPlanePods(t, f) {
			if err := f.Client.CoreV1().Pods(systemNS).Delete(f.Ctx(), p.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
		waitKnown(t, f, zt, app2)
		waitCert(t, f, zt[nodes[1]], id, true)
	})

	t.Run("control plane away: ztunnels keep serving, a pod created meanwhile appears on return", func(t *testing.T) {
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
		// Every ztunnel still knows app2 and is still ready.
		waitKnown(t, f, zt, app2)
		if got := ztunnels(t, f, nodes); len(got) != len(nodes) {
			t.Fatalf("ztunnels ready while the control plane is away: %v", got)
		}
		app3 := f.TestApp(ns, "app3", framework.AppOptions{Node: node})
		for _, z := range zt {
			ws, err := workloadsOf(f, z)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := ws[string(app3.UID)]; ok {
				t.Fatalf("ztunnel %s learnt of app3 while the control plane was away", z)
			}
		}
		scaleControlPlane(t, f, 1)
		waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
		waitKnown(t, f, zt, app3)
		waitKnown(t, f, zt, app2)
		waitCert(t, f, zt[node], id, true)
	})

	t.Run("two replicas: both serve, one holds the Lease, it moves when the leader goes", func(t *testing.T) {
		scaleControlPlane(t, f, 2)
		t.Cleanup(func() { scaleControlPlane(t, f, 1) })
		waitDeploymentReady(t, f, systemNS, "ambit-controlplane")
		holder := func() string {
			l, err := f.Client.CoordinationV1().Leases(systemNS).Get(f.Ctx(), "ambit-controlplane", metav1.GetOptions{})
			if err != nil || l.Spec.HolderIdentity == nil {
				return ""
			}
			return *l.Spec.HolderIdentity
		}
		var leader string
		if err := f.Eventually(time.Minute, func() error {
			leader = holder()
			for _, p := range controlPlanePods(t, f) {
				if p.Name == leader && p.DeletionTimestamp == nil {
					return nil
				}
			}
			return fmt.Errorf("Lease ambit-controlplane held by %q, not by a running control plane pod", leader)
		}); err != nil {
			t.Fatal(err)
		}
		if err := f.Client.CoreV1().Pods(systemNS).Delete(f.Ctx(), leader, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := f.Eventually(time.Minute, func() error {
			if h := holder(); h == "" || h == leader {
				return fmt.Errorf("Lease still held by %q", h)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Client.CoreV1().ConfigMaps(systemNS).Get(f.Ctx(), "ambit-root-cert", metav1.GetOptions{}); err != nil {
			t.Fatalf("trust bundle after the handover: %v", err)
		}
		waitKnown(t, f, zt, app2)
	})

	// The ztunnel pods themselves never restarted.
	if got := ztunnels(t, f, nodes); !maps.Equal(got, zt) {
		t.Fatalf("ztunnel pods changed during the test: %v, then %v", zt, got)
	}
}
