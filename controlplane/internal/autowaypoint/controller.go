// Package autowaypoint provisions waypoints on demand (beyond Istio): when
// an L7 object — an HTTPRoute or GRPCRoute whose parentRef is a Service, or
// an AuthorizationPolicy with HTTP rules or a BackendPolicy whose targetRef
// is a Service —
// attaches to a Service that has no waypoint, it creates the waypoint
// Gateway GatewayName (class ambit-waypoint, for service traffic, labelled
// LabelAutoProvisioned) in the Service's namespace, and once the waypoint
// controller (internal/waypoint) has it Programmed, labels the Service
// model.LabelUseWaypoint=GatewayName. When no L7 object needs it any more,
// it removes the label and then the Gateway (whose objects go with it).
//
// It never touches what a user made: a Service or namespace with its own
// model.LabelUseWaypoint (including "none") keeps it, a Gateway of the same
// name it did not create is left alone (and reported), and the label and
// annotation it puts on a Service are owned by FieldManager in server-side
// apply, so removing them removes nothing else. A namespace opts out with
// LabelNamespaceAutoWaypoint=disabled.
//
// It writes, so it runs on the leader only (Run is a leader.Writer), and
// has the canonical controller shape: informers (namespaces, Services, the
// Gateways named GatewayName, and the L7 kinds the API server serves)
// feed a typed workqueue of namespaces; a worker reconciles each
// level-based from the caches with the pure Decide, Forgets it on success
// and re-queues it rate-limited on error.
//
// Metrics (registered on Config.Registerer):
//
//	ambit_autowaypoint_reconciles_total{result="success|error"}
//	ambit_autowaypoint_actions_total{action="create_gateway|update_gateway|delete_gateway|bind|unbind"}
//	ambit_autowaypoint_conflicts{} (namespaces where a Gateway of the name exists that Ambit did not make)
package autowaypoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/prometheus/client_golang/prometheus"

	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/waypoint"
)

// FieldManager owns what the controller writes: its Gateways, and the label
// and annotation it puts on Services.
const FieldManager = "ambit-auto-waypoint"

// Resources the controller watches for L7 objects.
var (
	HTTPRoutesResource            = gwapiv1.SchemeGroupVersion.WithResource("httproutes")
	GRPCRoutesResource            = gwapiv1.SchemeGroupVersion.WithResource("grpcroutes")
	AuthorizationPoliciesResource = schema.GroupVersionResource{Group: "security.ambit.dev", Version: "v1alpha1", Resource: "authorizationpolicies"}
	BackendPoliciesResource       = schema.GroupVersionResource{Group: "networking.ambit.dev", Version: "v1alpha1", Resource: "backendpolicies"}
)

// ListKinds maps the resources the controller lists through the dynamic
// client to their list kinds, for fake dynamic clients.
func ListKinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{
		waypoint.GatewaysResource:     "GatewayList",
		HTTPRoutesResource:            "HTTPRouteList",
		GRPCRoutesResource:            "GRPCRouteList",
		AuthorizationPoliciesResource: "AuthorizationPolicyList",
		BackendPoliciesResource:       "BackendPolicyList",
	}
}

// Config configures the Controller.
type Config struct {
	// DiscoveryInterval is how often Run checks whether the Gateway API is
	// installed, while it is not (default 30s).
	DiscoveryInterval time.Duration
	// Registerer, if set, receives the controller's metrics.
	Registerer prometheus.Registerer
}

// Controller provisions waypoints on demand. Build it with New; Run it
// while leading.
type Controller struct {
	client  kubernetes.Interface
	dyn     dynamic.Interface
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu        sync.Mutex
	conflicts map[string]bool // namespaces with a conflicting Gateway
}

