package charts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// object is one rendered Kubernetes object, decoded strictly into its Go
// type (a misspelt or misplaced field fails the decoding).
type object struct {
	kind, namespace, name string
	obj                   runtime.Object
	raw                   string // the document as rendered
}

func (o object) String() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return o.kind + " " + o.namespace + "/" + o.name
}

var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, apiextensionsv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// parse splits a rendered stream into documents and decodes each.
func parse(t *testing.T, stream []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var objs []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("split rendered YAML: %v", err)
		}
		doc = bytes.TrimPrefix(doc, []byte("---\n")) // the reader keeps the first separator
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode rendered object as a Kubernetes object: %v\n%s", err, doc)
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			t.Fatalf("object metadata: %v", err)
		}
		objs = append(objs, object{kind: gvk.Kind, namespace: m.GetNamespace(), name: m.GetName(), obj: obj, raw: string(doc)})
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

func render(t *testing.T, namespace string, values map[string]any) []object {
	t.Helper()
	out, err := Render(namespace, values)
	if err != nil {
		t.Fatalf("Render(%q, %v): %v", namespace, values, err)
	}
	return parse(t, out)
}

func find[T runtime.Object](t *testing.T, objs []object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o.obj.(T)
		}
	}
	t.Fatalf("no %s %s in the rendered chart; have %v", kind, name, objs)
	var zero T
	return zero
}

func container(t *testing.T, objs []object, kind, name string) corev1.Container {
	t.Helper()
	var spec corev1.PodSpec
	switch kind {
	case "Deployment":
		spec = find[*appsv1.Deployment](t, objs, kind, name).Spec.Template.Spec
	case "DaemonSet":
		spec = find[*appsv1.DaemonSet](t, objs, kind, name).Spec.Template.Spec
	default:
		t.Fatalf("no pods in a %s", kind)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s %s: want 1 container, have %d", kind, name, len(spec.Containers))
	}
	return spec.Containers[0]
}

