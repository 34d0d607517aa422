package kube

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"google.golang.org/protobuf/proto"

	securityv1alpha1 "ambit.dev/api/security/v1alpha1"
	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/policy"
	"ambit.dev/controlplane/internal/waypointxds"
)

// The security.ambit.dev resources the controller watches.
var (
	AuthorizationPoliciesResource = securityv1alpha1.SchemeGroupVersion.WithResource("authorizationpolicies")
	PeerAuthenticationsResource   = securityv1alpha1.SchemeGroupVersion.WithResource("peerauthentications")
)

// PolicyListKinds maps the policy resources to their list kinds, as the
// dynamic client's fake needs them (dynamic/fake.NewSimpleDynamicClientWithCustomListKinds).
func PolicyListKinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{
		AuthorizationPoliciesResource: "AuthorizationPolicyList",
		PeerAuthenticationsResource:   "PeerAuthenticationList",
		BackendPoliciesResource:       "BackendPolicyList",
	}
}

// policyResource returns the resource of a policy kind.
func policyResource(k policy.Kind) schema.GroupVersionResource {
	if k == policy.KindPeerAuthentication {
		return PeerAuthenticationsResource
	}
	return AuthorizationPoliciesResource
}

// policyKind maps a queue kind to a policy kind.
func policyKind(k kind) policy.Kind {
	if k == kindPeerAuthentication {
		return policy.KindPeerAuthentication
	}
	return policy.KindAuthorizationPolicy
}

// policyInformer returns the informer of a policy kind.
func (c *Controller) policyInformer(k policy.Kind) cache.SharedIndexInformer {
	if k == policy.KindPeerAuthentication {
		return c.peerAuthns
	}
	return c.authzPolicies
}

// compile converts a cached object of kind k to its typed form and
// compiles it.
func (c *Controller) compile(k policy.Kind, obj any) (policy.Compiled, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return policy.Compiled{}, fmt.Errorf("kube: a %s in the cache is a %T, not unstructured", policyResource(k).Resource, obj)
	}
	switch k {
	case policy.KindPeerAuthentication:
		var pa securityv1alpha1.PeerAuthentication
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pa); err != nil {
			return policy.Compiled{}, fmt.Errorf("kube: PeerAuthentication %s/%s does not match its schema (is the CRD in deploy/ installed at the version the control plane expects?): %w", u.GetNamespace(), u.GetName(), err)
		}
		return policy.CompilePeerAuthentication(&pa, c.rootNamespace), nil
	default:
		var ap securityv1alpha1.AuthorizationPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &ap); err != nil {
			return policy.Compiled{}, fmt.Errorf("kube: AuthorizationPolicy %s/%s does not match its schema (is the CRD in deploy/ installed at the version the control plane expects?): %w", u.GetNamespace(), u.GetName(), err)
		}
		if len(ap.Spec.TargetRefs) > 0 {
			return policy.CompileTargeted(&ap, c.rootNamespace, c.resolveTargets(&ap), waypointxds.ValidatePolicy(toWaypointPolicy(&ap))), nil
		}
		return policy.CompileAuthorizationPolicy(&ap, c.rootNamespace), nil
	}
}

// reconcilePolicy recompiles the policy object r, publishes the
// Authorization resources that changed, re-derives the workloads it may
// select and queues the status of every policy whose outcome changed.
// Caller holds c.mu.
func (c *Controller) reconcilePolicy(r policy.Ref, b *batch) error {
	obj, exists, err := c.policyInformer(r.Kind).GetIndexer().GetByKey(r.Namespace + "/" + r.Name)
	if err != nil {
		return fmt.Errorf("kube: reading %s %s/%s from the cache: %w", policyResource(r.Kind).Resource, r.Namespace, r.Name, err)
	}
	var changed []policy.Ref
	if !exists {
		changed = c.policies.Delete(r)
	} else {
		compiled, err := c.compile(r.Kind, obj)
		if err != nil {
			return err
		}
		changed = c.policies.Set(compiled)
	}
	if err := c.publishAuthorizations(); err != nil {
		return err
	}
	// Which pods reference a selector policy may have changed: re-derive
	// the pods it can select (publishing only those whose list changed).
	var pods []*corev1.Pod
	if r.Namespace == c.rootNamespace {
		pods, err = c.podLister.List(labels.Everything())
	} else {
		pods, err = c.podLister.Pods(r.Namespace).List(labels.Everything())
	}
	if err != nil {
		return fmt.Errorf("kube: listing the pods %s/%s may select: %w", r.Namespace, r.Name, err)
	}
	for _, p := range pods {
		c.reconcilePod(model.ObjectRef{Namespace: p.Namespace, Name: p.Name}, b)
	}
	c.enqueueStatus(changed...)
	// Policies with targetRefs are enforced by waypoints too.
	c.markAllWaypoints(b)
	return nil
}

// loadPolicies compiles every cached policy into the index (the initial
// state), except AuthorizationPolicies with targetRefs (targeted true:
// only those), which depend on the Services' waypoint bindings and are
// loaded once the Services are. Caller holds c.mu.
func (c *Controller) loadPolicies(targeted bool) error {
	for _, k := range []policy.Kind{policy.KindAuthorizationPolicy, policy.KindPeerAuthentication} {
		if targeted && k != policy.KindAuthorizationPolicy {
			continue
		}
		for _, obj := range c.policyInformer(k).GetStore().List() {
			if k == policy.KindAuthorizationPolicy && hasTargetRefs(obj) != targeted {
				continue
			}
			compiled, err := c.compile(k, obj)
			if err != nil {
				return err
			}
			c.policies.Set(compiled)
		}
	}
	return nil
}

// publishAuthorizations hands the Authorization resources that differ from
// the last published ones to the sink. Caller holds c.mu.
func (c *Controller) publishAuthorizations() error {
	want := c.policies.Authorizations()
	updated := map[string]*workloadv1alpha1.Authorization{}
	for name, a := range want {
		if old, ok := c.publishedAuthz[name]; !ok || !proto.Equal(old, a) {
			updated[name] = a
		}
	}
	var removed []string
	for name := range c.publishedAuthz {
		if _, ok := want[name]; !ok {
			removed = append(removed, name)
		}
	}
	if len(updated) == 0 && len(removed) == 0 {
		return nil
	}
	slices.Sort(removed)
	if err := c.sink.UpdateAuthorizations(updated, removed); err != nil {
		return fmt.Errorf("kube: publishing %d updated and %d removed authorizations: %w", len(updated), len(removed), err)
	}
	maps.Copy(c.publishedAuthz, updated)
	for _, name := range removed {
		delete(c.publishedAuthz, name)
	}
	c.metrics.authorizations.Set(float64(len(c.publishedAuthz)))
	c.log.Debug("published authorizations", "updated", len(updated), "removed", len(removed))
	return nil
}

// hasTargetRefs reports whether a cached AuthorizationPolicy sets
// spec.targetRefs.
func hasTargetRefs(obj any) bool {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return false
	}
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs")
	return len(refs) > 0
}