// New builds a Controller. It does no I/O.
func New(client kubernetes.Interface, dyn dynamic.Interface, cfg Config, log *slog.Logger) (*Controller, error) {
	if client == nil || dyn == nil || log == nil {
		return nil, errors.New("autowaypoint: a client, a dynamic client and a logger are required")
	}
	if cfg.DiscoveryInterval <= 0 {
		cfg.DiscoveryInterval = 30 * time.Second
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Controller{client: client, dyn: dyn, cfg: cfg, log: log, metrics: m, conflicts: map[string]bool{}}, nil
}

type caches struct {
	namespaces corelisters.NamespaceLister
	services   corelisters.ServiceLister
	gateways   cache.SharedIndexInformer
	l7         []cache.SharedIndexInformer
}

// Run waits for the Gateway API, then reconciles every namespace and keeps
// doing so as objects change, until ctx ends; it returns nil then, once
// everything it started has stopped. L7 kinds the API server does not
// serve when Run starts are not watched (logged).
func (c *Controller) Run(ctx context.Context) error {
	if ok := waypoint.WaitForGatewayAPI(ctx, c.client.Discovery(), c.cfg.DiscoveryInterval, c.log); !ok {
		return nil
	}
	defer utilruntime.HandleCrash()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "ambit-auto-waypoint"})
	defer q.ShutDown()

	factory := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTransform(dropManagedFields))
	defer factory.Shutdown()
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 0)
	defer dynFactory.Shutdown()
	gwFactory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.dyn, 0, metav1.NamespaceAll,
		func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + GatewayName })
	defer gwFactory.Shutdown()

	cs := caches{
		namespaces: factory.Core().V1().Namespaces().Lister(),
		services:   factory.Core().V1().Services().Lister(),
		gateways:   gwFactory.ForResource(waypoint.GatewaysResource).Informer(),
	}
	for _, r := range []schema.GroupVersionResource{HTTPRoutesResource, GRPCRoutesResource, AuthorizationPoliciesResource, BackendPoliciesResource} {
		ok, err := waypoint.Served(c.client.Discovery(), r)
		if err != nil {
			return fmt.Errorf("autowaypoint: %w", err)
		}
		if !ok {
			c.log.Warn("not served by the API server: its objects do not auto-provision waypoints until the control plane restarts", "resource", r.String())
			continue
		}
		cs.l7 = append(cs.l7, dynFactory.ForResource(r).Informer())
	}

	enqueueNS := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if m, ok := obj.(metav1.Object); ok {
			q.Add(m.GetNamespace())
		}
	}
	enqueueNamespace := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if m, ok := obj.(metav1.Object); ok {
			q.Add(m.GetName())
		}
	}
	type handler struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}
	handlers := []handler{
		{factory.Core().V1().Namespaces().Informer(), enqueueNamespace},
		{factory.Core().V1().Services().Informer(), enqueueNS},
		{cs.gateways, enqueueNS},
	}
	for _, inf := range cs.l7 {
		handlers = append(handlers, handler{inf, enqueueNS})
	}
	for _, inf := range append([]cache.SharedIndexInformer{cs.gateways}, cs.l7...) {
		if err := inf.SetTransform(dropManagedFields); err != nil {
			return fmt.Errorf("autowaypoint: informer transform: %w", err)
		}
	}
	syncs := make([]cache.InformerSynced, 0, len(handlers))
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    h.fn,
			UpdateFunc: func(_, n any) { h.fn(n) },
			DeleteFunc: h.fn,
		}); err != nil {
			return fmt.Errorf("autowaypoint: event handler: %w", err)
		}
		syncs = append(syncs, h.inf.HasSynced)
	}
	factory.Start(ctx.Done())
	dynFactory.Start(ctx.Done())
	gwFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return nil
	}
	c.log.Info("waypoint auto-provisioning started", "kinds", len(cs.l7))

	var wg sync.WaitGroup
	wg.Go(func() {
		for c.processNext(ctx, q, cs) {
		}
	})
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
	return nil
}

func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func (c *Controller) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], cs caches) bool {
	ns, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(ns)
	err := c.reconcile(ctx, ns, cs)
	switch {
	case err == nil:
		q.Forget(ns)
		c.metrics.reconciles.WithLabelValues("success").Inc()
	case ctx.Err() != nil:
	default:
		c.metrics.reconciles.WithLabelValues("error").Inc()
		c.log.Warn("auto-provisioning a waypoint failed; retrying", "namespace", ns, "error", err)
		q.AddRateLimited(ns)
	}
	return true
}

// state reads namespace ns from the caches; ok is false when it is gone.
func (c *Controller) state(ns string, cs caches) (Namespace, *unstructured.Unstructured, bool, error) {
	nsObj, err := cs.namespaces.Get(ns)
	if apierrors.IsNotFound(err) {
		return Namespace{}, nil, false, nil
	}
	if err != nil {
		return Namespace{}, nil, false, err
	}
	st := Namespace{Name: ns, Labels: nsObj.Labels, Services: map[string]Service{}, Needs: map[string][]string{}}
	svcs, err := cs.services.Services(ns).List(labels.Everything())
	if err != nil {
		return Namespace{}, nil, false, err
	}
	for _, s := range svcs {
		st.Services[s.Name] = Service{Labels: s.Labels, Annotations: s.Annotations}
	}
	for _, inf := range cs.l7 {
		objs, err := inf.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
		if err != nil {
			return Namespace{}, nil, false, err
		}
		for _, o := range objs {
			if u, ok := o.(*unstructured.Unstructured); ok {
				AddNeeds(st.Needs, ns, u)
			}
		}
	}
	var gwObj *unstructured.Unstructured
	if o, exists, err := cs.gateways.GetStore().GetByKey(ns + "/" + GatewayName); err != nil {
		return Namespace{}, nil, false, err
	} else if exists {
		gwObj, _ = o.(*unstructured.Unstructured)
	}
	if gwObj != nil {
		st.Gateway = gatewayOf(gwObj)
	}
	return st, gwObj, true, nil
}