func TestRenderDefaults(t *testing.T) {
	objs := render(t, "", nil)

	var got []string
	for _, o := range objs {
		got = append(got, o.String())
	}
	want := []string{
		"CustomResourceDefinition httpfaults.networking.ambit.dev",
		"CustomResourceDefinition authorizationpolicies.security.ambit.dev",
		"CustomResourceDefinition peerauthentications.security.ambit.dev",
		"CustomResourceDefinition gatewayclasses.gateway.networking.k8s.io",
		"CustomResourceDefinition gateways.gateway.networking.k8s.io",
		"CustomResourceDefinition grpcroutes.gateway.networking.k8s.io",
		"CustomResourceDefinition httproutes.gateway.networking.k8s.io",
		"CustomResourceDefinition referencegrants.gateway.networking.k8s.io",
		"Namespace ambit-system",
		"ServiceAccount ambit-system/ambit-controlplane",
		"ServiceAccount ambit-system/ambit-node-agent",
		"ServiceAccount ambit-system/ztunnel",
		"ClusterRole ambit-controlplane",
		"ClusterRole ambit-node-agent",
		"ClusterRoleBinding ambit-controlplane",
		"ClusterRoleBinding ambit-node-agent",
		"Role ambit-system/ambit-controlplane",
		"Role ambit-system/ambit-node-agent",
		"RoleBinding ambit-system/ambit-controlplane",
		"RoleBinding ambit-system/ambit-node-agent",
		"Service ambit-system/ambit-controlplane",
		"Deployment ambit-system/ambit-controlplane",
		"DaemonSet ambit-system/ambit-node-agent",
		"DaemonSet ambit-system/ztunnel",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("objects in apply order:\n got %q\nwant %q", got, want)
	}

	t.Run("containers", func(t *testing.T) {
		for _, tc := range []struct {
			kind, name, image string
			args              []string
		}{
			{"Deployment", "ambit-controlplane", "localhost/ambit-controlplane:dev", []string{
				"--namespace=ambit-system", "--service-name=ambit-controlplane", "--node-proxies=ambit-system/ztunnel",
				"--root-namespace=ambit-system", "--trust-domain=cluster.local", "--log-level=info", "--log-format=json",
				"--waypoint-image=localhost/ambit-waypoint:dev", "--waypoint-image-pull-policy=Never", "--auto-waypoints=true",
				"--waypoint-xds-address=$(AMBIT_CONTROLPLANE_SERVICE_HOST):15012",
			}},
			{"DaemonSet", "ztunnel", "localhost/ambit-ztunnel:dev", []string{
				"--xds-address=$(AMBIT_CONTROLPLANE_SERVICE_HOST):15012", "--ca-address=$(AMBIT_CONTROLPLANE_SERVICE_HOST):15017",
				"--root-cert-file=/var/run/ambit/root/root-cert.pem", "--token-file=/var/run/ambit/token/token",
				"--control-plane-name=ambit-controlplane.ambit-system.svc", "--trust-domain=cluster.local", "--log-level=info",
				"--drain-period=10s", "--zds-socket=/var/run/ambit/node/ztunnel.sock",
			}},
			{"DaemonSet", "ambit-node-agent", "localhost/ambit-node-agent:dev", []string{
				"--zds-socket=/var/run/ambit/ztunnel.sock", "--cni-socket=/var/run/ambit/cni.sock",
				"--cni-bin-dir=/host/opt/cni/bin", "--cni-conf-dir=/host/etc/cni/net.d",
				"--iptables-backend=auto", "--log-level=info", "--log-format=json",
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := container(t, objs, tc.kind, tc.name)
				if c.Image != tc.image || c.ImagePullPolicy != corev1.PullNever {
					t.Errorf("image %s (%s), want %s (Never)", c.Image, c.ImagePullPolicy, tc.image)
				}
				if !slices.Equal(c.Args, tc.args) {
					t.Errorf("args\n got %q\nwant %q", c.Args, tc.args)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || len(c.Resources.Limits) != 0 {
					t.Errorf("resources %v, want CPU and memory requests and no limits by default", c.Resources)
				}
			})
		}
	})

	t.Run("controlplane RBAC covers the policy CRDs", func(t *testing.T) {
		cr := find[*rbacv1.ClusterRole](t, objs, "ClusterRole", "ambit-controlplane")
		for _, want := range []rbacv1.PolicyRule{
			{APIGroups: []string{"security.ambit.dev"}, Resources: []string{"authorizationpolicies", "peerauthentications"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"security.ambit.dev"}, Resources: []string{"authorizationpolicies/status", "peerauthentications/status"}, Verbs: []string{"get", "update", "patch"}},
			{APIGroups: []string{"networking.ambit.dev"}, Resources: []string{"httpfaults"}, Verbs: []string{"get", "list", "watch"}},
		} {
			if !slices.ContainsFunc(cr.Rules, func(r rbacv1.PolicyRule) bool { return reflect.DeepEqual(r, want) }) {
				t.Errorf("ClusterRole ambit-controlplane lacks rule %+v; has %+v", want, cr.Rules)
			}
		}
	})

	t.Run("controlplane RBAC covers waypoints", func(t *testing.T) {
		cr := find[*rbacv1.ClusterRole](t, objs, "ClusterRole", "ambit-controlplane")
		for _, w := range []struct{ group, resource, verb string }{
			{"gateway.networking.k8s.io", "gateways", "watch"},
			{"gateway.networking.k8s.io", "gatewayclasses", "list"},
			{"gateway.networking.k8s.io", "gatewayclasses", "create"},
			{"gateway.networking.k8s.io", "gatewayclasses", "patch"},
			{"gateway.networking.k8s.io", "httproutes", "watch"},
			{"gateway.networking.k8s.io", "grpcroutes", "watch"},
			{"gateway.networking.k8s.io", "gateways/status", "patch"},
			{"gateway.networking.k8s.io", "gatewayclasses/status", "patch"},
			{"apps", "deployments", "create"},
			{"apps", "deployments", "patch"},
			{"apps", "deployments", "watch"},
			{"", "services", "patch"},
			{"", "serviceaccounts", "patch"},
			{"", "serviceaccounts", "watch"},
		} {
			if !slices.ContainsFunc(cr.Rules, func(r rbacv1.PolicyRule) bool {
				return slices.Contains(r.APIGroups, w.group) && slices.Contains(r.Resources, w.resource) && slices.Contains(r.Verbs, w.verb) && len(r.ResourceNames) == 0
			}) {
				t.Errorf("ClusterRole ambit-controlplane cannot %s %s.%s: %+v", w.verb, w.resource, w.group, cr.Rules)
			}
		}
	})

	t.Run("CRDs are the files verbatim", func(t *testing.T) {
		for _, o := range objs {
			if o.kind != "CustomResourceDefinition" {
				continue
			}
			crd := o.obj.(*apiextensionsv1.CustomResourceDefinition)
			file := filepath.Join("ambit", "files", "crds", crd.Spec.Group+"_"+crd.Spec.Names.Plural+".yaml")
			if crd.Spec.Group == "gateway.networking.k8s.io" {
				file = filepath.Join("ambit", "files", "gateway-api", "gateway.networking.k8s.io_"+crd.Spec.Names.Plural+".yaml")
			}
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := string(src)
			if crd.Spec.Group == "gateway.networking.k8s.io" {
				// The upstream file, with the keep annotation added first.
				anchor := "\nmetadata:\n  annotations:\n"
				want = strings.Replace(want, anchor, anchor+"    helm.sh/resource-policy: keep\n", 1)
				if crd.Annotations["gateway.networking.k8s.io/bundle-version"] != "v1.4.1" || crd.Annotations["gateway.networking.k8s.io/channel"] != "standard" {
					t.Errorf("%s: annotations %v, want bundle v1.4.1 of the standard channel", o.name, crd.Annotations)
				}
			}
			_, body, _ := strings.Cut(o.raw, "\n") // the "# Source:" line
			if strings.TrimSpace(body) != strings.TrimSpace(want) {
				t.Errorf("rendered %s differs from %s", o.name, file)
			}
			if crd.Annotations["helm.sh/resource-policy"] != "keep" {
				t.Errorf("%s: annotations %v, want helm.sh/resource-policy: keep", o.name, crd.Annotations)
			}
		}
	})

	t.Run("namespace allows privileged pods", func(t *testing.T) {
		ns := find[*corev1.Namespace](t, objs, "Namespace", "ambit-system")
		if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
			t.Errorf("pod-security.kubernetes.io/enforce = %q, want privileged", got)
		}
	})
}

