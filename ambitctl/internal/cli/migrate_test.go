package cli

import (
	"bytes"
	"strings"
	"testing"

	apinet "istio.io/api/networking/v1alpha3"
	clinet "istio.io/client-go/pkg/apis/networking/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"ambit.dev/ambitctl/internal/kube"
)

func TestMigratePlan(t *testing.T) {
	vs := &clinet.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "reviews"},
		Spec: apinet.VirtualService{Hosts: []string{"reviews"}, Http: []*apinet.HTTPRoute{{
			Route:  []*apinet.HTTPRouteDestination{{Destination: &apinet.Destination{Host: "reviews"}}},
			Mirror: &apinet.Destination{Host: "reviews"},
		}}}}
	reviews := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"}, Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}}}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := NewCommand(Env{Out: &out, Connect: func(kube.Flags) (*kube.Clients, error) {
			return &kube.Clients{Typed: fake.NewClientset(ns("demo", nil), reviews), Dynamic: crds(), Istio: istiofake.NewSimpleClientset(vs)}, nil
		}})
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(t.Context())
		return out.String(), err
	}

	out, err := run("migrate", "plan", "-n", "demo")
	if err != nil {
		t.Fatal(err)
	}
	want := "SOURCE                  BECOMES            NOT MAPPED\n" +
		"VirtualService/reviews  HTTPRoute/reviews  http[0].mirror: Ambit's waypoint does not mirror traffic (no RequestMirror filter): the mirror is dropped\n"
	if out != want {
		t.Errorf("table:\n%s\nwant:\n%s", out, want)
	}

	out, err = run("migrate", "plan", "-n", "demo", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("want a header and one object, got:\n%s", out)
	}
	var route map[string]any
	if err := yaml.Unmarshal([]byte(docs[1]), &route); err != nil {
		t.Fatal(err)
	}
	if route["kind"] != "HTTPRoute" || !strings.Contains(out, "# Not mapped (1):\n#   VirtualService/reviews http[0].mirror:") {
		t.Errorf("yaml:\n%s", out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "plan"}, "-n/--namespace is required"},
		{[]string{"migrate", "plan", "-n", "demo", "-o", "json"}, `-o "json": give table or yaml`},
		{[]string{"migrate", "plan", "-n", "nope"}, "namespace nope does not exist"},
	} {
		if _, err := run(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.args, err, c.want)
		}
	}
}

func TestMigrateDryRun(t *testing.T) {
	vs := &clinet.VirtualService{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "reviews"},
		Spec: apinet.VirtualService{Hosts: []string{"reviews"}, Http: []*apinet.HTTPRoute{{
			Route: []*apinet.HTTPRouteDestination{{Destination: &apinet.Destination{Host: "reviews"}}}}}}}
	reviews := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"}, Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}}}
	typed := fake.NewClientset(ns("demo", map[string]string{"istio-injection": "enabled"}), reviews)
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := NewCommand(Env{Out: &out, Connect: func(kube.Flags) (*kube.Clients, error) {
			return &kube.Clients{Typed: typed, Dynamic: crds(), Istio: istiofake.NewSimpleClientset(vs)}, nil
		}})
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(t.Context())
		return out.String(), err
	}
	out, err := run("migrate", "apply", "-n", "demo", "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ambitctl migrate apply -n demo would (dry run, nothing changed):",
		"[1/6] apply-objects (todo): server-side apply 1 objects", "[2/6] waypoint (todo): wait until Services reviews are bound",
		"[4/6] remove-injection-label (todo): remove namespace labels istio-injection=enabled", "[5/6] restart (todo): no Deployment, StatefulSet or DaemonSet has sidecars"} {
		if !strings.Contains(out, s) {
			t.Errorf("dry run lacks %q:\n%s", s, out)
		}
	}
	if n, _ := typed.CoreV1().Namespaces().Get(t.Context(), "demo", metav1.GetOptions{}); n.Labels["istio-injection"] != "enabled" || len(n.Annotations) != 0 {
		t.Errorf("dry run changed the namespace: %v %v", n.Labels, n.Annotations)
	}
	if _, err := run("migrate", "rollback", "-n", "demo", "--dry-run"); err == nil || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Errorf("rollback dry run without a record: %v", err)
	}
	if _, err := run("migrate", "apply"); err == nil || !strings.Contains(err.Error(), "-n/--namespace is required: the namespace to migrate") {
		t.Errorf("apply without -n: %v", err)
	}
}
