package autowaypoint

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func obj(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestAddNeeds(t *testing.T) {
	for _, tc := range []struct {
		name string
		obj  string
		want map[string][]string
	}{{
		name: "HTTPRoute on a Service",
		obj: `{kind: HTTPRoute, metadata: {namespace: shop, name: canary},
  spec: {parentRefs: [{group: "", kind: Service, name: web}, {kind: Service, name: api, port: 80}]}}`,
		want: map[string][]string{"web": {"HTTPRoute shop/canary"}, "api": {"HTTPRoute shop/canary"}},
	}, {
		name: "GRPCRoute on a Service, core group spelled out",
		obj:  `{kind: GRPCRoute, metadata: {namespace: shop, name: g}, spec: {parentRefs: [{group: core, kind: Service, name: api}]}}`,
		want: map[string][]string{"api": {"GRPCRoute shop/g"}},
	}, {
		name: "route on a Gateway (ingress): nothing",
		obj:  `{kind: HTTPRoute, metadata: {namespace: shop, name: r}, spec: {parentRefs: [{name: ingress}]}}`,
	}, {
		name: "consumer route (Service in another namespace): nothing",
		obj:  `{kind: HTTPRoute, metadata: {namespace: shop, name: r}, spec: {parentRefs: [{kind: Service, name: web, namespace: other}]}}`,
	}, {
		name: "route being deleted: nothing",
		obj:  `{kind: HTTPRoute, metadata: {namespace: shop, name: r, deletionTimestamp: "2026-01-01T00:00:00Z"}, spec: {parentRefs: [{kind: Service, name: web}]}}`,
	}, {
		name: "policy with HTTP rules targeting a Service",
		obj: `{kind: AuthorizationPolicy, metadata: {namespace: shop, name: admin},
  spec: {targetRefs: [{kind: Service, group: "", name: web}], rules: [{to: [{operation: {ports: ["80"]}}]}, {to: [{operation: {methods: [POST]}}]}]}}`,
		want: map[string][]string{"web": {"AuthorizationPolicy shop/admin"}},
	}, {
		name: "policy with a when condition",
		obj: `{kind: AuthorizationPolicy, metadata: {namespace: shop, name: hdr},
  spec: {targetRefs: [{kind: Service, name: web}], rules: [{when: [{key: "request.headers[x-user]", values: [a]}]}]}}`,
		want: map[string][]string{"web": {"AuthorizationPolicy shop/hdr"}},
	}, {
		name: "policy with L4 rules only: ztunnel enforces it",
		obj: `{kind: AuthorizationPolicy, metadata: {namespace: shop, name: l4},
  spec: {targetRefs: [{kind: Service, name: web}], rules: [{from: [{source: {principals: [a]}}], to: [{operation: {ports: ["80"]}}]}]}}`,
	}, {
		name: "policy with HTTP rules on a selector: no target, nothing",
		obj:  `{kind: AuthorizationPolicy, metadata: {namespace: shop, name: sel}, spec: {selector: {matchLabels: {app: web}}, rules: [{to: [{operation: {paths: [/a]}}]}]}}`,
	}, {
		name: "policy targeting a Gateway: nothing to provision",
		obj: `{kind: AuthorizationPolicy, metadata: {namespace: shop, name: gw},
  spec: {targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: wp}], rules: [{to: [{operation: {paths: [/a]}}]}]}}`,
	}, {
		name: "BackendPolicy: its Service targets, port or not",
		obj: `{kind: BackendPolicy, metadata: {namespace: shop, name: bp},
  spec: {targetRefs: [{group: "", kind: Service, name: web, sectionName: http}, {group: "", kind: Service, name: api}], loadBalancer: {algorithm: EWMA}}}`,
		want: map[string][]string{"web": {"BackendPolicy shop/bp"}, "api": {"BackendPolicy shop/bp"}},
	}, {
		name: "object of another namespace: nothing",
		obj:  `{kind: HTTPRoute, metadata: {namespace: other, name: r}, spec: {parentRefs: [{kind: Service, name: web}]}}`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string][]string{}
			AddNeeds(got, "shop", obj(t, tc.obj))
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("AddNeeds (-want +got):\n%s", diff)
			}
		})
	}
}
