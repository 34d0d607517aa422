package migrate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// chartFiles is the chart's files directory, which holds the CRDs it
// installs: Ambit's (crds/) and Gateway API's. HTTPRoute is taken from the
// experimental channel, whose schema keeps rules[].retry.
var chartFiles = filepath.Join("..", "..", "..", "deploy", "charts", "ambit", "files")

// crdSchema is one served version of a CRD, ready to validate objects.
type crdSchema struct {
	file       string
	structural *structuralschema.Structural
	validator  validation.SchemaValidator
	cel        *cel.Validator
}

// loadCRDs reads every CRD of the chart, keyed by apiVersion/kind.
func loadCRDs(t *testing.T) map[string]crdSchema {
	t.Helper()
	var files []string
	for _, dir := range []string{"crds", "gateway-api", "gateway-api-experimental"} {
		m, err := filepath.Glob(filepath.Join(chartFiles, dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	out := map[string]crdSchema{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(raw, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served || v.Schema == nil {
				continue
			}
			var internal apiextensions.JSONSchemaProps
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			ss, err := structuralschema.NewStructural(&internal)
			if err != nil {
				t.Fatalf("%s %s: %v", f, v.Name, err)
			}
			sv, _, err := validation.NewSchemaValidator(&internal)
			if err != nil {
				t.Fatalf("%s %s: %v", f, v.Name, err)
			}
			key := crd.Spec.Group + "/" + v.Name + "/" + crd.Spec.Names.Kind
			// The experimental HTTPRoute replaces the standard one.
			if prev, ok := out[key]; ok && strings.Contains(prev.file, "experimental") {
				continue
			}
			out[key] = crdSchema{file: f, structural: ss, validator: sv, cel: cel.NewValidator(ss, true, celconfig.PerCallLimit)}
		}
	}
	return out
}

// TestObjectsMatchCRDs validates every object of every golden case's YAML
// output against the schema (OpenAPI, CEL rules, no unknown fields) of
// the CRD the chart ships for its kind.
func TestObjectsMatchCRDs(t *testing.T) {
	crds := loadCRDs(t)
	goldens, err := filepath.Glob("testdata/*.yaml.golden")
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no testdata/*.yaml.golden (%v)", err)
	}
	validated := map[string]int{}
	for _, g := range goldens {
		raw, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for i := 0; ; i++ {
			var doc []byte
			var rawDoc any
			if err := d.Decode(&rawDoc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", g, i, err)
			}
			if rawDoc == nil {
				continue
			}
			if doc, err = utiljson.Marshal(rawDoc); err != nil {
				t.Fatal(err)
			}
			var obj map[string]any
			if err := utiljson.Unmarshal(doc, &obj); err != nil {
				t.Fatal(err)
			}
			apiVersion, _ := obj["apiVersion"].(string)
			kind, _ := obj["kind"].(string)
			key := apiVersion + "/" + kind
			meta, _ := obj["metadata"].(map[string]any)
			where := g + ": " + kind + "/" + meta["name"].(string)
			s, ok := crds[key]
			if !ok {
				t.Errorf("%s: the chart has no CRD for %s", where, key)
				continue
			}
			// As the apiserver does: prune (here: unknown fields fail),
			// default, validate.
			pruned := structuralpruning.PruneWithOptions(obj, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
			for _, p := range pruned {
				t.Errorf("%s: field %s is not in the schema (%s)", where, p, s.file)
			}
			structuraldefaulting.Default(obj, s.structural)
			for _, e := range validation.ValidateCustomResource(nil, obj, s.validator) {
				t.Errorf("%s: %v (%s)", where, e, s.file)
			}
			celErrs, _ := s.cel.Validate(context.Background(), nil, s.structural, obj, nil, celconfig.RuntimeCELCostBudget)
			for _, e := range celErrs {
				t.Errorf("%s: %v (%s)", where, e, s.file)
			}
			validated[kind]++
		}
	}
	for _, kind := range []string{"HTTPRoute", "HTTPFault", "PeerAuthentication", "BackendPolicy", "AuthorizationPolicy"} {
		if validated[kind] == 0 {
			t.Errorf("no %s validated: the golden files should produce some", kind)
		}
	}
	t.Logf("validated: %v", validated)
}
