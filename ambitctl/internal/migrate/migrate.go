// Package migrate converts a namespace's Istio sidecar-era objects
// (VirtualService, DestinationRule, AuthorizationPolicy, PeerAuthentication,
// Sidecar) into the Ambit and Gateway API objects that do the same under
// Ambit, and says, field by field, what does not map and why. It is pure:
// Convert takes the objects read from the cluster (internal/kube reads
// them) and returns a Plan; Plan.Table and Plan.YAML print it. migrate
// apply will apply Plan's objects (unstructured, server-side apply ready).
package migrate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	clinet "istio.io/client-go/pkg/apis/networking/v1"
	clisec "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Source kinds, in the order a plan lists them.
const (
	KindVirtualService      = "VirtualService"
	KindDestinationRule     = "DestinationRule"
	KindAuthorizationPolicy = "AuthorizationPolicy"
	KindPeerAuthentication  = "PeerAuthentication"
	KindSidecar             = "Sidecar"
)

var kindOrder = []string{KindVirtualService, KindDestinationRule, KindAuthorizationPolicy, KindPeerAuthentication, KindSidecar}

// Target API groups and versions (the objects are built as unstructured
// maps with exactly the fields of these APIs).
const (
	GatewayAPIVersion    = "gateway.networking.k8s.io/v1"
	AmbitNetworkingGroup = "networking.ambit.dev"
	AmbitNetworkingAPI   = AmbitNetworkingGroup + "/v1alpha1"
	AmbitSecurityAPI     = "security.ambit.dev/v1alpha1"

	// AnnotationMigratedFrom is set on every produced object: the Istio
	// object (Kind/name) it was converted from, for migrate apply and
	// rollback.
	AnnotationMigratedFrom = "ambit.dev/migrated-from"
)

// Inputs are a namespace's Istio objects and its Services (needed to
// resolve hosts, subsets and L7 policy targets).
type Inputs struct {
	Namespace             string
	VirtualServices       []*clinet.VirtualService
	DestinationRules      []*clinet.DestinationRule
	Sidecars              []*clinet.Sidecar
	AuthorizationPolicies []*clisec.AuthorizationPolicy
	PeerAuthentications   []*clisec.PeerAuthentication
	Services              []corev1.Service
	// Unserved are the Istio resources the apiserver does not serve
	// (e.g. virtualservices.networking.istio.io/v1): the plan says so.
	Unserved []string
	// HTTPRouteCRD is what the cluster's HTTPRoute CRD is: empty when
	// not read, HTTPRouteCRDMissing, HTTPRouteCRDStandard (it has no
	// rules[].retry, which the apiserver then drops) or
	// HTTPRouteCRDExperimental.
	HTTPRouteCRD string
}

// Values of Inputs.HTTPRouteCRD.
const (
	HTTPRouteCRDMissing      = "missing"
	HTTPRouteCRDStandard     = "standard"
	HTTPRouteCRDExperimental = "experimental"
)

// Ref names an object of the namespace.
type Ref struct {
	Kind, Name string
}

func (r Ref) String() string { return r.Kind + "/" + r.Name }

// Gap is a field of a source object that does not map, and why.
type Gap struct {
	// Field is the field's path in the source object's spec, e.g.
	// http[1].mirror.
	Field string
	// Reason says why it does not map and what to do instead.
	Reason string
}

// Entry is what one source object becomes.
type Entry struct {
	Source    Ref
	Objects   []*unstructured.Unstructured
	NotMapped []Gap
}

// Plan is the conversion of a namespace, entries sorted by kind (the
// order of kindOrder) then name.
type Plan struct {
	Namespace string
	Entries   []Entry
	// Notes are about the whole plan: Istio resources not served, the
	// Gateway API CRDs missing.
	Notes []string
}

// Objects returns every produced object, in plan order.
func (p Plan) Objects() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, e := range p.Entries {
		out = append(out, e.Objects...)
	}
	return out
}

// converter holds the namespace's Services and DestinationRules, which
// conversions look up.
type converter struct {
	ns           string
	httpRouteCRD string
	services     []corev1.Service
	rules        []*clinet.DestinationRule
}

// entry collects one source object's output.
type entry struct {
	Entry
}

func (e *entry) gap(field, reason string) {
	e.NotMapped = append(e.NotMapped, Gap{Field: field, Reason: reason})
}

func (e *entry) add(apiVersion, kind, name, namespace string, spec map[string]any) {
	e.Objects = append(e.Objects, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion,
		"kind":       kind,
		"metadata": map[string]any{
			"name":        name,
			"namespace":   namespace,
			"annotations": map[string]any{AnnotationMigratedFrom: e.Source.String()},
		},
		"spec": spec,
	}})
}

