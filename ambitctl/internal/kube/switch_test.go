package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"ambit.dev/ambitctl/internal/migrate"
	"ambit.dev/ztunnel/pkg/adminapi"
)

// ztunnelObjects are a ztunnel DaemonSet (trust domain example.org) and
// its running pod on node n1, in ambit-system.
func ztunnelObjects() []runtime.Object {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel", Namespace: "ambit-system"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "ztunnel", Args: []string{"--xds-address=x:15012", "--trust-domain=example.org"}}}}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel-n1", Namespace: "ambit-system", Labels: map[string]string{"app": "ztunnel"}},
		Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	return []runtime.Object{ds, pod}
}

// fakeZtunnel answers ztunnel's admin and metrics GETs from dump and
// metrics.
type fakeZtunnel struct {
	dump    adminapi.ConfigDump
	metrics string
}

// servingZtunnel is a fakeZtunnel serving pods of namespace shop (service
// account default) with Valid certificates.
func servingZtunnel(pods ...string) *fakeZtunnel {
	f := &fakeZtunnel{}
	for _, p := range pods {
		f.dump.Workloads = append(f.dump.Workloads, adminapi.WorkloadDump{Name: p, Namespace: "shop", ServiceAccount: "default", Captured: true})
	}
	f.dump.Certificates = []adminapi.CertDump{{Identity: "spiffe://example.org/ns/shop/sa/default", State: adminapi.CertValid}}
	return f
}

func (f *fakeZtunnel) Get(_ context.Context, namespace, pod string, port int, path string) ([]byte, error) {
	if namespace != "ambit-system" || pod != "ztunnel-n1" {
		return nil, fmt.Errorf("unexpected pod %s/%s", namespace, pod)
	}
	switch {
	case port == 15000 && path == adminapi.PathConfigDump:
		return json.Marshal(f.dump)
	case port == 15020 && path == "/metrics":
		return []byte(f.metrics), nil
	}
	return nil, fmt.Errorf("unexpected GET :%d%s", port, path)
}

func sidecarPod(name string, sidecar bool, redirection string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "a"}, Annotations: map[string]string{}},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if sidecar {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
		p.Annotations["sidecar.istio.io/status"] = "{}"
	}
	if redirection != "" {
		p.Annotations["ambit.dev/redirection"] = redirection
	}
	return p
}

func deployment(name string, tmplSidecar bool, annotations map[string]string) *appsv1.Deployment {
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}, Annotations: map[string]string{}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			},
		},
		Status: appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1},
	}
	if tmplSidecar {
		d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxyv2"})
		d.Spec.Template.Annotations["sidecar.istio.io/status"] = "{}"
	}
	return d
}

func statefulSet(name string, tmplSidecar bool, annotations map[string]string) *appsv1.StatefulSet {
	d := deployment(name, tmplSidecar, annotations)
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Annotations: annotations},
		Spec:   appsv1.StatefulSetSpec{Replicas: d.Spec.Replicas, Selector: d.Spec.Selector, Template: d.Spec.Template},
		Status: appsv1.StatefulSetStatus{Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, CurrentRevision: name + "-2", UpdateRevision: name + "-2"}}
}

// onDeleteDaemonSet is a DaemonSet with the OnDelete update strategy.
func onDeleteDaemonSet(name string, tmplSidecar bool) *appsv1.DaemonSet {
	d := deployment(name, tmplSidecar, nil)
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name)},
		Spec:   appsv1.DaemonSetSpec{Selector: d.Spec.Selector, Template: d.Spec.Template},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 1, UpdatedNumberScheduled: 1, NumberAvailable: 1}}
	ds.Spec.UpdateStrategy.Type = appsv1.OnDeleteDaemonSetStrategyType
	return ds
}

// ownedPod is a Ready pod of the workload with that UID, on a revision.
func ownedPod(name, app, kind string, uid types.UID, revision string, sidecar bool) *corev1.Pod {
	p := sidecarPod(name, sidecar, "")
	p.Labels = map[string]string{"app": app, appsv1.ControllerRevisionHashLabelKey: revision}
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: app, UID: uid, Controller: ptrTo(true)}}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return p
}

func ptrTo[T any](v T) *T { return &v }

