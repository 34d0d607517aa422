// Package crdtest holds the checks the API packages' tests run on their
// CustomResourceDefinitions (deploy/charts/ambit/files/crds): the schema
// names the same properties as the Go types, with matching types and
// enums, and every CEL rule has a message. Only tests import it.
package crdtest

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Dir holds the CRDs' single source, in the Helm chart
// (deploy/charts/ambit/files/crds of the repository), relative to a
// package directory <group>/<version> of the api module.
var Dir = filepath.Join("..", "..", "..", "deploy", "charts", "ambit", "files", "crds")

// CRD is the part of an apiextensions.k8s.io/v1 CustomResourceDefinition
// these tests read (so that the API module does not depend on
// k8s.io/apiextensions-apiserver). Decoded strictly: a misspelt field fails.
type CRD struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       Spec           `json:"spec"`
}

// Spec is a CRD's spec.
type Spec struct {
	Group string `json:"group"`
	Names struct {
		Kind       string   `json:"kind"`
		ListKind   string   `json:"listKind"`
		Plural     string   `json:"plural"`
		Singular   string   `json:"singular"`
		Categories []string `json:"categories"`
	} `json:"names"`
	Scope    string    `json:"scope"`
	Versions []Version `json:"versions"`
}

// Version is one entry of spec.versions.
type Version struct {
	Name         string `json:"name"`
	Served       bool   `json:"served"`
	Storage      bool   `json:"storage"`
	Subresources struct {
		Status *struct{} `json:"status"`
	} `json:"subresources"`
	AdditionalPrinterColumns []struct {
		Name        string `json:"name"`
		Type        string `json:"type"`
		Description string `json:"description"`
		JSONPath    string `json:"jsonPath"`
	} `json:"additionalPrinterColumns"`
	Schema struct {
		OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
	} `json:"schema"`
}

// Load reads and decodes the CRD file of Dir.
func Load(t *testing.T, file string) CRD {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(Dir, file))
	if err != nil {
		t.Fatalf("read CRD: %v", err)
	}
	var c CRD
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatalf("decode %s as a CustomResourceDefinition: %v", file, err)
	}
	return c
}

// Lookup follows properties by name from schema s.
func Lookup(t *testing.T, s map[string]any, names ...string) map[string]any {
	t.Helper()
	for _, n := range names {
		props, _ := s["properties"].(map[string]any)
		next, ok := props[n].(map[string]any)
		if !ok {
			t.Fatalf("schema has no property %s", strings.Join(names, "."))
		}
		s = next
	}
	return s
}

// CompareSchema checks that schema s describes Go type typ: the same JSON
// property names at every level (both ways), matching OpenAPI types, and
// enums equal to the Go constants listed in enums (the allowed values of
// the Go string types the schemas restrict with an enum).
func CompareSchema(t *testing.T, enums map[reflect.Type][]string, path string, typ reflect.Type, s map[string]any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	wantType := func(want string) {
		t.Helper()
		if s["type"] != want {
			t.Errorf("%s: schema type %v, Go type %s wants %s", path, s["type"], typ, want)
		}
	}
	if values, ok := enums[typ]; ok {
		got, _ := s["enum"].([]any)
		var gotS []string
		for _, v := range got {
			gotS = append(gotS, v.(string))
		}
		if !slices.Equal(gotS, values) {
			t.Errorf("%s: enum %v, Go constants of %s are %v", path, gotS, typ, values)
		}
	} else if _, ok := s["enum"]; ok {
		t.Errorf("%s: schema has an enum but Go type %s has no constants listed in the test", path, typ)
	}
	switch {
	case typ == reflect.TypeFor[metav1.Time]():
		wantType("string")
		if s["format"] != "date-time" {
			t.Errorf("%s: format %v, want date-time", path, s["format"])
		}
		return
	case typ == reflect.TypeFor[metav1.Duration]():
		// Marshals as a Go duration string ("200ms").
		wantType("string")
		return
	case typ == reflect.TypeFor[metav1.ObjectMeta]():
		// Validated by the API server itself; the schema only says object.
		wantType("object")
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		wantType("object")
		goFields := map[string]reflect.Type{}
		jsonFields(typ, goFields)
		props, _ := s["properties"].(map[string]any)
		for name, ft := range goFields {
			sub, ok := props[name].(map[string]any)
			if !ok {
				t.Errorf("%s: Go field %q (%s) is missing from the schema", path, name, ft)
				continue
			}
			CompareSchema(t, enums, path+"."+name, ft, sub)
		}
		for name := range props {
			if _, ok := goFields[name]; !ok {
				t.Errorf("%s: schema property %q has no Go field in %s", path, name, typ)
			}
		}
	case reflect.Slice:
		wantType("array")
		items, ok := s["items"].(map[string]any)
		if !ok {
			t.Errorf("%s: array without items", path)
			return
		}
		CompareSchema(t, enums, path+"[]", typ.Elem(), items)
	case reflect.Map:
		wantType("object")
		if _, ok := s["properties"]; ok {
			t.Errorf("%s: a Go map must be additionalProperties, not properties", path)
		}
		switch typ.Key().Kind() {
		case reflect.String:
		case reflect.Uint32:
			// JSON object keys are strings: the schema must check they
			// are numbers, or decoding into the Go map fails.
			if _, ok := s["x-kubernetes-validations"]; !ok {
				t.Errorf("%s: map keyed by %s needs an x-kubernetes-validations rule on its keys", path, typ.Key())
			}
		default:
			t.Errorf("%s: map key type %s not handled by the test", path, typ.Key())
		}
		values, ok := s["additionalProperties"].(map[string]any)
		if !ok {
			t.Errorf("%s: map without additionalProperties", path)
			return
		}
		CompareSchema(t, enums, path+"{}", typ.Elem(), values)
	case reflect.String:
		wantType("string")
	case reflect.Int32, reflect.Int64, reflect.Uint32:
		wantType("integer")
	case reflect.Bool:
		wantType("boolean")
	default:
		t.Errorf("%s: Go kind %s not handled by the test", path, typ.Kind())
	}
}

