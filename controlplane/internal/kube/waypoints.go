package kube

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/model"
)

// GatewaysResource is the Gateway API resource the controller watches for
// waypoints (model.WaypointClass).
var GatewaysResource = gwapiv1.SchemeGroupVersion.WithResource("gateways")

// GatewayListKinds maps GatewaysResource to its list kind, for
// dynamic/fake.NewSimpleDynamicClientWithCustomListKinds.
func GatewayListKinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{GatewaysResource: "GatewayList", HTTPRoutesResource: "HTTPRouteList", GRPCRoutesResource: "GRPCRouteList"}
}

// byWaypoint indexes pods, Services and Namespaces by the waypoint
// Gateways ("namespace/name") their labels name: the LabelUseWaypoint
// target, and for pods and Services also the LabelGatewayName (the
// waypoint they are part of). A Gateway change re-derives exactly these.
const byWaypoint = "waypoint"

// waypointKeys returns the index keys of an object in namespace ns with
// labels (ns is the Namespace's own name for a Namespace).
func waypointKeys(ns string, labels map[string]string, self bool) []string {
	var keys []string
	if v := labels[model.LabelUseWaypoint]; v != "" && v != model.UseWaypointNone {
		keys = append(keys, cmpOr(labels[model.LabelUseWaypointNamespace], ns)+"/"+v)
	}
	if v := labels[model.LabelGatewayName]; self && v != "" {
		keys = append(keys, ns+"/"+v)
	}
	return keys
}

func indexByWaypoint(obj any) ([]string, error) {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return waypointKeys(o.Name, o.Labels, false), nil
	case *corev1.Pod:
		return waypointKeys(o.Namespace, o.Labels, true), nil
	case *corev1.Service:
		return waypointKeys(o.Namespace, o.Labels, true), nil
	}
	return nil, nil
}

// gatewayAPIServed returns which resources of the Gateway API group
// version of GatewaysResource the API server serves (none when the group
// is not installed).
func gatewayAPIServed(d discovery.DiscoveryInterface) (map[string]bool, error) {
	return resourcesServed(d, GatewaysResource.GroupVersion())
}

// resourcesServed returns which resources of group version gv the API
// server serves (none when the group version is not installed).
func resourcesServed(d discovery.DiscoveryInterface, gv schema.GroupVersion) (map[string]bool, error) {
	list, err := d.ServerResourcesForGroupVersion(gv.String())
	if apierrors.IsNotFound(err) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kube: discovering %s (can the control plane reach the API server?): %w", gv, err)
	}
	out := map[string]bool{}
	for _, r := range list.APIResources {
		out[r.Name] = true
	}
	return out, nil
}

// toGateway copies what the binding rules read out of a cached Gateway.
func toGateway(obj any) (model.Gateway, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return model.Gateway{}, fmt.Errorf("kube: a gateway in the cache is a %T, not unstructured", obj)
	}
	var gw gwapiv1.Gateway
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &gw); err != nil {
		return model.Gateway{}, fmt.Errorf("kube: Gateway %s/%s does not match the Gateway API v1 schema (are the Gateway API CRDs of deploy/ installed?): %w", u.GetNamespace(), u.GetName(), err)
	}
	return model.Gateway{
		Namespace:  gw.Namespace,
		Name:       gw.Name,
		Class:      string(gw.Spec.GatewayClassName),
		Labels:     gw.Labels,
		Programmed: apimeta.IsStatusConditionTrue(gw.Status.Conditions, string(gwapiv1.GatewayConditionProgrammed)),
	}, nil
}

// gatewayChanged reports whether a Gateway update changed what the binding
// rules read.
func gatewayChanged(o, n metav1.Object) bool {
	og, err1 := toGateway(o)
	ng, err2 := toGateway(n)
	if err1 != nil || err2 != nil {
		return true
	}
	return og.Class != ng.Class || og.Programmed != ng.Programmed ||
		og.Labels[model.LabelWaypointFor] != ng.Labels[model.LabelWaypointFor] ||
		o.GetAnnotations()[model.AnnotationAccessLogSampling] != n.GetAnnotations()[model.AnnotationAccessLogSampling]
}

// loadWaypoints reads every cached waypoint Gateway. Caller holds c.mu.
func (c *Controller) loadWaypoints() {
	c.waypoints = model.Waypoints{}
	if c.gateways == nil {
		return
	}
	for _, obj := range c.gateways.GetStore().List() {
		gw, err := toGateway(obj)
		if err != nil {
			c.log.Warn("ignoring a Gateway", "error", err)
			continue
		}
		if gw.Class == model.WaypointClass {
			c.waypoints[gw.Ref()] = gw
		}
	}
}