func switchClients(typed *fake.Clientset, objs ...runtime.Object) *Clients {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{CRDResource: "CustomResourceDefinitionList"}, objs...)
	return &Clients{Typed: typed, Dynamic: dyn, Istio: istiofake.NewSimpleClientset(),
		Mapper: newMapper(schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"},
			schema.GroupVersionKind{Group: "security.ambit.dev", Version: "v1alpha1", Kind: "AuthorizationPolicy"})}
}

func record(t *testing.T, c *Clients) *migrate.Record {
	t.Helper()
	n, err := c.Typed.CoreV1().Namespaces().Get(context.Background(), "shop", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := migrate.ParseRecord(n.Annotations[migrate.AnnotationMigration])
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestMigrateApplyResumes runs apply on a namespace whose pods keep their
// sidecars (no controller replaces them in the fake): it stops at verify
// with the reason, having done and recorded the earlier steps; once the
// pods are replaced, a re-run only verifies.
func TestMigrateApplyResumes(t *testing.T) {
	ctx := context.Background()
	typed := fake.NewClientset(append(ztunnelObjects(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio-injection": "enabled", "team": "x"}}},
		deployment("a", true, nil), deployment("plain", false, nil),
		sidecarPod("a-1", true, ""),
	)...)
	c := switchClients(typed)
	var out bytes.Buffer
	stamp := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	zt := &fakeZtunnel{}
	opt := SwitchOptions{StepTimeout: 300 * time.Millisecond, Interval: 50 * time.Millisecond, Out: &out, AmbitNamespace: "ambit-system",
		Now: func() time.Time { return stamp }, Ztunnel: zt}
	err := MigrateApply(ctx, c, "shop", opt)
	if err == nil || !strings.Contains(err.Error(), "step verify") || !strings.Contains(err.Error(), "a-1 has a sidecar") || !strings.Contains(err.Error(), "re-run ambitctl migrate apply -n shop") {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	r := record(t, c)
	if !r.IsDone(migrate.StepRestart) || r.IsDone(migrate.StepVerify) || !r.AmbientLabelAdded || r.RemovedLabels["istio-injection"] != "enabled" || len(r.Restarted) != 1 || r.Restarted[0] != "deployment/a" {
		t.Fatalf("record after the interrupted run: %+v", r)
	}
	n, _ := typed.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if n.Labels["ambit.dev/dataplane-mode"] != "ambient" || n.Labels["istio-injection"] != "" || n.Labels["team"] != "x" {
		t.Errorf("labels %v", n.Labels)
	}
	d, _ := typed.AppsV1().Deployments("shop").Get(ctx, "a", metav1.GetOptions{})
	if len(d.Spec.Template.Spec.Containers) != 1 || d.Spec.Template.Annotations["sidecar.istio.io/status"] != "" ||
		d.Spec.Template.Annotations[migrate.AnnotationRestartedAt] != "2026-12-07T03:00:00Z" || d.Annotations[migrate.AnnotationSidecarRemoved] == "" {
		t.Errorf("deployment a after restart: %+v %v", d.Spec.Template, d.Annotations)
	}
	if p, _ := typed.AppsV1().Deployments("shop").Get(ctx, "plain", metav1.GetOptions{}); p.Spec.Template.Annotations[migrate.AnnotationRestartedAt] != "" {
		t.Error("a Deployment without sidecars was restarted")
	}

	// The rollout replaced the pod; the node agent captured it.
	if err := typed.CoreV1().Pods("shop").Delete(ctx, "a-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := typed.CoreV1().Pods("shop").Create(ctx, sidecarPod("a-2", false, "enabled"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	stamp = stamp.Add(time.Hour)
	// Captured, but ztunnel does not serve it yet: verify waits.
	err = MigrateApply(ctx, c, "shop", opt)
	if err == nil || !strings.Contains(err.Error(), "a-2: ztunnel ambit-system/ztunnel-n1 does not know the pod yet") {
		t.Fatalf("re-run before ztunnel serves the pod: %v\n%s", err, out.String())
	}
	zt.dump = adminapi.ConfigDump{
		Workloads:    []adminapi.WorkloadDump{{Name: "a-2", Namespace: "shop", ServiceAccount: "default", Captured: true}},
		Certificates: []adminapi.CertDump{{Identity: "spiffe://example.org/ns/shop/sa/default", State: adminapi.CertValid}},
	}
	zt.metrics = `# TYPE istio_tcp_connections_opened_total counter
istio_tcp_connections_opened_total{reporter="destination",destination_workload_namespace="shop",destination_principal="spiffe://example.org/ns/shop/sa/default",source_principal="spiffe://example.org/ns/web/sa/client",connection_security_policy="mutual_tls"} 7
`
	out.Reset()
	if err := MigrateApply(ctx, c, "shop", opt); err != nil {
		t.Fatalf("re-run: %v\n%s", err, out.String())
	}
	for _, s := range []string{"[5/6] restart: done by an earlier run", "[6/6] verify", "1/1 pods captured, 1/1 served by ztunnel with their identity",
		"inbound to spiffe://example.org/ns/shop/sa/default: 7 over HBONE (mutual TLS) from spiffe://example.org/ns/web/sa/client", "migrated to Ambit"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("re-run output lacks %q:\n%s", s, out.String())
		}
	}
	if d, _ := typed.AppsV1().Deployments("shop").Get(ctx, "a", metav1.GetOptions{}); d.Spec.Template.Annotations[migrate.AnnotationRestartedAt] != "2026-12-07T03:00:00Z" {
		t.Error("the re-run restarted a again")
	}
	if r := record(t, c); !r.Complete() {
		t.Errorf("record not complete: %+v", r)
	}
	out.Reset()
	if err := MigrateApply(ctx, c, "shop", opt); err != nil || !strings.Contains(out.String(), "already migrated") {
		t.Errorf("third run: %v %s", err, out.String())
	}
}

func TestMigrateRollback(t *testing.T) {
	ctx := context.Background()
	sc, _ := json.Marshal(migrate.Sidecar{Containers: []corev1.Container{{Name: "istio-proxy", Image: "proxyv2"}}, Annotations: map[string]string{"sidecar.istio.io/status": "{}"}})
	rec := &migrate.Record{Done: migrate.Steps, AmbientLabelAdded: true, RemovedLabels: map[string]string{"istio-injection": "enabled"}, Restarted: []string{"a", "gone", "statefulset/db"},
		Applied: []migrate.ObjectRef{
			{APIVersion: "gateway.networking.k8s.io/v1", Kind: "HTTPRoute", Name: "reviews"},
			{APIVersion: "security.ambit.dev/v1alpha1", Kind: "AuthorizationPolicy", Name: "taken"},
			{APIVersion: "security.ambit.dev/v1alpha1", Kind: "AuthorizationPolicy", Name: "deleted"},
		}}
	typed := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"ambit.dev/dataplane-mode": "ambient", "team": "x"},
			Annotations: map[string]string{migrate.AnnotationMigration: rec.Encode()}}},
		deployment("a", false, map[string]string{migrate.AnnotationSidecarRemoved: string(sc)}),
		statefulSet("db", false, map[string]string{migrate.AnnotationSidecarRemoved: string(sc)}),
	)
	obj := func(apiVersion, kind, name, manager string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		u.SetName(name)
		u.SetNamespace("shop")
		u.SetAnnotations(map[string]string{migrate.AnnotationMigratedFrom: "VirtualService/reviews"})
		u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: manager, Operation: metav1.ManagedFieldsOperationApply}})
		return u
	}
	c := switchClients(typed,
		obj("gateway.networking.k8s.io/v1", "HTTPRoute", "reviews", "ambitctl"),
		obj("security.ambit.dev/v1alpha1", "AuthorizationPolicy", "taken", "kubectl"))
	var out bytes.Buffer
	opt := SwitchOptions{StepTimeout: time.Second, Interval: 50 * time.Millisecond, Out: &out}
	if err := MigrateRollback(ctx, c, "shop", opt); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	n, _ := typed.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if n.Labels["istio-injection"] != "enabled" || n.Labels["ambit.dev/dataplane-mode"] != "" || n.Labels["team"] != "x" || n.Annotations[migrate.AnnotationMigration] != "" {
		t.Errorf("namespace after rollback: %v %v", n.Labels, n.Annotations)
	}
	d, _ := typed.AppsV1().Deployments("shop").Get(ctx, "a", metav1.GetOptions{})
	if len(d.Spec.Template.Spec.Containers) != 2 || d.Spec.Template.Spec.Containers[1].Image != "proxyv2" || d.Spec.Template.Annotations["sidecar.istio.io/status"] != "{}" ||
		d.Annotations[migrate.AnnotationSidecarRemoved] != "" || d.Spec.Template.Annotations[migrate.AnnotationRestartedAt] == "" {
		t.Errorf("deployment a after rollback: %+v %v", d.Spec.Template, d.Annotations)
	}
	sts, _ := typed.AppsV1().StatefulSets("shop").Get(ctx, "db", metav1.GetOptions{})
	if len(sts.Spec.Template.Spec.Containers) != 2 || sts.Spec.Template.Annotations["sidecar.istio.io/status"] != "{}" || sts.Annotations[migrate.AnnotationSidecarRemoved] != "" {
		t.Errorf("statefulset db after rollback: %+v %v", sts.Spec.Template, sts.Annotations)
	}
	routes := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	if _, err := c.Dynamic.Resource(routes).Namespace("shop").Get(ctx, "reviews", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("HTTPRoute reviews not deleted: %v", err)
	}
	aps := schema.GroupVersionResource{Group: "security.ambit.dev", Version: "v1alpha1", Resource: "authorizationpolicies"}
	if _, err := c.Dynamic.Resource(aps).Namespace("shop").Get(ctx, "taken", metav1.GetOptions{}); err != nil {
		t.Errorf("AuthorizationPolicy taken (managed by kubectl now) was deleted: %v", err)
	}
	for _, s := range []string{"deployment/a: sidecar put back", "deployment/gone is gone", "statefulset/db: sidecar put back", "AuthorizationPolicy/taken kept", "AuthorizationPolicy/deleted is already gone", "rolled back"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q", s)
		}
	}
	if err := MigrateRollback(ctx, c, "shop", opt); err == nil || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Errorf("second rollback: %v", err)
	}
}