func gatewayOf(u *unstructured.Unstructured) *Gateway {
	class, _, _ := unstructured.NestedString(u.Object, "spec", "gatewayClassName")
	g := &Gateway{
		Ours:   u.GetLabels()[LabelAutoProvisioned] == "true",
		Class:  class,
		Reason: u.GetAnnotations()[AnnotationReason],
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, cnd := range conds {
		m, _ := cnd.(map[string]any)
		if m["type"] == string(gwapiv1.GatewayConditionProgrammed) && m["status"] == string(metav1.ConditionTrue) {
			g.Programmed = true
		}
	}
	return g
}

func (c *Controller) reconcile(ctx context.Context, ns string, cs caches) error {
	st, gwObj, ok, err := c.state(ns, cs)
	if err != nil || !ok {
		c.setConflict(ns, false)
		return err
	}
	p := Decide(st)
	c.setConflict(ns, p.Conflict != "")
	if p.Conflict != "" {
		c.log.Warn("not auto-provisioning a waypoint", "namespace", ns, "reason", p.Conflict)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Skipped)) {
		c.log.Debug("Service not bound to an auto-provisioned waypoint", "namespace", ns, "service", name, "reason", p.Skipped[name])
	}
	if ctx.Err() != nil || p.Empty() {
		return nil
	}
	if p.EnsureGateway {
		action := "create_gateway"
		if st.Gateway != nil {
			action = "update_gateway"
		}
		if _, err := c.dyn.Resource(waypoint.GatewaysResource).Namespace(ns).Apply(ctx, GatewayName, DesiredGateway(ns, p.Reason),
			metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return fmt.Errorf("applying Gateway %s/%s (RBAC: the control plane needs create/patch on gateways): %w", ns, GatewayName, err)
		}
		c.metrics.actions.WithLabelValues(action).Inc()
		c.log.Info("waypoint auto-provisioned", "namespace", ns, "gateway", GatewayName, "action", action, "for", p.Reason)
	}
	opts := metav1.ApplyOptions{FieldManager: FieldManager}
	for _, name := range p.Bind {
		if ctx.Err() != nil {
			return nil
		}
		ac := corev1ac.Service(name, ns).
			WithLabels(map[string]string{model.LabelUseWaypoint: GatewayName}).
			WithAnnotations(map[string]string{AnnotationAutoWaypoint: GatewayName})
		if _, err := c.client.CoreV1().Services(ns).Apply(ctx, ac, opts); err != nil {
			return fmt.Errorf("labelling Service %s/%s %s=%s (RBAC: patch on services): %w", ns, name, model.LabelUseWaypoint, GatewayName, err)
		}
		c.metrics.actions.WithLabelValues("bind").Inc()
		c.log.Info("Service bound to the auto-provisioned waypoint", "namespace", ns, "service", name, "gateway", GatewayName)
	}
	for _, name := range p.Unbind {
		if ctx.Err() != nil {
			return nil
		}
		// Applying the Service with nothing under FieldManager removes the
		// label and annotation it owned, and only them.
		if _, err := c.client.CoreV1().Services(ns).Apply(ctx, corev1ac.Service(name, ns), opts); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing %s from Service %s/%s (RBAC: patch on services): %w", model.LabelUseWaypoint, ns, name, err)
		}
		c.metrics.actions.WithLabelValues("unbind").Inc()
		c.log.Info("Service unbound from the auto-provisioned waypoint: no L7 object needs it", "namespace", ns, "service", name)
	}
	if p.DeleteGateway && gwObj != nil && ctx.Err() == nil {
		uid := gwObj.GetUID()
		err := c.dyn.Resource(waypoint.GatewaysResource).Namespace(ns).Delete(ctx, GatewayName,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the auto-provisioned Gateway %s/%s (RBAC: delete on gateways): %w", ns, GatewayName, err)
		}
		c.metrics.actions.WithLabelValues("delete_gateway").Inc()
		c.log.Info("auto-provisioned waypoint removed: no L7 object needs it", "namespace", ns, "gateway", GatewayName)
	}
	return nil
}

// DesiredGateway is the Gateway the controller applies in namespace ns.
func DesiredGateway(ns, reason string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gwapiv1.GroupVersion.String(), "kind": "Gateway",
		"metadata": map[string]any{
			"name": GatewayName, "namespace": ns,
			"labels": map[string]any{
				LabelAutoProvisioned:   "true",
				model.LabelWaypointFor: string(model.WaypointForService),
			},
			"annotations": map[string]any{AnnotationReason: reason},
		},
		"spec": map[string]any{
			"gatewayClassName": model.WaypointClass,
			"listeners": []any{map[string]any{
				"name":     model.WaypointListenerName,
				"port":     int64(model.WaypointListenerPort),
				"protocol": model.WaypointListenerProtocol,
			}},
		},
	}}
}

func (c *Controller) setConflict(ns string, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conflicts[ns] == on {
		return
	}
	if on {
		c.conflicts[ns] = true
		c.metrics.conflicts.Inc()
		return
	}
	delete(c.conflicts, ns)
	c.metrics.conflicts.Dec()
}