func TestRenderNamespace(t *testing.T) {
	for _, tc := range []struct{ name, namespace, want string }{
		{"empty means the default", "", "ambit-system"},
		{"default", "ambit-system", "ambit-system"},
		{"custom", "mesh-infra", "mesh-infra"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Render(tc.namespace, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "ambit-system" && bytes.Contains(out, []byte("ambit-system")) {
				t.Errorf("output still names ambit-system:\n%s", grepLines(out, "ambit-system"))
			}
			objs := parse(t, out)
			clusterScoped := map[string]bool{"CustomResourceDefinition": true, "Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true}
			for _, o := range objs {
				if clusterScoped[o.kind] {
					if o.namespace != "" {
						t.Errorf("%s: cluster-scoped object has a namespace", o)
					}
					continue
				}
				if o.namespace != tc.want {
					t.Errorf("%s: namespace %q, want %q", o, o.namespace, tc.want)
				}
			}
			find[*corev1.Namespace](t, objs, "Namespace", tc.want)
			for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
				for _, o := range objs {
					if o.kind != kind {
						continue
					}
					var subjects []rbacv1.Subject
					if b, ok := o.obj.(*rbacv1.ClusterRoleBinding); ok {
						subjects = b.Subjects
					} else {
						subjects = o.obj.(*rbacv1.RoleBinding).Subjects
					}
					for _, s := range subjects {
						if s.Namespace != tc.want {
							t.Errorf("%s: subject %s in namespace %q, want %q", o, s.Name, s.Namespace, tc.want)
						}
					}
				}
			}
			cp := container(t, objs, "Deployment", "ambit-controlplane")
			for _, arg := range []string{"--namespace=" + tc.want, "--node-proxies=" + tc.want + "/ztunnel", "--root-namespace=" + tc.want} {
				if !slices.Contains(cp.Args, arg) {
					t.Errorf("control plane args %q lack %s", cp.Args, arg)
				}
			}
			zt := container(t, objs, "DaemonSet", "ztunnel")
			if arg := "--control-plane-name=ambit-controlplane." + tc.want + ".svc"; !slices.Contains(zt.Args, arg) {
				t.Errorf("ztunnel args %q lack %s", zt.Args, arg)
			}
		})
	}
}