// TestMigrateApplyEveryKind restarts a StatefulSet (RollingUpdate), an
// OnDelete DaemonSet (its old pod evicted, the first eviction refused by
// a PodDisruptionBudget) and a Deployment whose maxUnavailable exceeds its
// PodDisruptionBudget (a warning), and leaves a bare pod with a sidecar
// to the user, which the verify step then names.
func TestMigrateApplyEveryKind(t *testing.T) {
	ctx := context.Background()
	web := deployment("web", true, nil)
	web.Spec.Replicas = ptrTo(int32(4))
	half := intstr.FromString("50%")
	web.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxUnavailable: &half}
	web.Status = appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 4, AvailableReplicas: 4}
	agent := onDeleteDaemonSet("agent", true)
	budget := func(name, app string) *policyv1.PodDisruptionBudget {
		return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
			Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: 1, CurrentHealthy: 4, DesiredHealthy: 3, ExpectedPods: 4}}
	}
	bare := sidecarPod("bare", true, "")
	bare.Labels = map[string]string{"run": "debug"}
	typed := fake.NewClientset(append(ztunnelObjects(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio-injection": "enabled"}}},
		web, statefulSet("db", true, nil), agent, statefulSet("plain", false, nil),
		budget("web", "web"), budget("agent", "agent"),
		&appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "agent-old", Namespace: "shop", Labels: map[string]string{appsv1.ControllerRevisionHashLabelKey: "old"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "agent", UID: agent.UID, Controller: ptrTo(true)}}}, Revision: 1},
		&appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "agent-new", Namespace: "shop", Labels: map[string]string{appsv1.ControllerRevisionHashLabelKey: "new"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "agent", UID: agent.UID, Controller: ptrTo(true)}}}, Revision: 2},
		ownedPod("agent-x1", "agent", "DaemonSet", agent.UID, "old", true),
		bare,
	)...)
	evictions := 0
	typed.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		if evictions++; evictions == 1 {
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		}
		podsGVR := corev1.SchemeGroupVersion.WithResource("pods")
		if err := typed.Tracker().Delete(podsGVR, "shop", ev.Name); err != nil {
			return true, nil, err
		}
		return true, nil, typed.Tracker().Add(ownedPod("agent-x2", "agent", "DaemonSet", agent.UID, "new", false))
	})
	c := switchClients(typed)
	var out bytes.Buffer
	opt := SwitchOptions{StepTimeout: 500 * time.Millisecond, Interval: 20 * time.Millisecond, Out: &out, AmbitNamespace: "ambit-system",
		Ztunnel: servingZtunnel("agent-x2")}

	st, _, err := ReadSwitchState(ctx, c, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"daemonset/agent", "deployment/web", "statefulset/db"}; !slices.Equal(st.SidecarWorkloads, want) || !slices.Equal(st.UnrestartablePods, []string{"bare"}) {
		t.Fatalf("state: workloads %v, unrestartable %v", st.SidecarWorkloads, st.UnrestartablePods)
	}

	err = MigrateApply(ctx, c, "shop", opt)
	if err == nil || !strings.Contains(err.Error(), "step verify") || !strings.Contains(err.Error(), "bare has a sidecar and no controller ambitctl restarts: delete it yourself") {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	if r := record(t, c); !slices.Equal(r.Restarted, []string{"daemonset/agent", "deployment/web", "statefulset/db"}) {
		t.Errorf("restarted %v", r.Restarted)
	}
	for _, s := range []string{
		"pod/bare has a sidecar and no controller ambitctl restarts: delete it yourself once the namespace is ambient",
		"eviction of pod/agent-x1 refused for now",
		"daemonset/agent: evicted pod/agent-x1 (old revision)",
		"daemonset/agent (OnDelete): 1/1 pods updated and Ready",
		"warning: deployment/web may take down 2 pods at once (maxUnavailable) but pdb/web allows 1 disruptions",
		"statefulset/db: took the sidecar out of its pod template",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q", s)
		}
	}
	db, _ := typed.AppsV1().StatefulSets("shop").Get(ctx, "db", metav1.GetOptions{})
	if len(db.Spec.Template.Spec.Containers) != 1 || db.Annotations[migrate.AnnotationSidecarRemoved] == "" || db.Spec.Template.Annotations[migrate.AnnotationRestartedAt] == "" {
		t.Errorf("statefulset db after restart: %+v %v", db.Spec.Template, db.Annotations)
	}
	if p, _ := typed.AppsV1().StatefulSets("shop").Get(ctx, "plain", metav1.GetOptions{}); p.Spec.Template.Annotations[migrate.AnnotationRestartedAt] != "" {
		t.Error("a StatefulSet without sidecars was restarted")
	}
	if _, err := typed.CoreV1().Pods("shop").Get(ctx, "bare", metav1.GetOptions{}); err != nil {
		t.Errorf("the bare pod was touched: %v", err)
	}
}

