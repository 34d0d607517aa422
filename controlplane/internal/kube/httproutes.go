package kube

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"ambit.dev/controlplane/internal/httproute"
	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/waypointxds"
)

// HTTPRoutesResource and GRPCRoutesResource are the Gateway API resources
// of routes; those with a Service parent (GAMMA) program the Service's
// waypoint.
var (
	HTTPRoutesResource = gwapiv1.SchemeGroupVersion.WithResource("httproutes")
	GRPCRoutesResource = gwapiv1.SchemeGroupVersion.WithResource("grpcroutes")
)

// This file keeps the compiled HTTPRoutes and GRPCRoutes (a GRPCRoute is
// compiled as the HTTPRoute it means, under a Ref of its kind): routes holds each one,
// routesBySvc the routes that name a Service (as parent or backend). A
// route is re-compiled when it changes or when a Service it names is
// re-derived (its ports, existence or waypoint binding decide the
// outcome). A compile marks the waypoints of its old and new parents, and
// a change of a backend's endpoints marks the waypoints of the routes
// naming it, so that syncWaypoints recomputes their input.

// svcRef converts between the two Service reference types.
func svcRef(r httproute.ServiceRef) model.ObjectRef {
	return model.ObjectRef{Namespace: r.Namespace, Name: r.Name}
}

// routeCache is the informer of a route kind; nil while not served.
// Caller holds c.mu.
func (c *Controller) routeCache(k httproute.Kind) cache.SharedIndexInformer {
	if k == httproute.KindGRPCRoute {
		return c.grpcRoutes
	}
	return c.httpRoutes
}

// routeResource is the API resource of a route kind.
func routeResource(k httproute.Kind) schema.GroupVersionResource {
	if k == httproute.KindGRPCRoute {
		return GRPCRoutesResource
	}
	return HTTPRoutesResource
}

// reconcileRoute re-compiles route ref from the cache. Caller holds c.mu.
func (c *Controller) reconcileRoute(ref httproute.Ref, b *batch) error {
	inf := c.routeCache(ref.Kind)
	if inf == nil {
		return nil
	}
	obj, exists, err := inf.GetIndexer().GetByKey(ref.Key())
	if err != nil {
		return fmt.Errorf("kube: reading %s %s from the cache: %w", ref.Kind, ref.Key(), err)
	}
	old, had := c.routes[ref]
	if had {
		c.markRouteWaypoints(old, b)
		c.indexRoute(old, false)
		c.indexRouteFaults(old, false)
		delete(c.routes, ref)
	}
	defer c.enqueueRouteStatus(ref)
	if !exists {
		return nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("kube: a %s in the cache is a %T, not unstructured", ref.Kind, obj)
	}
	var compiled httproute.Compiled
	var convErr error
	if ref.Kind == httproute.KindGRPCRoute {
		var rt gwapiv1.GRPCRoute
		if convErr = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &rt); convErr == nil {
			compiled = httproute.CompileGRPC(&rt, c.routeLookup, c.faultLookup)
		}
	} else {
		var rt gwapiv1.HTTPRoute
		if convErr = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &rt); convErr == nil {
			compiled = httproute.Compile(&rt, c.routeLookup, c.faultLookup)
		}
	}
	if convErr != nil {
		// The API server validated it against the CRD: a mismatch means
		// another Gateway API version; it is not ours to program.
		c.log.Warn("ignoring a route that does not match the Gateway API v1 schema", "kind", ref.Kind.String(), "route", ref.Key(), "error", convErr)
		return nil
	}
	c.routes[ref] = compiled
	c.indexRoute(compiled, true)
	c.indexRouteFaults(compiled, true)
	c.markRouteWaypoints(compiled, b)
	return nil
}

// routeLookup is the Service lookup of httproute.Compile. Caller holds c.mu.
func (c *Controller) routeLookup(r httproute.ServiceRef) (httproute.Service, bool) {
	svc, err := c.svcLister.Services(r.Namespace).Get(r.Name)
	if err != nil {
		return httproute.Service{}, false
	}
	out := httproute.Service{Hostname: model.Hostname(svc.Name, svc.Namespace, c.domain)}
	for _, p := range WaypointPorts(svc) {
		out.Ports = append(out.Ports, httproute.Port{Port: p.Port, Protocol: waypointxds.ProtocolOf(p.Name, p.AppProtocol)})
	}
	if wp := c.svcWaypoint[svcRef(r)]; wp.Name != "" {
		out.Waypoint = wp.String()
	}
	return out, true
}