// Convert converts the namespace's Istio objects.
func Convert(in Inputs) Plan {
	services := slices.Clone(in.Services)
	slices.SortFunc(services, func(a, b corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	c := &converter{ns: in.Namespace, httpRouteCRD: in.HTTPRouteCRD, services: services, rules: in.DestinationRules}
	var entries []Entry
	for _, vs := range in.VirtualServices {
		entries = append(entries, c.virtualService(vs))
	}
	for _, dr := range in.DestinationRules {
		entries = append(entries, c.destinationRule(dr))
	}
	for _, ap := range in.AuthorizationPolicies {
		entries = append(entries, c.authorizationPolicy(ap))
	}
	for _, pa := range in.PeerAuthentications {
		entries = append(entries, c.peerAuthentication(pa))
	}
	for _, sc := range in.Sidecars {
		e := entry{Entry: Entry{Source: Ref{KindSidecar, sc.Name}}}
		e.gap("(all)", "ambient has no per-proxy egress config; ztunnel and waypoints reach every Service "+
			"their policies allow: restrict egress with AuthorizationPolicies on the destinations (or NetworkPolicies)")
		entries = append(entries, e.Entry)
	}
	slices.SortStableFunc(entries, func(a, b Entry) int {
		return cmp.Or(
			cmp.Compare(slices.Index(kindOrder, a.Source.Kind), slices.Index(kindOrder, b.Source.Kind)),
			strings.Compare(a.Source.Name, b.Source.Name))
	})
	var notes []string
	for _, u := range in.Unserved {
		notes = append(notes, fmt.Sprintf("the apiserver does not serve %s (Istio's CRDs are not installed, or Istio is older than 1.22): none read", u))
	}
	if in.HTTPRouteCRD == HTTPRouteCRDMissing && slices.ContainsFunc(entries, func(e Entry) bool {
		return slices.ContainsFunc(e.Objects, func(o *unstructured.Unstructured) bool { return o.GetKind() == "HTTPRoute" })
	}) {
		notes = append(notes, "the cluster has no HTTPRoute CRD: install the Gateway API CRDs (ambitctl install does, gatewayAPI.installCRDs) before applying the HTTPRoutes")
	}
	return Plan{Namespace: in.Namespace, Entries: entries, Notes: notes}
}

// service resolves an Istio host (name, name.ns, name.ns.svc[.domain]) to
// a Service of the namespace.
func (c *converter) service(host string) *corev1.Service {
	parts := strings.Split(host, ".")
	name := parts[0]
	if len(parts) > 1 && parts[1] != c.ns {
		return nil
	}
	if len(parts) > 2 && parts[2] != "svc" {
		return nil
	}
	for i := range c.services {
		if c.services[i].Name == name {
			return &c.services[i]
		}
	}
	return nil
}

// servicesSelecting returns the Services whose pods all carry labels
// (their selector includes every pair of labels), so a policy selecting
// labels covers all of each Service's pods. Empty labels: every Service
// with a selector.
func (c *converter) servicesSelecting(labels map[string]string) []string {
	var out []string
	for _, s := range c.services {
		if len(s.Spec.Selector) == 0 {
			continue
		}
		ok := true
		for k, v := range labels {
			if s.Spec.Selector[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, s.Name)
		}
	}
	return out
}

// serviceWithSelector returns the Service whose selector is exactly sel.
func (c *converter) serviceWithSelector(sel map[string]string) *corev1.Service {
	for i := range c.services {
		s := c.services[i].Spec.Selector
		if len(s) == len(sel) && len(s) > 0 {
			eq := true
			for k, v := range sel {
				if s[k] != v {
					eq = false
				}
			}
			if eq {
				return &c.services[i]
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func labelString(m map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

func anyStrings(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// HTTPRouteCRDChannel says whether the HTTPRoute CRD crd (as read from
// the cluster; nil: not found) keeps rules[].retry in its served v1
// schema: HTTPRouteCRDExperimental if so, else HTTPRouteCRDStandard.
func HTTPRouteCRDChannel(crd *unstructured.Unstructured) string {
	if crd == nil {
		return HTTPRouteCRDMissing
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		vm, _ := v.(map[string]any)
		if name, _, _ := unstructured.NestedString(vm, "name"); name != "v1" {
			continue
		}
		_, found, _ := unstructured.NestedMap(vm, "schema", "openAPIV3Schema", "properties", "spec", "properties", "rules", "items", "properties", "retry")
		if found {
			return HTTPRouteCRDExperimental
		}
	}
	return HTTPRouteCRDStandard
}
