package charts

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiextensions "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// crdValidator validates objects against one CRD's schema as the API
// server does: the OpenAPI schema, then its x-kubernetes-validations (CEL).
type crdValidator struct {
	schema     *apiextensions.JSONSchemaProps
	structural *structuralschema.Structural
	cel        *cel.Validator
}

func loadValidator(t *testing.T, file string) *crdValidator {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("ambit", "files", "crds", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(raw, &crd); err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	ss, err := structuralschema.NewStructural(&internal)
	if err != nil {
		t.Fatalf("%s: not a structural schema: %v", file, err)
	}
	return &crdValidator{schema: &internal, structural: ss, cel: cel.NewValidator(ss, true, celconfig.PerCallLimit)}
}

// validate returns the errors the API server would answer for obj, joined.
func (v *crdValidator) validate(t *testing.T, obj map[string]any) string {
	t.Helper()
	sv, _, err := apiservervalidation.NewSchemaValidator(v.schema)
	if err != nil {
		t.Fatal(err)
	}
	errs := apiservervalidation.ValidateCustomResource(nil, obj, sv)
	if len(errs) == 0 {
		celErrs, _ := v.cel.Validate(context.Background(), field.NewPath(""), v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	return strings.Join(msgs, "; ")
}

func TestBackendPolicyValidation(t *testing.T) {
	v := loadValidator(t, "networking.ambit.dev_backendpolicies.yaml")
	for _, tc := range []struct {
		name string
		spec string // YAML
		want string // "" valid, else a substring of the errors
	}{
		{name: "everything", spec: `
targetRefs: [{group: "", kind: Service, name: echo, sectionName: http}, {group: "", kind: Service, name: other}]
connectionPool:
  tcp: {maxConnections: 100, connectTimeout: 2s}
  http: {maxPendingRequests: 10, maxRequests: 50, maxRequestsPerConnection: 5}
outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 1m30s, maxEjectionPercent: 25}
loadBalancer: {algorithm: LeastRequest, choiceCount: 3}`},
		{name: "EWMA alone", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], loadBalancer: {algorithm: EWMA}}`},
		{name: "max ejection 0", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], outlierDetection: {consecutive5xxErrors: 1, maxEjectionPercent: 0}}`},
		{name: "nothing set", spec: `{targetRefs: [{group: "", kind: Service, name: echo}]}`,
			want: "must set at least one of connectionPool, outlierDetection and loadBalancer"},
		{name: "no targets", spec: `{targetRefs: [], loadBalancer: {algorithm: EWMA}}`, want: "spec.targetRefs"},
		{name: "not a Service", spec: `{targetRefs: [{group: apps, kind: Deployment, name: echo}], loadBalancer: {algorithm: EWMA}}`,
			want: `a targetRef must be a Service: group "" (core) and kind Service`},
		{name: "same target twice", spec: `{targetRefs: [{group: "", kind: Service, name: echo}, {group: "", kind: Service, name: echo}], loadBalancer: {algorithm: EWMA}}`,
			want: "must not name the same Service (and sectionName) twice"},
		{name: "bad sectionName", spec: `{targetRefs: [{group: "", kind: Service, name: echo, sectionName: HTTP_1}], loadBalancer: {algorithm: EWMA}}`,
			want: "sectionName must be a Service port name"},
		{name: "max ejection over 100", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], outlierDetection: {consecutive5xxErrors: 3, maxEjectionPercent: 150}}`,
			want: "maxEjectionPercent: Invalid value: 150: spec.outlierDetection.maxEjectionPercent in body should be less than or equal to 100"},
		{name: "outlier without a trigger", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], outlierDetection: {interval: 1s}}`,
			want: "outlierDetection must set consecutive5xxErrors or consecutiveGatewayErrors"},
		{name: "zero maxRequests", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], connectionPool: {http: {maxRequests: 0}}}`,
			want: "should be greater than or equal to 1"},
		{name: "empty connection pool", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], connectionPool: {}}`,
			want: "connectionPool must set tcp or http"},
		{name: "bad duration", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], connectionPool: {tcp: {connectTimeout: 2 seconds}}}`,
			want: `must be a positive duration of h, m, s and ms parts`},
		{name: "zero duration", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], outlierDetection: {consecutive5xxErrors: 3, interval: 0s}}`,
			want: `must be a positive duration`},
		{name: "unknown algorithm", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], loadBalancer: {algorithm: Random}}`,
			want: `Unsupported value: "Random"`},
		{name: "choiceCount with round robin", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], loadBalancer: {algorithm: RoundRobin, choiceCount: 2}}`,
			want: "choiceCount applies only to algorithm LeastRequest or EWMA"},
		{name: "choiceCount 1", spec: `{targetRefs: [{group: "", kind: Service, name: echo}], loadBalancer: {algorithm: LeastRequest, choiceCount: 1}}`,
			want: "should be greater than or equal to 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// As the API server decodes: integers are int64.
			js, err := yaml.YAMLToJSON([]byte(tc.spec))
			if err != nil {
				t.Fatal(err)
			}
			var spec map[string]any
			if err := utiljson.Unmarshal(js, &spec); err != nil {
				t.Fatal(err)
			}
			obj := map[string]any{
				"apiVersion": "networking.ambit.dev/v1alpha1", "kind": "BackendPolicy",
				"metadata": map[string]any{"name": "p", "namespace": "ns"},
				"spec":     spec,
			}
			got := v.validate(t, obj)
			switch {
			case tc.want == "" && got != "":
				t.Errorf("rejected a valid policy: %s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("errors %q, want one containing %q", got, tc.want)
			}
		})
	}
}
