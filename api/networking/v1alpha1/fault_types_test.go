package networkingv1alpha1

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// httpFaultCRD is the CRD's single source, in the Helm chart.
var httpFaultCRD = filepath.Join("..", "..", "..", "deploy", "charts", "ambit", "files", "crds", "networking.ambit.dev_httpfaults.yaml")

// TestHTTPFaultCRD checks the CRD's names and that its schema and the Go
// types have the same JSON properties at every level, with matching types,
// and that every CEL rule says what to fix.
func TestHTTPFaultCRD(t *testing.T) {
	raw, err := os.ReadFile(httpFaultCRD)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Group string `json:"group"`
			Names struct {
				Kind, ListKind, Plural string
			} `json:"names"`
			Scope    string `json:"scope"`
			Versions []struct {
				Name            string `json:"name"`
				Served, Storage bool
				Schema          struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.Metadata.Name != "httpfaults."+GroupName || c.Spec.Group != GroupName || c.Spec.Scope != "Namespaced" {
		t.Errorf("name %s group %s scope %s, want httpfaults.%s, %[4]s, Namespaced", c.Metadata.Name, c.Spec.Group, c.Spec.Scope, GroupName)
	}
	if n := c.Spec.Names; n.Kind != HTTPFaultKind || n.ListKind != "HTTPFaultList" || n.Plural != "httpfaults" {
		t.Errorf("names %+v", n)
	}
	if len(c.Spec.Versions) != 1 || c.Spec.Versions[0].Name != SchemeGroupVersion.Version || !c.Spec.Versions[0].Served || !c.Spec.Versions[0].Storage {
		t.Fatalf("versions %+v, want only %s, served and stored", c.Spec.Versions, SchemeGroupVersion.Version)
	}
	root := c.Spec.Versions[0].Schema.OpenAPIV3Schema
	sameShape(t, "", reflect.TypeFor[HTTPFault](), root)
	rulesHaveMessages(t, "", root)
}

func sameShape(t *testing.T, path string, typ reflect.Type, s map[string]any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	want := map[reflect.Kind]string{reflect.Struct: "object", reflect.String: "string", reflect.Int32: "integer", reflect.Slice: "array"}[typ.Kind()]
	switch typ {
	case reflect.TypeFor[metav1.Duration]():
		want = "string"
	case reflect.TypeFor[metav1.ObjectMeta]():
		if s["type"] != "object" {
			t.Errorf("%s: type %v, want object", path, s["type"])
		}
		return
	}
	if s["type"] != want {
		t.Errorf("%s: schema type %v, Go %s wants %q", path, s["type"], typ, want)
	}
	if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[metav1.Duration]() {
		return
	}
	props, _ := s["properties"].(map[string]any)
	var goNames []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" { // TypeMeta: apiVersion, kind
			for g := range f.Type.Fields() {
				n, _, _ := strings.Cut(g.Tag.Get("json"), ",")
				goNames = append(goNames, n)
			}
			continue
		}
		goNames = append(goNames, name)
		sub, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s: Go field %s is not in the schema", path, name)
			continue
		}
		sameShape(t, path+"."+name, f.Type, sub)
	}
	for name := range props {
		if !slices.Contains(goNames, name) {
			t.Errorf("%s: schema property %s has no Go field", path, name)
		}
	}
}

func rulesHaveMessages(t *testing.T, path string, node any) {
	t.Helper()
	switch n := node.(type) {
	case map[string]any:
		rules, _ := n["x-kubernetes-validations"].([]any)
		for i, r := range rules {
			m, _ := r.(map[string]any)
			if s, _ := m["message"].(string); strings.TrimSpace(s) == "" {
				t.Errorf("%s: rule %d (%v) has no message", path, i, m["rule"])
			}
		}
		for k, v := range n {
			rulesHaveMessages(t, path+"/"+k, v)
		}
	case []any:
		for _, v := range n {
			rulesHaveMessages(t, path, v)
		}
	}
}

func TestHTTPFaultDecodeAndCopy(t *testing.T) {
	const doc = `
apiVersion: networking.ambit.dev/v1alpha1
kind: HTTPFault
metadata: {name: slow, namespace: demo}
spec:
  delay: {fixedDelay: 200ms, percentage: 50}
  abort: {httpStatus: 503, percentage: 10}
`
	var f HTTPFault
	if err := yaml.UnmarshalStrict([]byte(doc), &f); err != nil {
		t.Fatal(err)
	}
	if f.Spec.Delay.FixedDelay.Duration != 200*time.Millisecond || *f.Spec.Delay.Percentage != 50 ||
		*f.Spec.Abort.HTTPStatus != 503 || *f.Spec.Abort.Percentage != 10 || f.Spec.Abort.GRPCStatus != nil {
		t.Fatalf("decoded %+v", f.Spec)
	}
	cp := f.DeepCopy()
	*cp.Spec.Abort.HTTPStatus = 500
	*cp.Spec.Delay.Percentage = 1
	if *f.Spec.Abort.HTTPStatus != 503 || *f.Spec.Delay.Percentage != 50 {
		t.Error("DeepCopy shares pointers with the original")
	}
	l := &HTTPFaultList{Items: []HTTPFault{f}}
	if l.DeepCopyObject().(*HTTPFaultList).Items[0].Name != "slow" {
		t.Error("list copy lost its items")
	}
}