func grepLines(out []byte, s string) string {
	var b strings.Builder
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, s) {
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestRenderImages(t *testing.T) {
	type image struct {
		ref    string
		policy corev1.PullPolicy
	}
	defaults := map[string]image{
		"Deployment/ambit-controlplane": {"localhost/ambit-controlplane:dev", corev1.PullNever},
		"DaemonSet/ztunnel":             {"localhost/ambit-ztunnel:dev", corev1.PullNever},
		"DaemonSet/ambit-node-agent":    {"localhost/ambit-node-agent:dev", corev1.PullNever},
	}
	with := func(changes map[string]image) map[string]image {
		out := maps.Clone(defaults)
		maps.Copy(out, changes)
		return out
	}
	remote := map[string]any{"registry": "registry.example.com/ambit", "tag": "v0.1.0", "pullPolicy": "IfNotPresent"}
	for _, tc := range []struct {
		name   string
		values map[string]any
		want   map[string]image // "kind/name" -> image
	}{
		{
			name: "registry, tag and pull policy of every component",
			values: map[string]any{
				"controlplane": map[string]any{"image": remote},
				"ztunnel":      map[string]any{"image": remote},
				"nodeAgent":    map[string]any{"image": remote},
			},
			want: map[string]image{
				"Deployment/ambit-controlplane": {"registry.example.com/ambit/ambit-controlplane:v0.1.0", corev1.PullIfNotPresent},
				"DaemonSet/ztunnel":             {"registry.example.com/ambit/ambit-ztunnel:v0.1.0", corev1.PullIfNotPresent},
				"DaemonSet/ambit-node-agent":    {"registry.example.com/ambit/ambit-node-agent:v0.1.0", corev1.PullIfNotPresent},
			},
		},
		{
			name: "one component, registry with a port, others untouched",
			values: map[string]any{
				"ztunnel": map[string]any{"image": map[string]any{"registry": "localhost:5000", "repository": "mesh/ztunnel", "tag": "pr-42"}},
			},
			want: with(map[string]image{"DaemonSet/ztunnel": {"localhost:5000/mesh/ztunnel:pr-42", corev1.PullNever}}),
		},
		{
			name: "no registry",
			values: map[string]any{
				"nodeAgent": map[string]any{"image": map[string]any{"registry": "", "tag": "v2", "pullPolicy": "Always"}},
			},
			want: with(map[string]image{"DaemonSet/ambit-node-agent": {"ambit-node-agent:v2", corev1.PullAlways}}),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, "", tc.values)
			for ref, want := range tc.want {
				kind, name, _ := strings.Cut(ref, "/")
				c := container(t, objs, kind, name)
				if got := (image{c.Image, c.ImagePullPolicy}); got != want {
					t.Errorf("%s image %+v, want %+v", ref, got, want)
				}
			}
		})
	}
}

func TestRenderValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		check  func(t *testing.T, objs []object)
	}{
		{
			name:   "meshRootNamespace",
			values: map[string]any{"meshRootNamespace": "istio-config"},
			check: func(t *testing.T, objs []object) {
				wantArg(t, container(t, objs, "Deployment", "ambit-controlplane"), "--root-namespace=istio-config")
			},
		},
		{
			name:   "trustDomain goes to the control plane and ztunnel",
			values: map[string]any{"trustDomain": "prod.example.org"},
			check: func(t *testing.T, objs []object) {
				wantArg(t, container(t, objs, "Deployment", "ambit-controlplane"), "--trust-domain=prod.example.org")
				wantArg(t, container(t, objs, "DaemonSet", "ztunnel"), "--trust-domain=prod.example.org")
			},
		},
		{
			name:   "logLevel goes to all three",
			values: map[string]any{"logLevel": "debug"},
			check: func(t *testing.T, objs []object) {
				wantArg(t, container(t, objs, "Deployment", "ambit-controlplane"), "--log-level=debug")
				wantArg(t, container(t, objs, "DaemonSet", "ztunnel"), "--log-level=debug")
				wantArg(t, container(t, objs, "DaemonSet", "ambit-node-agent"), "--log-level=debug")
			},
		},
		{
			name:   "iptables backend",
			values: map[string]any{"redirection": map[string]any{"mode": "iptables", "iptablesBackend": "nft"}},
			check: func(t *testing.T, objs []object) {
				wantArg(t, container(t, objs, "DaemonSet", "ambit-node-agent"), "--iptables-backend=nft")
			},
		},
		{
			name:   "replicas",
			values: map[string]any{"controlplane": map[string]any{"replicas": 3}},
			check: func(t *testing.T, objs []object) {
				d := find[*appsv1.Deployment](t, objs, "Deployment", "ambit-controlplane")
				if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
					t.Errorf("replicas %v, want 3", d.Spec.Replicas)
				}
			},
		},
		{
			name: "resources",
			values: map[string]any{"ztunnel": map[string]any{"resources": map[string]any{
				"requests": map[string]any{"cpu": "200m", "memory": "128Mi"}, "limits": map[string]any{"memory": "1Gi"},
			}}},
			check: func(t *testing.T, objs []object) {
				c := container(t, objs, "DaemonSet", "ztunnel")
				if got := c.Resources.Requests.Cpu().String(); got != "200m" {
					t.Errorf("cpu request %s, want 200m", got)
				}
				if got := c.Resources.Limits.Memory().String(); got != "1Gi" {
					t.Errorf("memory limit %s, want 1Gi", got)
				}
				if cp := container(t, objs, "Deployment", "ambit-controlplane"); cp.Resources.Requests.Cpu().String() != "50m" || len(cp.Resources.Limits) != 0 {
					t.Errorf("control plane got resources %v, want its defaults (not ztunnel's)", cp.Resources)
				}
			},
		},
		{
			name:   "imagePullSecrets on every pod",
			values: map[string]any{"imagePullSecrets": []any{map[string]any{"name": "regcred"}}},
			check: func(t *testing.T, objs []object) {
				want := []corev1.LocalObjectReference{{Name: "regcred"}}
				specs := map[string]corev1.PodSpec{
					"controlplane":     find[*appsv1.Deployment](t, objs, "Deployment", "ambit-controlplane").Spec.Template.Spec,
					"ztunnel":          find[*appsv1.DaemonSet](t, objs, "DaemonSet", "ztunnel").Spec.Template.Spec,
					"ambit-node-agent": find[*appsv1.DaemonSet](t, objs, "DaemonSet", "ambit-node-agent").Spec.Template.Spec,
				}
				for name, s := range specs {
					if !reflect.DeepEqual(s.ImagePullSecrets, want) {
						t.Errorf("%s imagePullSecrets %v, want %v", name, s.ImagePullSecrets, want)
					}
				}
			},
		},
		{
			name:   "namespace.create false leaves the namespace to helm --create-namespace",
			values: map[string]any{"namespace": map[string]any{"create": false}},
			check: func(t *testing.T, objs []object) {
				wantNoKind(t, objs, "Namespace")
			},
		},
		{
			name:   "crds.install false leaves out the Ambit CRDs only",
			values: map[string]any{"crds": map[string]any{"install": false}},
			check: func(t *testing.T, objs []object) {
				if got := crdGroups(objs); !slices.Equal(got, []string{"gateway.networking.k8s.io"}) {
					t.Errorf("CRD groups %v, want only the Gateway API's", got)
				}
			},
		},
		{
			name:   "gatewayAPI.installCRDs false leaves out the Gateway API CRDs only",
			values: map[string]any{"gatewayAPI": map[string]any{"installCRDs": false}},
			check: func(t *testing.T, objs []object) {
				if got := crdGroups(objs); !slices.Equal(got, []string{"networking.ambit.dev", "security.ambit.dev"}) {
					t.Errorf("CRD groups %v, want only Ambit's (networking and security.ambit.dev)", got)
				}
			},
		},
		{
			name:   "gatewayAPI.channel experimental takes the experimental HTTPRoute CRD",
			values: map[string]any{"gatewayAPI": map[string]any{"channel": "experimental"}},
			check: func(t *testing.T, objs []object) {
				for _, want := range []struct{ name, channel string }{
					{"httproutes.gateway.networking.k8s.io", "experimental"},
					{"gateways.gateway.networking.k8s.io", "standard"},
				} {
					crd := find[*apiextensionsv1.CustomResourceDefinition](t, objs, "CustomResourceDefinition", want.name)
					if got := crd.Annotations["gateway.networking.k8s.io/channel"]; got != want.channel {
						t.Errorf("%s channel %q, want %q", want.name, got, want.channel)
					}
					if crd.Annotations["helm.sh/resource-policy"] != "keep" {
						t.Errorf("%s lacks helm.sh/resource-policy: keep", want.name)
					}
				}
				crd := find[*apiextensionsv1.CustomResourceDefinition](t, objs, "CustomResourceDefinition", "httproutes.gateway.networking.k8s.io")
				rule := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["rules"].Items.Schema
				if _, ok := rule.Properties["retry"]; !ok {
					t.Error("the experimental HTTPRoute CRD has no rules[].retry")
				}
			},
		},
		{
			name:   "gatewayAPI.channel defaults to standard",
			values: map[string]any{},
			check: func(t *testing.T, objs []object) {
				crd := find[*apiextensionsv1.CustomResourceDefinition](t, objs, "CustomResourceDefinition", "httproutes.gateway.networking.k8s.io")
				if got := crd.Annotations["gateway.networking.k8s.io/channel"]; got != "standard" {
					t.Errorf("HTTPRoute CRD channel %q, want standard", got)
				}
			},
		},
		{
			name:   "no CRDs at all",
			values: map[string]any{"gatewayAPI": map[string]any{"installCRDs": false}, "crds": map[string]any{"install": false}},
			check: func(t *testing.T, objs []object) {
				wantNoKind(t, objs, "CustomResourceDefinition")
			},
		},
		{
			name:   "waypoint image",
			values: map[string]any{"waypoint": map[string]any{"image": map[string]any{"registry": "registry.example.com/ambit", "tag": "v0.1.0", "pullPolicy": "IfNotPresent"}}},
			check: func(t *testing.T, objs []object) {
				cp := container(t, objs, "Deployment", "ambit-controlplane")
				wantArg(t, cp, "--waypoint-image=registry.example.com/ambit/ambit-waypoint:v0.1.0")
				wantArg(t, cp, "--waypoint-image-pull-policy=IfNotPresent")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, render(t, "", tc.values))
		})
	}
}

