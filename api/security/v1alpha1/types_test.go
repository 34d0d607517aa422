package securityv1alpha1

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// objects are constructors of every top-level type of the package.
var objects = map[string]func() runtime.Object{
	"AuthorizationPolicy":     func() runtime.Object { return &AuthorizationPolicy{} },
	"AuthorizationPolicyList": func() runtime.Object { return &AuthorizationPolicyList{} },
	"PeerAuthentication":      func() runtime.Object { return &PeerAuthentication{} },
	"PeerAuthenticationList":  func() runtime.Object { return &PeerAuthenticationList{} },
}

// fill sets every exported field reachable from v to a value derived from
// *n, in place: existing slices, maps and pointers are written through, so
// that a copy sharing any of them with v changes too. Nil ones are
// allocated. Two fills from the same *n on zero values give equal results.
func fill(t *testing.T, v reflect.Value, n *int) {
	t.Helper()
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fill(t, v.Elem(), n)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[metav1.Time]() {
			v.Set(reflect.ValueOf(metav1.NewTime(time.Unix(int64(*n), 0))))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(t, v.Field(i), n)
			}
		}
	case reflect.Slice:
		if v.IsNil() {
			v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		}
		for i := range v.Len() {
			fill(t, v.Index(i), n)
		}
	case reflect.Map:
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		key := reflect.New(v.Type().Key()).Elem()
		fill(t, key, n)
		for _, k := range append(v.MapKeys(), key) {
			val := reflect.New(v.Type().Elem()).Elem()
			fill(t, val, n)
			v.SetMapIndex(k, val)
		}
	case reflect.String:
		v.SetString(fmt.Sprintf("v%d", *n))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Bool:
		v.SetBool(!v.Bool())
	default:
		t.Fatalf("fill: kind %s (%s) not handled", v.Kind(), v.Type())
	}
}

func TestDeepCopy(t *testing.T) {
	for name, newObj := range objects {
		t.Run(name, func(t *testing.T) {
			orig, twin := newObj(), newObj()
			n := 0
			fill(t, reflect.ValueOf(orig), &n)
			n = 0
			fill(t, reflect.ValueOf(twin), &n)
			if !reflect.DeepEqual(orig, twin) {
				t.Fatal("fill is not deterministic")
			}

			cp := orig.DeepCopyObject()
			if !reflect.DeepEqual(cp, orig) {
				t.Fatalf("DeepCopyObject differs from the original:\n got %+v\nwant %+v", cp, orig)
			}
			if reflect.ValueOf(cp).Pointer() == reflect.ValueOf(orig).Pointer() {
				t.Fatal("DeepCopyObject returned the receiver")
			}

			// Overwrite every field of the original in place: a copy that
			// shares a slice, map or pointer with it changes too.
			n = 1000
			fill(t, reflect.ValueOf(orig), &n)
			if reflect.DeepEqual(orig, twin) {
				t.Fatal("second fill changed nothing")
			}
			if !reflect.DeepEqual(cp, twin) {
				t.Fatalf("the copy changed with the original (shared memory):\n got %+v\nwant %+v", cp, twin)
			}
		})
	}
}

func TestDeepCopyNil(t *testing.T) {
	var ap *AuthorizationPolicy
	if ap.DeepCopy() != nil {
		t.Error("DeepCopy of a nil *AuthorizationPolicy is not nil")
	}
	var pa *PeerAuthentication
	if pa.DeepCopyObject() != nil {
		t.Error("DeepCopyObject of a nil *PeerAuthentication is not nil")
	}
}

func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatalf("AddToScheme: %v", err)
	}
	for name, newObj := range objects {
		t.Run(name, func(t *testing.T) {
			gvks, _, err := s.ObjectKinds(newObj())
			if err != nil {
				t.Fatalf("ObjectKinds: %v", err)
			}
			want := SchemeGroupVersion.WithKind(name)
			if len(gvks) != 1 || gvks[0] != want {
				t.Errorf("kinds = %v, want [%v]", gvks, want)
			}
			obj, err := s.New(want)
			if err != nil {
				t.Fatalf("New(%v): %v", want, err)
			}
			if reflect.TypeOf(obj) != reflect.TypeOf(newObj()) {
				t.Errorf("New(%v) = %T", want, obj)
			}
		})
	}
	if got := Resource("peerauthentications").String(); got != "peerauthentications.security.ambit.dev" {
		t.Errorf("Resource = %q", got)
	}
}