// jsonFields adds the JSON property names of struct typ to out, flattening
// inline embedded structs.
func jsonFields(typ reflect.Type, out map[string]reflect.Type) {
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) {
			jsonFields(f.Type, out)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
}

// CheckRules fails for CEL rules without a message: the API server would
// answer with the rule text, which users cannot act on.
func CheckRules(t *testing.T, path string, node any) {
	t.Helper()
	switch n := node.(type) {
	case map[string]any:
		if rules, ok := n["x-kubernetes-validations"].([]any); ok {
			for i, r := range rules {
				rule, _ := r.(map[string]any)
				if s, _ := rule["rule"].(string); strings.TrimSpace(s) == "" {
					t.Errorf("%s: x-kubernetes-validations[%d] has no rule", path, i)
				}
				if s, _ := rule["message"].(string); strings.TrimSpace(s) == "" {
					t.Errorf("%s: x-kubernetes-validations[%d] (%v) has no message", path, i, rule["rule"])
				}
			}
		}
		keys := make([]string, 0, len(n))
		for k := range n {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			CheckRules(t, path+"/"+k, n[k])
		}
	case []any:
		for _, v := range n {
			CheckRules(t, path, v)
		}
	}
}

// Want is what Check expects of one CRD file.
type Want struct {
	// File is the file name in Dir.
	File string
	// Group and Version of the API; Kind, ListKind and Plural its names.
	Group, Version, Kind, ListKind, Plural string
	// Obj is a zero value of the Go type of Kind.
	Obj any
	// Columns are printer columns: name → jsonPath.
	Columns map[string]string
	// Enums are the allowed values of the Go string types the schema
	// restricts with an enum.
	Enums map[reflect.Type][]string
	// NoStatus is set for a kind nothing writes a status on (no status
	// subresource).
	NoStatus bool
}

// Check loads w.File and checks its names, scope, single served and
// stored version with a status subresource, printer columns, that its
// schema matches w.Obj (CompareSchema) and that its rules have messages.
// It returns the openAPIV3Schema.
func Check(t *testing.T, w Want) map[string]any {
	t.Helper()
	c := Load(t, w.File)
	if c.APIVersion != "apiextensions.k8s.io/v1" || c.Kind != "CustomResourceDefinition" {
		t.Errorf("apiVersion/kind = %s/%s, want apiextensions.k8s.io/v1/CustomResourceDefinition", c.APIVersion, c.Kind)
	}
	if want := w.Plural + "." + w.Group; c.Metadata["name"] != want {
		t.Errorf("metadata.name = %v, want %s", c.Metadata["name"], want)
	}
	if c.Spec.Group != w.Group {
		t.Errorf("group = %q, want %q", c.Spec.Group, w.Group)
	}
	if c.Spec.Names.Kind != w.Kind || c.Spec.Names.ListKind != w.ListKind || c.Spec.Names.Plural != w.Plural ||
		c.Spec.Names.Singular != strings.ToLower(w.Kind) {
		t.Errorf("names = %+v, want kind %s, listKind %s, plural %s", c.Spec.Names, w.Kind, w.ListKind, w.Plural)
	}
	// The list type must be registered under the listKind.
	if got := reflect.TypeOf(w.Obj).Name() + "List"; got != w.ListKind {
		t.Errorf("Go list type %s, CRD listKind %s", got, w.ListKind)
	}
	if c.Spec.Scope != "Namespaced" {
		t.Errorf("scope = %q, want Namespaced", c.Spec.Scope)
	}
	if len(c.Spec.Versions) != 1 {
		t.Fatalf("%d versions, want exactly %s", len(c.Spec.Versions), w.Version)
	}
	v := c.Spec.Versions[0]
	if v.Name != w.Version || !v.Served || !v.Storage {
		t.Errorf("version %q served=%v storage=%v, want %s served and stored", v.Name, v.Served, v.Storage, w.Version)
	}
	switch {
	case v.Subresources.Status == nil && !w.NoStatus:
		t.Error("no status subresource: the control plane writes status through /status")
	case v.Subresources.Status != nil && w.NoStatus:
		t.Errorf("a status subresource, but nothing writes the status of %s", w.Kind)
	}
	gotColumns := map[string]string{}
	for _, col := range v.AdditionalPrinterColumns {
		gotColumns[col.Name] = col.JSONPath
	}
	for name, path := range w.Columns {
		if gotColumns[name] != path {
			t.Errorf("printer column %s has jsonPath %q, want %q", name, gotColumns[name], path)
		}
	}
	root := v.Schema.OpenAPIV3Schema
	if root == nil {
		t.Fatal("no openAPIV3Schema")
	}
	CompareSchema(t, w.Enums, "", reflect.TypeOf(w.Obj), root)
	CheckRules(t, "", root)
	return root
}
