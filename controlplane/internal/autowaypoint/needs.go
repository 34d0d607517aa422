package autowaypoint

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// L7 objects that need a waypoint for the Services they attach to.
const (
	KindHTTPRoute           = "HTTPRoute"
	KindGRPCRoute           = "GRPCRoute"
	KindAuthorizationPolicy = "AuthorizationPolicy"
	KindBackendPolicy       = "BackendPolicy"
)

// httpOperationFields are the fields of an AuthorizationPolicy operation
// only a waypoint can enforce.
var httpOperationFields = []string{"methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"}

// AddNeeds adds to needs (Service name → objects) the Services of
// namespace ns that obj, an HTTPRoute, GRPCRoute, AuthorizationPolicy or
// BackendPolicy of that namespace, needs a waypoint for:
//
//   - a route: each parentRef of kind Service (core group) in the route's
//     own namespace (consumer routes, in another namespace, are not
//     supported and need nothing);
//   - an AuthorizationPolicy: each targetRef of kind Service (core group),
//     when a rule uses HTTP fields (an operation's methods, paths or hosts,
//     or a `when` condition). A policy with L4 rules only is enforced by
//     ztunnel and needs no waypoint;
//   - a BackendPolicy: each targetRef of kind Service (core group): only a
//     waypoint applies connection pools, outlier detection and load
//     balancing.
func AddNeeds(needs map[string][]string, ns string, obj *unstructured.Unstructured) {
	if obj.GetNamespace() != ns || obj.GetDeletionTimestamp() != nil {
		return
	}
	kind := obj.GetKind()
	what := kind + " " + ns + "/" + obj.GetName()
	var refs []any
	switch kind {
	case KindHTTPRoute, KindGRPCRoute:
		refs, _, _ = unstructured.NestedSlice(obj.Object, "spec", "parentRefs")
	case KindAuthorizationPolicy:
		if !usesHTTP(obj) {
			return
		}
		refs, _, _ = unstructured.NestedSlice(obj.Object, "spec", "targetRefs")
	case KindBackendPolicy:
		refs, _, _ = unstructured.NestedSlice(obj.Object, "spec", "targetRefs")
	default:
		return
	}
	for _, r := range refs {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		group, _ := m["group"].(string)
		k, _ := m["kind"].(string)
		name, _ := m["name"].(string)
		refNS, _ := m["namespace"].(string)
		if group != "" && group != "core" || k != "Service" || name == "" || refNS != "" && refNS != ns {
			continue
		}
		needs[name] = append(needs[name], what)
	}
}

// usesHTTP reports whether an AuthorizationPolicy has a rule with HTTP
// fields.
func usesHTTP(obj *unstructured.Unstructured) bool {
	rules, _, _ := unstructured.NestedSlice(obj.Object, "spec", "rules")
	for _, r := range rules {
		rule, ok := r.(map[string]any)
		if !ok {
			continue
		}
		if when, ok := rule["when"].([]any); ok && len(when) > 0 {
			return true
		}
		to, _ := rule["to"].([]any)
		for _, t := range to {
			tm, _ := t.(map[string]any)
			op, _ := tm["operation"].(map[string]any)
			for _, f := range httpOperationFields {
				if vs, ok := op[f].([]any); ok && len(vs) > 0 {
					return true
				}
			}
		}
	}
	return false
}