// indexRoute adds (or removes) route r to routesBySvc under every Service
// it names. Caller holds c.mu.
func (c *Controller) indexRoute(r httproute.Compiled, add bool) {
	for _, s := range routeServices(r) {
		indexSet(c.routesBySvc, s, r.Ref, add)
	}
}

// indexSet adds (or removes) route r to the set of key k in idx, dropping
// empty sets.
func indexSet[K comparable](idx map[K]map[httproute.Ref]bool, k K, r httproute.Ref, add bool) {
	set := idx[k]
	if add {
		if set == nil {
			set = map[httproute.Ref]bool{}
			idx[k] = set
		}
		set[r] = true
		return
	}
	delete(set, r)
	if len(set) == 0 {
		delete(idx, k)
	}
}

func routeServices(r httproute.Compiled) []model.ObjectRef {
	var out []model.ObjectRef
	for _, p := range r.Parents {
		out = append(out, svcRef(p.Service))
		for _, s := range p.BackendServices {
			out = append(out, svcRef(s))
		}
	}
	slices.SortFunc(out, compareRefs)
	return slices.Compact(out)
}

// routesOf returns the routes naming Service ref, sorted. Caller holds c.mu.
func (c *Controller) routesOf(ref model.ObjectRef) []httproute.Ref {
	return slices.SortedFunc(maps.Keys(c.routesBySvc[ref]), func(a, b httproute.Ref) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

// markRouteWaypoints marks the waypoints of r's parents. Caller holds c.mu.
func (c *Controller) markRouteWaypoints(r httproute.Compiled, b *batch) {
	for _, p := range r.Parents {
		b.markWaypoint(c.svcWaypoint[svcRef(p.Service)])
	}
}

// serviceRoutesChanged re-compiles the routes naming Service ref (its
// existence, ports or binding changed, or its endpoints). Caller holds c.mu.
func (c *Controller) serviceRoutesChanged(ref model.ObjectRef, b *batch) {
	for _, r := range c.routesOf(ref) {
		if err := c.reconcileRoute(r, b); err != nil {
			c.log.Warn("re-compiling a route failed", "kind", r.Kind.String(), "route", r.Key(), "error", err)
		}
	}
}

// markBackendWaypoints marks the waypoints of the routes that name the
// Service with resource name name (a pod of it changed). Caller holds c.mu.
func (c *Controller) markBackendWaypoints(name string, b *batch) {
	ns, host, ok := strings.Cut(name, "/")
	if !ok {
		return
	}
	svc, ok := strings.CutSuffix(host, "."+ns+".svc."+c.domain)
	if !ok {
		return
	}
	for _, r := range c.routesOf(model.ObjectRef{Namespace: ns, Name: svc}) {
		c.markRouteWaypoints(c.routes[r], b)
	}
}

// loadRoutes compiles every cached HTTPRoute and GRPCRoute. Caller holds
// c.mu.
func (c *Controller) loadRoutes(b *batch) error {
	for _, k := range []httproute.Kind{httproute.KindHTTPRoute, httproute.KindGRPCRoute} {
		inf := c.routeCache(k)
		if inf == nil {
			continue
		}
		for _, key := range inf.GetIndexer().ListKeys() {
			ns, name, _ := strings.Cut(key, "/")
			if err := c.reconcileRoute(httproute.Ref{Kind: k, Namespace: ns, Name: name}, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// addRoutes fills the HTTP ports of the bound Services of in with the
// rules of the accepted routes attached to them, in precedence order, and
// in.Backends with the Services those rules send to that are not bound.
// Caller holds c.mu.
func (c *Controller) addRoutes(wp model.ObjectRef, in *waypointxds.Input) {
	bound := map[model.ObjectRef]bool{}
	for _, s := range in.Services {
		bound[model.ObjectRef{Namespace: s.Namespace, Name: s.Name}] = true
	}
	backends := map[model.ObjectRef]bool{}
	for i := range in.Services {
		s := &in.Services[i]
		ref := model.ObjectRef{Namespace: s.Namespace, Name: s.Name}
		for j := range s.Ports {
			port := &s.Ports[j]
			var rules []httproute.Rule
			for _, r := range c.routesOf(ref) {
				for _, p := range c.routes[r].Parents {
					if svcRef(p.Service) != ref || p.Waypoint != wp.String() || p.Accepted.Status != metav1.ConditionTrue || !slices.Contains(p.Ports, port.Port) {
						continue
					}
					rules = append(rules, p.Rules...)
					for _, bs := range p.BackendServices {
						if !bound[svcRef(bs)] {
							backends[svcRef(bs)] = true
						}
					}
				}
			}
			if len(rules) > 0 {
				httproute.Order(rules)
				port.Routes = httproute.Routes(rules)
			}
		}
	}
	for _, ref := range slices.SortedFunc(maps.Keys(backends), compareRefs) {
		svc, err := c.svcLister.Services(ref.Namespace).Get(ref.Name)
		if err != nil {
			continue // a missing backend: its routes answer 500
		}
		in.Backends = append(in.Backends, c.waypointService(svc, c.svcMembers[ref]))
	}
}

// --- status ---

// enqueueRouteStatus queues the status of route ref if the status writer
// runs. Safe with or without c.mu held.
func (c *Controller) enqueueRouteStatus(refs ...httproute.Ref) {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	if c.statusQueue == nil {
		return
	}
	for _, r := range refs {
		c.statusQueue.Add(statusItem{route: r})
	}
}

// writeRouteStatus makes the parent statuses Ambit owns on route r say
// what its compile said.
func (c *Controller) writeRouteStatus(ctx context.Context, r httproute.Ref) error {
	c.mu.Lock()
	compiled, known := c.routes[r]
	var obj any
	exists := false
	var err error
	if inf := c.routeCache(r.Kind); inf != nil {
		obj, exists, err = inf.GetIndexer().GetByKey(r.Key())
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if !known || !exists {
		return nil
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("a %s in the cache is a %T, not unstructured", r.Kind, obj)
	}
	var cur gwapiv1.RouteStatus
	if raw, ok := u.Object["status"].(map[string]any); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &cur)
	}
	next, changed := NextRouteStatus(cur, compiled)
	if !changed {
		return nil
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&next)
	if err != nil {
		return fmt.Errorf("encoding status: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	upd := u.DeepCopy()
	upd.Object["status"] = raw
	res := routeResource(r.Kind)
	_, err = c.dyn.Resource(res).Namespace(r.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{FieldManager: fieldManager})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("updating the status of %s %s (RBAC: the control plane needs update on %s/status): %w", r.Kind, r.Key(), res.Resource, err)
	}
	c.metrics.statusWrites.WithLabelValues("success").Inc()
	for _, p := range compiled.Parents {
		c.log.Info("route status updated", "kind", r.Kind.String(), "route", r.Key(), "parent", p.Service.String(),
			"accepted", p.Accepted.Status, "reason", p.Accepted.Reason, "resolvedRefs", p.ResolvedRefs.Reason, "message", p.Accepted.Message)
	}
	return nil
}

// NextRouteStatus returns cur with the parent statuses of Ambit's
// controller replaced by those of compiled (other controllers' entries are
// kept; a condition that did not change keeps its transition time), and
// whether that differs from cur.
func NextRouteStatus(cur gwapiv1.RouteStatus, compiled httproute.Compiled) (gwapiv1.RouteStatus, bool) {
	var next gwapiv1.RouteStatus
	ours := map[string]gwapiv1.RouteParentStatus{}
	for _, ps := range cur.Parents {
		if ps.ControllerName == httproute.ControllerName {
			ours[parentKey(ps.ParentRef)] = ps
			continue
		}
		next.Parents = append(next.Parents, *ps.DeepCopy())
	}
	changed := false
	for _, p := range compiled.Parents {
		old, had := ours[parentKey(p.ParentRef)]
		delete(ours, parentKey(p.ParentRef))
		ps := gwapiv1.RouteParentStatus{ParentRef: p.ParentRef, ControllerName: httproute.ControllerName}
		if had {
			ps.Conditions = slices.Clone(old.Conditions)
		}
		for _, want := range []metav1.Condition{p.Accepted, p.ResolvedRefs} {
			o := apimeta.FindStatusCondition(ps.Conditions, want.Type)
			if o != nil && o.Status == want.Status && o.Reason == want.Reason && o.Message == want.Message && o.ObservedGeneration == want.ObservedGeneration {
				continue
			}
			changed = true
			want.LastTransitionTime = metav1.Now()
			apimeta.SetStatusCondition(&ps.Conditions, want)
		}
		if !had {
			changed = true
		}
		next.Parents = append(next.Parents, ps)
	}
	if len(ours) > 0 {
		changed = true // parents no longer in the spec
	}
	return next, changed
}

func parentKey(p gwapiv1.ParentReference) string {
	s := func(v *string) string {
		if v == nil {
			return ""
		}
		return *v
	}
	port := ""
	if p.Port != nil {
		port = fmt.Sprint(*p.Port)
	}
	return strings.Join([]string{s((*string)(p.Group)), s((*string)(p.Kind)), s((*string)(p.Namespace)), string(p.Name), s((*string)(p.SectionName)), port}, "|")
}