// TestMigrateApplyPDBNeverAllows: an OnDelete StatefulSet whose budget
// allows no disruption with every pod healthy stops the restart step with
// what to change, instead of waiting out the timeout.
func TestMigrateApplyPDBNeverAllows(t *testing.T) {
	db := statefulSet("db", true, nil)
	db.Spec.UpdateStrategy.Type = appsv1.OnDeleteStatefulSetStrategyType
	typed := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, db,
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
			Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
			Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: 0, CurrentHealthy: 1, DesiredHealthy: 1, ExpectedPods: 1}},
	)
	var out bytes.Buffer
	err := MigrateApply(context.Background(), switchClients(typed), "shop", SwitchOptions{StepTimeout: time.Second, Interval: 20 * time.Millisecond, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "step restart: statefulset/db: pdb/db allows no disruption with all 1 of its pods healthy") {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
}

// TestMigrateApplyOldRecord resumes from a record an older ambitctl wrote
// (Restarted holds plain Deployment names): the Deployment it names is
// not restarted again, only waited for.
func TestMigrateApplyOldRecord(t *testing.T) {
	ctx := context.Background()
	rec := &migrate.Record{Done: []migrate.Step{migrate.StepApply, migrate.StepWaypoint, migrate.StepLabelAmbient, migrate.StepRemoveInjection},
		AmbientLabelAdded: true, Restarted: []string{"a"}}
	typed := fake.NewClientset(append(ztunnelObjects(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"ambit.dev/dataplane-mode": "ambient"},
			Annotations: map[string]string{migrate.AnnotationMigration: rec.Encode()}}},
		deployment("a", true, nil), sidecarPod("a-2", false, "enabled"),
	)...)
	c := switchClients(typed)
	var out bytes.Buffer
	if err := MigrateApply(ctx, c, "shop", SwitchOptions{StepTimeout: time.Second, Interval: 20 * time.Millisecond, Out: &out, AmbitNamespace: "ambit-system",
		Ztunnel: servingZtunnel("a-2")}); err != nil {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	if d, _ := typed.AppsV1().Deployments("shop").Get(ctx, "a", metav1.GetOptions{}); d.Spec.Template.Annotations[migrate.AnnotationRestartedAt] != "" {
		t.Error("deployment a, recorded as restarted by an older version, was restarted again")
	}
	if r := record(t, c); !slices.Equal(r.Restarted, []string{"a"}) || !r.Complete() {
		t.Errorf("record %+v", r)
	}
}