// TestSamples decodes deploy/samples/policies.yaml strictly into the Go
// types (an unknown or misspelt field fails) and checks it holds the
// policies its comments describe.
func TestSamples(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "samples", "policies.yaml"))
	if err != nil {
		t.Fatalf("read samples: %v", err)
	}
	got := map[string]runtime.Object{}
	for doc := range strings.SplitSeq(string(raw), "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("decode sample: %v", err)
		}
		if tm.APIVersion != SchemeGroupVersion.String() {
			t.Fatalf("sample %s has apiVersion %q, want %q", tm.Kind, tm.APIVersion, SchemeGroupVersion)
		}
		newObj, ok := objects[tm.Kind]
		if !ok {
			t.Fatalf("sample of unknown kind %q", tm.Kind)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("decode %s strictly: %v", tm.Kind, err)
		}
		got[obj.(metav1.Object).GetName()] = obj
	}

	deny, _ := got["deny-untrusted"].(*AuthorizationPolicy)
	if deny == nil || deny.Spec.Action != ActionDeny || deny.Spec.Selector != nil {
		t.Errorf("want a namespace-wide DENY AuthorizationPolicy deny-untrusted, got %+v", got["deny-untrusted"])
	}
	allow, _ := got["backend-allow-frontend"].(*AuthorizationPolicy)
	if allow == nil || allow.Spec.Action != ActionAllow || len(allow.Spec.Rules) != 1 ||
		!slices.Equal(allow.Spec.Rules[0].From[0].Source.Principals, []string{"cluster.local/ns/ambit-demo/sa/frontend"}) {
		t.Errorf("want an ALLOW AuthorizationPolicy backend-allow-frontend for one principal, got %+v", got["backend-allow-frontend"])
	}
	strict, _ := got["default"].(*PeerAuthentication)
	if strict == nil || strict.Spec.MTLS == nil || strict.Spec.MTLS.Mode != MTLSModeStrict {
		t.Errorf("want a STRICT PeerAuthentication default, got %+v", got["default"])
	}
}

// TestPortLevelMTLSJSON checks the map keyed by port number reads and
// writes as the CRD's JSON object keyed by decimal strings.
func TestPortLevelMTLSJSON(t *testing.T) {
	in := PeerAuthenticationSpec{
		Selector:      &WorkloadSelector{MatchLabels: map[string]string{"app": "backend"}},
		PortLevelMTLS: map[uint32]MutualTLS{8080: {Mode: MTLSModePermissive}, 65535: {Mode: MTLSModeStrict}},
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	const want = `{"selector":{"matchLabels":{"app":"backend"}},"portLevelMtls":{"65535":{"mode":"STRICT"},"8080":{"mode":"PERMISSIVE"}}}`
	if string(raw) != want {
		t.Errorf("JSON = %s, want %s", raw, want)
	}
	var out PeerAuthenticationSpec
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip = %+v, want %+v", out, in)
	}
	if err := json.Unmarshal([]byte(`{"portLevelMtls":{"http":{"mode":"STRICT"}}}`), &out); err == nil {
		t.Error("a non-numeric portLevelMtls key decoded without error")
	}
}

func TestOperationHTTPFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   Operation
		want []string
	}{
		{name: "empty", op: Operation{}, want: nil},
		{name: "ports only", op: Operation{Ports: []string{"8080"}, NotPorts: []string{"9090"}}, want: nil},
		{name: "methods", op: Operation{Ports: []string{"80"}, Methods: []string{"GET"}}, want: []string{"methods"}},
		{
			name: "every HTTP field",
			op: Operation{
				Methods: []string{"GET"}, NotMethods: []string{"POST"}, Paths: []string{"/a"},
				NotPaths: []string{"/b"}, Hosts: []string{"a.example"}, NotHosts: []string{"b.example"},
			},
			want: []string{"methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"},
		},
		{name: "empty list is unset", op: Operation{Paths: []string{}}, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.op.HTTPFields(); !slices.Equal(got, tc.want) {
				t.Errorf("HTTPFields() = %v, want %v", got, tc.want)
			}
		})
	}
}