func wantArg(t *testing.T, c corev1.Container, arg string) {
	t.Helper()
	if !slices.Contains(c.Args, arg) {
		t.Errorf("container %s args %q lack %s", c.Name, c.Args, arg)
	}
}

// crdGroups returns the groups of the rendered CRDs, sorted, each once.
func crdGroups(objs []object) []string {
	var out []string
	for _, o := range objs {
		if crd, ok := o.obj.(*apiextensionsv1.CustomResourceDefinition); ok && !slices.Contains(out, crd.Spec.Group) {
			out = append(out, crd.Spec.Group)
		}
	}
	slices.Sort(out)
	return out
}

func wantNoKind(t *testing.T, objs []object, kind string) {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind {
			t.Errorf("rendered %s, want none", o)
		}
	}
}

func TestRenderPluginCA(t *testing.T) {
	secretRules := func(r *rbacv1.Role) []rbacv1.PolicyRule {
		var out []rbacv1.PolicyRule
		for _, rule := range r.Rules {
			if slices.Contains(rule.Resources, "secrets") {
				out = append(out, rule)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		enabled any
		want    []rbacv1.PolicyRule
	}{
		{
			name:    "disabled: may generate ambit-ca-root",
			enabled: false,
			want:    []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets", "configmaps"}, Verbs: []string{"get", "create", "update", "patch"}}},
		},
		{
			name:    "enabled: may only read cacerts",
			enabled: true,
			want:    []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"cacerts"}, Verbs: []string{"get"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, "mesh", map[string]any{"pluginCA": map[string]any{"enabled": tc.enabled}})
			role := find[*rbacv1.Role](t, objs, "Role", "ambit-controlplane")
			if got := secretRules(role); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("rules on secrets\n got %+v\nwant %+v", got, tc.want)
			}
			// The trust bundle and the Lease stay writable either way.
			for _, w := range []struct{ resource, verb string }{{"configmaps", "patch"}, {"configmaps", "create"}, {"leases", "update"}} {
				if !slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
					return slices.Contains(r.Resources, w.resource) && slices.Contains(r.Verbs, w.verb) && len(r.ResourceNames) == 0
				}) {
					t.Errorf("Role cannot %s %s: %+v", w.verb, w.resource, role.Rules)
				}
			}
		})
	}
}