// reconcileGateway updates the waypoint ref from the cache and re-derives
// every pod and Service whose binding may depend on it. Caller holds c.mu.
func (c *Controller) reconcileGateway(ref model.ObjectRef, b *batch) error {
	if c.gateways == nil {
		return nil
	}
	obj, exists, err := c.gateways.GetIndexer().GetByKey(ref.String())
	if err != nil {
		return fmt.Errorf("kube: reading Gateway %s from the cache: %w", ref, err)
	}
	delete(c.waypoints, ref)
	b.markWaypoint(ref)
	// Policies may target the Gateway.
	c.requeueTargeting(ref.Namespace)
	if exists {
		gw, err := toGateway(obj)
		if err != nil {
			return err
		}
		if gw.Class == model.WaypointClass {
			c.waypoints[ref] = gw
		}
	}
	pods := map[model.ObjectRef]bool{}
	svcs := map[model.ObjectRef]bool{}
	add := func(m map[model.ObjectRef]bool, objs []any) {
		// Objects of the informer caches: pods and Services.
		for _, o := range objs {
			if mo, err := metaOf(o); err == nil {
				m[model.ObjectRef{Namespace: mo.GetNamespace(), Name: mo.GetName()}] = true
			}
		}
	}
	nsObjs, err := c.nsInformer.GetIndexer().ByIndex(byWaypoint, ref.String())
	if err != nil {
		return fmt.Errorf("kube: namespaces using waypoint %s: %w", ref, err)
	}
	for _, o := range nsObjs {
		ns, ok := o.(*corev1.Namespace)
		if !ok {
			continue
		}
		if err := c.namespaceObjects(ns.Name, pods, svcs); err != nil {
			return err
		}
	}
	p, err := c.pods.GetIndexer().ByIndex(byWaypoint, ref.String())
	if err != nil {
		return fmt.Errorf("kube: pods using waypoint %s: %w", ref, err)
	}
	add(pods, p)
	s, err := c.svcInformer.GetIndexer().ByIndex(byWaypoint, ref.String())
	if err != nil {
		return fmt.Errorf("kube: services using waypoint %s: %w", ref, err)
	}
	add(svcs, s)
	for svc := range svcs {
		c.reconcileService(svc, b)
	}
	for pod := range pods {
		c.reconcilePod(pod, b)
	}
	return nil
}

// namespaceObjects adds the pods and Services of namespace ns to pods and
// svcs. Caller holds c.mu.
func (c *Controller) namespaceObjects(ns string, pods, svcs map[model.ObjectRef]bool) error {
	ps, err := c.podLister.Pods(ns).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("kube: listing pods of namespace %s: %w", ns, err)
	}
	for _, p := range ps {
		pods[model.ObjectRef{Namespace: p.Namespace, Name: p.Name}] = true
	}
	ss, err := c.svcLister.Services(ns).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("kube: listing services of namespace %s: %w", ns, err)
	}
	for _, s := range ss {
		svcs[model.ObjectRef{Namespace: s.Namespace, Name: s.Name}] = true
	}
	return nil
}

// noteBinding records whether the waypoint binding of the resource name
// (a Service resource name or a pod UID) is unusable, keeps the
// ambit_model_waypoint_unusable gauge and logs changes. A nil b forgets
// the resource (it is no longer published). Caller holds c.mu.
func (c *Controller) noteBinding(name string, t model.Traffic, b *model.WaypointBinding) {
	old, had := c.unusable[name]
	switch {
	case b != nil && b.Unusable:
		if !had || old.Reason != b.Reason {
			c.log.Warn("waypoint label names a Gateway that cannot take the traffic; sending it without a waypoint",
				"traffic", string(t), "resource", name, "waypoint", b.Requested.String(), "reason", b.Reason)
		}
		if !had {
			c.metrics.waypointUnusable.WithLabelValues(string(t)).Inc()
		}
		c.unusable[name] = unusableBinding{traffic: t, Reason: b.Reason}
	case had:
		delete(c.unusable, name)
		c.metrics.waypointUnusable.WithLabelValues(string(old.traffic)).Dec()
		if b != nil {
			c.log.Info("waypoint binding resolved", "traffic", string(t), "resource", name, "reason", b.Reason)
		}
	}
}

// unusableBinding is a resource whose waypoint label names a Gateway that
// cannot take its traffic.
type unusableBinding struct {
	traffic model.Traffic
	Reason  string
}

// UnusableWaypointBindings returns, by resource name (a Service resource
// name or a pod UID), why the waypoint its labels ask for is not used.
func (c *Controller) UnusableWaypointBindings() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.unusable))
	for k, v := range maps.All(c.unusable) {
		out[k] = v.Reason
	}
	return out
}