func TestRenderRejects(t *testing.T) {
	for _, tc := range []struct {
		name      string
		namespace string
		values    map[string]any
		want      []string // substrings of the error
	}{
		{
			name:   "nftables is not implemented",
			values: map[string]any{"redirection": map[string]any{"mode": "nftables"}},
			want:   []string{"redirection.mode=nftables is not implemented yet", "iptables"},
		},
		{
			name:   "replicas not a number",
			values: map[string]any{"controlplane": map[string]any{"replicas": "x"}},
			want:   []string{"values don't meet the specifications of the schema", "/controlplane/replicas", "string"},
		},
		{
			name:   "zero replicas",
			values: map[string]any{"controlplane": map[string]any{"replicas": 0}},
			want:   []string{"/controlplane/replicas"},
		},
		{
			name:   "misspelt key",
			values: map[string]any{"controlplane": map[string]any{"replica": 2}},
			want:   []string{"replica"},
		},
		{
			name:   "unknown log level",
			values: map[string]any{"logLevel": "verbose"},
			want:   []string{"/logLevel"},
		},
		{
			name:   "unknown pull policy",
			values: map[string]any{"ztunnel": map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}},
			want:   []string{"/ztunnel/image/pullPolicy"},
		},
		{
			name:   "root namespace not a name",
			values: map[string]any{"meshRootNamespace": "Mesh Root"},
			want:   []string{"/meshRootNamespace"},
		},
		{
			name:   "gatewayAPI.channel unknown",
			values: map[string]any{"gatewayAPI": map[string]any{"channel": "beta"}},
			want:   []string{"/gatewayAPI/channel"},
		},
		{
			name:   "gatewayAPI.installCRDs not a bool",
			values: map[string]any{"gatewayAPI": map[string]any{"installCRDs": "yes"}},
			want:   []string{"/gatewayAPI/installCRDs"},
		},
		{
			name:   "unknown waypoint pull policy",
			values: map[string]any{"waypoint": map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}},
			want:   []string{"/waypoint/image/pullPolicy"},
		},
		{
			name:   "pluginCA.enabled not a bool",
			values: map[string]any{"pluginCA": map[string]any{"enabled": "yes"}},
			want:   []string{"/pluginCA/enabled"},
		},
		{
			name:   "namespace not a map",
			values: map[string]any{"namespace": "mesh"},
			want:   []string{"/namespace"},
		},
		{
			name:      "invalid release namespace",
			namespace: "Ambit_System",
			want:      []string{`namespace "Ambit_System" is not a valid namespace name`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Render(tc.namespace, tc.values)
			if err == nil {
				t.Fatalf("Render succeeded, want an error containing %q; output:\n%s", tc.want, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestRenderDoesNotModifyValues(t *testing.T) {
	values := map[string]any{"namespace": map[string]any{}, "controlplane": map[string]any{"replicas": 2}}
	before := fmt.Sprint(values)
	render(t, "", values)
	if after := fmt.Sprint(values); after != before {
		t.Errorf("values changed from %s to %s", before, after)
	}
}
