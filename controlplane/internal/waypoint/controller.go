// Package waypoint is the waypoint controller: for every Gateway API
// Gateway of class ambit-waypoint (model.WaypointClass) it deploys a
// waypoint proxy — a ServiceAccount, a Deployment of the ambit-waypoint
// image and a Service, all named after the Gateway, owned by it (deleting
// the Gateway deletes them) and written with server-side apply, plus a copy
// of the mesh roots (ConfigMap ambit-root-cert, shared by the namespace's
// waypoints, re-copied on every reconcile) — and keeps
// the Gateway's status: Accepted (Validate), Programmed (the Deployment has
// an available replica) and status.addresses (the Service's ClusterIPs and
// hostname). It also creates the GatewayClass ambit-waypoint (controller
// ambit.dev/waypoint-controller) and marks it Accepted.
//
// Which traffic goes through a waypoint is decided elsewhere
// (model.ServiceWaypoint, model.WorkloadWaypoint, read by internal/kube
// from the Programmed condition written here).
//
// It writes, so it runs on the leader only: Run is a leader.Writer. It is a
// controller of the canonical shape: informers (Gateways and GatewayClasses
// through the dynamic client; the Deployments, Services and ServiceAccounts
// it made, selected by label) feed a typed workqueue of Gateways; a worker
// reconciles each level-based from the caches, Forgets it on success and
// re-queues it rate-limited on error. The decisions are the pure functions
// of desired.go.
//
// Metrics (registered on Config.Registerer):
//
//	ambit_waypoint_reconciles_total{kind="gateway|gatewayclass",result="success|error"}
//	ambit_waypoint_gateways{state="programmed|pending|invalid"}
package waypoint

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/prometheus/client_golang/prometheus"

	"ambit.dev/controlplane/internal/model"
)

// FieldManager names the control plane in managedFields.
const FieldManager = "ambit-controlplane"

// The Gateway API resources the controller reads and writes.
var (
	GatewaysResource       = gwapiv1.SchemeGroupVersion.WithResource("gateways")
	GatewayClassesResource = gwapiv1.SchemeGroupVersion.WithResource("gatewayclasses")
)

// ListKinds maps the Gateway API resources to their list kinds, for
// dynamic/fake.NewSimpleDynamicClientWithCustomListKinds.
func ListKinds() map[schema.GroupVersionResource]string {
	return map[schema.GroupVersionResource]string{
		GatewaysResource:       "GatewayList",
		GatewayClassesResource: "GatewayClassList",
	}
}

// Config configures the Controller.
type Config struct {
	// Image is the ambit-waypoint image reference. Required.
	Image string
	// PullPolicy of Image (default IfNotPresent).
	PullPolicy corev1.PullPolicy
	// ClusterDomain is the cluster's DNS domain, for the hostname in
	// status.addresses (default cluster.local).
	ClusterDomain string
	// TrustDomain, XDSAddress (host:port of the control plane's xDS) and
	// ControlPlaneName (the name the waypoint expects in the control
	// plane's certificate) are handed to every waypoint pod in its
	// environment (EnvTrustDomain, EnvXDSAddress, EnvControlPlaneName).
	TrustDomain, XDSAddress, ControlPlaneName string
	// CAAddress is host:port of the control plane's CA (default
	// <ControlPlaneName>:15017).
	CAAddress string
	// ControlPlaneNamespace and ControlPlaneService name the control
	// plane's Service (default: the first two labels of ControlPlaneName,
	// "<service>.<namespace>.svc"). Its ClusterIP replaces the DNS name in
	// XDSAddress and CAAddress (ResolveControlPlane), and the mesh roots
	// are copied from the ConfigMap RootCertConfigMap of that namespace.
	ControlPlaneNamespace, ControlPlaneService string
	// DiscoveryInterval is how often Run checks whether the Gateway API is
	// installed, while it is not (default 30s).
	DiscoveryInterval time.Duration
	// Registerer, if set, receives the controller's metrics.
	Registerer prometheus.Registerer
}

// key is a workqueue item: a Gateway, or (kind class) the GatewayClass.
type key struct {
	class     bool
	namespace string
	name      string
}

// Controller deploys waypoints. Build it with New; Run it while leading
// (again in every term).
type Controller struct {
	client  kubernetes.Interface
	dyn     dynamic.Interface
	disc    discovery.DiscoveryInterface
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	// mu guards state, the last state of each Gateway (for the gauge).
	mu    sync.Mutex
	state map[key]string
}

// New builds a Controller. It does no I/O.
func New(client kubernetes.Interface, dyn dynamic.Interface, cfg Config, log *slog.Logger) (*Controller, error) {
	if client == nil || dyn == nil || log == nil {
		return nil, errors.New("waypoint: a client, a dynamic client and a logger are required")
	}
	if cfg.Image == "" {
		return nil, errors.New("waypoint: the ambit-waypoint image is required (--waypoint-image)")
	}
	if cfg.PullPolicy == "" {
		cfg.PullPolicy = corev1.PullIfNotPresent
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.ControlPlaneName == "" {
		return nil, errors.New("waypoint: the control plane's DNS name (ControlPlaneName) is required")
	}
	if labels := strings.Split(cfg.ControlPlaneName, "."); len(labels) >= 2 {
		cfg.ControlPlaneService = cmp.Or(cfg.ControlPlaneService, labels[0])
		cfg.ControlPlaneNamespace = cmp.Or(cfg.ControlPlaneNamespace, labels[1])
	}
	if cfg.ControlPlaneService == "" || cfg.ControlPlaneNamespace == "" {
		return nil, fmt.Errorf("waypoint: the control plane's Service and namespace are required (ControlPlaneName %q is not <service>.<namespace>.svc)", cfg.ControlPlaneName)
	}
	if cfg.XDSAddress == "" {
		cfg.XDSAddress = net.JoinHostPort(cfg.ControlPlaneName, DefaultXDSPort)
	}
	if cfg.CAAddress == "" {
		cfg.CAAddress = net.JoinHostPort(cfg.ControlPlaneName, DefaultCAPort)
	}
	if cfg.DiscoveryInterval <= 0 {
		cfg.DiscoveryInterval = 30 * time.Second
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Controller{client: client, dyn: dyn, disc: client.Discovery(), cfg: cfg, log: log, metrics: m, state: map[key]string{}}, nil
}

// caches are the informers of one Run.
type caches struct {
	gateways, classes cache.SharedIndexInformer
	deployments       appslisters.DeploymentLister
	services          corelisters.ServiceLister
	serviceAccounts   corelisters.ServiceAccountLister
}

// Run waits for the Gateway API to be installed, then reconciles the
// GatewayClass and every waypoint Gateway, and keeps doing so as they
// change, until ctx ends. It writes nothing after ctx ended, and returns
// nil then, once everything it started has stopped. It is a leader-only
// writer (internal/leader).
func (c *Controller) Run(ctx context.Context) error {
	if ok := WaitForGatewayAPI(ctx, c.disc, c.cfg.DiscoveryInterval, c.log); !ok {
		return nil
	}
	defer utilruntime.HandleCrash()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
		workqueue.TypedRateLimitingQueueConfig[key]{Name: "ambit-waypoint"})
	defer q.ShutDown()

	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 0)
	defer dynFactory.Shutdown()
	// Only the objects this controller made: they carry the class label.
	factory := informers.NewSharedInformerFactoryWithOptions(c.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = LabelGatewayClassName + "=" + model.WaypointClass
		}),
		informers.WithTransform(dropManagedFields))
	defer factory.Shutdown()

	cs := caches{
		gateways:        dynFactory.ForResource(GatewaysResource).Informer(),
		classes:         dynFactory.ForResource(GatewayClassesResource).Informer(),
		deployments:     factory.Apps().V1().Deployments().Lister(),
		services:        factory.Core().V1().Services().Lister(),
		serviceAccounts: factory.Core().V1().ServiceAccounts().Lister(),
	}
	enqueueGateway := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if m, ok := obj.(metav1.Object); ok {
			q.Add(key{namespace: m.GetNamespace(), name: m.GetName()})
		}
	}
	enqueueOwner := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if m, ok := obj.(metav1.Object); ok && m.GetLabels()[LabelGatewayName] != "" {
			q.Add(key{namespace: m.GetNamespace(), name: m.GetLabels()[LabelGatewayName]})
		}
	}
	enqueueClass := func(any) { q.Add(key{class: true, name: model.WaypointClass}) }
	handlers := []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{cs.gateways, enqueueGateway},
		{cs.classes, enqueueClass},
		{factory.Apps().V1().Deployments().Informer(), enqueueOwner},
		{factory.Core().V1().Services().Informer(), enqueueOwner},
		{factory.Core().V1().ServiceAccounts().Informer(), enqueueOwner},
	}
	for _, inf := range []cache.SharedIndexInformer{cs.gateways, cs.classes} {
		if err := inf.SetTransform(dropManagedFields); err != nil {
			return fmt.Errorf("waypoint: informer transform: %w", err)
		}
	}
	syncs := make([]cache.InformerSynced, 0, len(handlers))
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    h.fn,
			UpdateFunc: func(_, n any) { h.fn(n) },
			DeleteFunc: h.fn,
		}); err != nil {
			return fmt.Errorf("waypoint: event handler: %w", err)
		}
		syncs = append(syncs, h.inf.HasSynced)
	}
	dynFactory.Start(ctx.Done())
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return nil // ctx ended
	}
	q.Add(key{class: true, name: model.WaypointClass})
	c.log.Info("waypoint controller started")

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

// WaitForGatewayAPI returns true once the API server serves Gateways, or
// false when ctx ended first. While the Gateway API is missing it logs
// that once and checks again every interval.
func WaitForGatewayAPI(ctx context.Context, disc discovery.DiscoveryInterface, interval time.Duration, log *slog.Logger) bool {
	warned := false
	for {
		ok, err := gatewayAPIInstalled(disc)
		switch {
		case ok:
			return true
		case err != nil:
			log.Warn("checking for the Gateway API failed; retrying", "error", err)
		case !warned:
			log.Warn("the Gateway API (gateway.networking.k8s.io/v1 gateways) is not installed: no waypoints are deployed until its CRDs are (deploy/, gatewayAPI.installCRDs)",
				"recheck", interval)
			warned = true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(interval):
		}
	}
}

func gatewayAPIInstalled(d discovery.DiscoveryInterface) (bool, error) {
	return Served(d, GatewaysResource)
}

// Served reports whether the API server serves the resource r.
func Served(d discovery.DiscoveryInterface, r schema.GroupVersionResource) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(r.GroupVersion().String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discovering %s: %w", r.GroupVersion(), err)
	}
	for _, res := range list.APIResources {
		if res.Name == r.Resource {
			return true, nil
		}
	}
	return false, nil
}

func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func (c *Controller) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[key], cs caches) bool {
	k, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(k)
	kind := "gateway"
	var err error
	if k.class {
		kind = "gatewayclass"
		err = c.reconcileClass(ctx, cs)
	} else {
		err = c.reconcileGateway(ctx, k, cs)
	}
	switch {
	case err == nil:
		q.Forget(k)
		c.metrics.reconciles.WithLabelValues(kind, "success").Inc()
	case ctx.Err() != nil:
		// No longer leading: the next leader starts over.
	default:
		c.metrics.reconciles.WithLabelValues(kind, "error").Inc()
		c.log.Warn("reconciling a waypoint failed; retrying", "kind", kind, "namespace", k.namespace, "name", k.name, "error", err)
		q.AddRateLimited(k)
	}
	return true
}

// ClassDescription is the GatewayClass's spec.description (the Gateway
// API CRD allows at most 64 characters).
const ClassDescription = "Ambit waypoints: L7 proxies for mesh traffic (HBONE on 15008)"

// reconcileClass creates the GatewayClass ambit-waypoint if it is missing
// and marks it Accepted. A GatewayClass of that name that names another
// controller is left alone (and its Gateways too).
func (c *Controller) reconcileClass(ctx context.Context, cs caches) error {
	obj, exists, err := cs.classes.GetStore().GetByKey(model.WaypointClass)
	if err != nil {
		return err
	}
	r := c.dyn.Resource(GatewayClassesResource)
	if !exists {
		gc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": gwapiv1.GroupVersion.String(), "kind": "GatewayClass",
			"metadata": map[string]any{"name": model.WaypointClass, "labels": map[string]any{"app.kubernetes.io/part-of": "ambit"}},
			"spec": map[string]any{
				"controllerName": model.WaypointControllerName,
				"description":    ClassDescription,
			},
		}}
		if ctx.Err() != nil {
			return nil
		}
		if _, err := r.Apply(ctx, model.WaypointClass, gc, metav1.ApplyOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("creating GatewayClass %s (RBAC: the control plane needs create/patch on gatewayclasses): %w", model.WaypointClass, err)
		}
		c.log.Info("GatewayClass created", "name", model.WaypointClass)
		return nil // its informer event brings it back here for the status
	}
	gc, err := toGatewayClass(obj)
	if err != nil {
		return err
	}
	if string(gc.Spec.ControllerName) != model.WaypointControllerName {
		c.log.Warn("GatewayClass "+model.WaypointClass+" names another controller; leaving it and its Gateways alone",
			"controllerName", gc.Spec.ControllerName)
		return nil
	}
	want := ClassStatus(gc.Generation)
	if cur := findCondition(gc.Status.Conditions, want.Type); cur.Status == want.Status &&
		cur.Reason == want.Reason && cur.Message == want.Message && cur.ObservedGeneration == want.ObservedGeneration {
		return nil
	}
	want.LastTransitionTime = metav1.Now()
	cond, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&want)
	if err != nil {
		return err
	}
	apply := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gwapiv1.GroupVersion.String(), "kind": "GatewayClass",
		"metadata": map[string]any{"name": model.WaypointClass},
		"status":   map[string]any{"conditions": []any{cond}},
	}}
	if ctx.Err() != nil {
		return nil
	}
	if _, err := r.ApplyStatus(ctx, model.WaypointClass, apply, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("writing the status of GatewayClass %s (RBAC: gatewayclasses/status patch): %w", model.WaypointClass, err)
	}
	return nil
}

// reconcileGateway deploys the waypoint Gateway k and writes its status.
func (c *Controller) reconcileGateway(ctx context.Context, k key, cs caches) error {
	obj, exists, err := cs.gateways.GetStore().GetByKey(k.namespace + "/" + k.name)
	if err != nil {
		return err
	}
	if !exists {
		c.setState(k, "") // its objects go with it (owner references)
		return nil
	}
	gw, err := toGateway(obj)
	if err != nil {
		return err
	}
	if string(gw.Spec.GatewayClassName) != model.WaypointClass || !c.classIsOurs(cs) {
		c.setState(k, "")
		return nil
	}
	v := Validate(gw)
	var svc *corev1.Service
	var dep *appsv1.Deployment
	if v.Accepted {
		if err := c.checkOwnership(ctx, gw, cs); err != nil {
			v = Verdict{Reason: gwapiv1.GatewayReasonInvalid, Message: err.Error()}
		}
	}
	if v.Accepted {
		if svc, dep, err = c.deploy(ctx, gw); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	want := Status(gw, v, svc, dep, c.cfg.ClusterDomain)
	next, changed := NextStatus(gw.Status, want, metav1.Now())
	switch {
	case !v.Accepted:
		c.setState(k, "invalid")
	case findCondition(next.Conditions, string(gwapiv1.GatewayConditionProgrammed)).Status == metav1.ConditionTrue:
		c.setState(k, "programmed")
	default:
		c.setState(k, "pending")
	}
	if !changed {
		return nil
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&next)
	if err != nil {
		return fmt.Errorf("encoding the status of Gateway %s/%s: %w", gw.Namespace, gw.Name, err)
	}
	apply := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gwapiv1.GroupVersion.String(), "kind": "Gateway",
		"metadata": map[string]any{"name": gw.Name, "namespace": gw.Namespace},
		"status":   map[string]any{"conditions": raw["conditions"], "addresses": raw["addresses"]},
	}}
	if raw["addresses"] == nil {
		delete(apply.Object["status"].(map[string]any), "addresses")
	}
	_, err = c.dyn.Resource(GatewaysResource).Namespace(gw.Namespace).ApplyStatus(ctx, gw.Name, apply, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	switch {
	case apierrors.IsNotFound(err):
		return nil // deleted meanwhile
	case err != nil:
		return fmt.Errorf("writing the status of Gateway %s/%s (RBAC: the control plane needs patch on gateways/status): %w", gw.Namespace, gw.Name, err)
	}
	c.log.Info("waypoint status updated", "namespace", gw.Namespace, "name", gw.Name,
		"accepted", v.Accepted, "programmed", findCondition(next.Conditions, string(gwapiv1.GatewayConditionProgrammed)).Status,
		"message", findCondition(next.Conditions, string(gwapiv1.GatewayConditionProgrammed)).Message)
	return nil
}

// classIsOurs reports whether the GatewayClass ambit-waypoint, if it
// exists, names this controller (before it is created, Gateways of the
// class are ours: the class is about to be).
func (c *Controller) classIsOurs(cs caches) bool {
	obj, exists, err := cs.classes.GetStore().GetByKey(model.WaypointClass)
	if err != nil || !exists {
		return true
	}
	gc, err := toGatewayClass(obj)
	return err == nil && string(gc.Spec.ControllerName) == model.WaypointControllerName
}

// checkOwnership refuses to take over a ServiceAccount, Service or
// Deployment of the Gateway's name that it does not control. Objects
// missing from the caches (which hold only objects with the class label)
// are looked up in the API.
func (c *Controller) checkOwnership(ctx context.Context, gw *gwapiv1.Gateway, cs caches) error {
	type lookup struct {
		kind   string
		cached func() (metav1.Object, error)
		live   func() (metav1.Object, error)
	}
	ns, name := gw.Namespace, gw.Name
	opts := metav1.GetOptions{}
	for _, l := range []lookup{
		{"ServiceAccount", func() (metav1.Object, error) { return cs.serviceAccounts.ServiceAccounts(ns).Get(name) },
			func() (metav1.Object, error) { return c.client.CoreV1().ServiceAccounts(ns).Get(ctx, name, opts) }},
		{"Service", func() (metav1.Object, error) { return cs.services.Services(ns).Get(name) },
			func() (metav1.Object, error) { return c.client.CoreV1().Services(ns).Get(ctx, name, opts) }},
		{"Deployment", func() (metav1.Object, error) { return cs.deployments.Deployments(ns).Get(name) },
			func() (metav1.Object, error) { return c.client.AppsV1().Deployments(ns).Get(ctx, name, opts) }},
	} {
		o, err := l.cached()
		if apierrors.IsNotFound(err) {
			o, err = l.live()
		}
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s %s/%s: %w", l.kind, ns, name, err)
		}
		if ref := metav1.GetControllerOfNoCopy(o); ref == nil || ref.UID != gw.UID {
			return fmt.Errorf("a %s %s/%s that this Gateway does not own already exists: delete or rename it, or rename the Gateway", l.kind, ns, name)
		}
	}
	return nil
}

// controlPlane reads the control plane's Service (for its ClusterIP) and
// mesh roots, on every reconcile (level-based: a changed root or address
// reaches the waypoints of a Gateway at its next reconcile).
func (c *Controller) controlPlane(ctx context.Context) (ControlPlane, string, error) {
	ns := c.cfg.ControlPlaneNamespace
	clusterIP := ""
	svc, err := c.client.CoreV1().Services(ns).Get(ctx, c.cfg.ControlPlaneService, metav1.GetOptions{})
	switch {
	case err == nil:
		clusterIP = svc.Spec.ClusterIP
	case apierrors.IsNotFound(err):
		// Waypoints then use the configured addresses (DNS).
	default:
		return ControlPlane{}, "", fmt.Errorf("reading the control plane's Service %s/%s (RBAC: get on services): %w", ns, c.cfg.ControlPlaneService, err)
	}
	cm, err := c.client.CoreV1().ConfigMaps(ns).Get(ctx, RootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		return ControlPlane{}, "", fmt.Errorf("reading the mesh roots, ConfigMap %s/%s (the CA publishes it on the leader: is it running? RBAC: get on configmaps): %w", ns, RootCertConfigMap, err)
	}
	roots := cm.Data[RootCertKey]
	if roots == "" {
		return ControlPlane{}, "", fmt.Errorf("the ConfigMap %s/%s has no %s yet (the CA publishes it)", ns, RootCertConfigMap, RootCertKey)
	}
	return ResolveControlPlane(c.cfg, clusterIP), roots, nil
}

// deploy applies the waypoint's objects and returns the Service and
// Deployment as the API server answered.
func (c *Controller) deploy(ctx context.Context, gw *gwapiv1.Gateway) (*corev1.Service, *appsv1.Deployment, error) {
	cp, roots, err := c.controlPlane(ctx)
	if err != nil {
		return nil, nil, err
	}
	objs := Desired(gw, c.cfg, cp)
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	rbac := "RBAC: the control plane needs create/patch on serviceaccounts, services, configmaps and deployments in every namespace"
	if ctx.Err() != nil {
		return nil, nil, nil
	}
	// In the control plane's own namespace the CA's ConfigMap is the one
	// to mount; elsewhere a copy, shared by the namespace's waypoints.
	if gw.Namespace != c.cfg.ControlPlaneNamespace {
		cmOpts := metav1.ApplyOptions{FieldManager: ConfigMapFieldManager(gw), Force: true}
		if _, err := c.client.CoreV1().ConfigMaps(gw.Namespace).Apply(ctx, RootCertConfigMapFor(gw, roots), cmOpts); err != nil {
			return nil, nil, fmt.Errorf("applying ConfigMap %s/%s (%s): %w", gw.Namespace, RootCertConfigMap, rbac, err)
		}
		if ctx.Err() != nil {
			return nil, nil, nil
		}
	}
	if _, err := c.client.CoreV1().ServiceAccounts(gw.Namespace).Apply(ctx, objs.ServiceAccount, opts); err != nil {
		return nil, nil, fmt.Errorf("applying ServiceAccount %s/%s (%s): %w", gw.Namespace, gw.Name, rbac, err)
	}
	if ctx.Err() != nil {
		return nil, nil, nil
	}
	svc, err := c.client.CoreV1().Services(gw.Namespace).Apply(ctx, objs.Service, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("applying Service %s/%s (%s): %w", gw.Namespace, gw.Name, rbac, err)
	}
	if ctx.Err() != nil {
		return nil, nil, nil
	}
	dep, err := c.client.AppsV1().Deployments(gw.Namespace).Apply(ctx, objs.Deployment, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("applying Deployment %s/%s (%s): %w", gw.Namespace, gw.Name, rbac, err)
	}
	return svc, dep, nil
}

// setState records the state of Gateway k ("" when it is gone or not a
// waypoint) for the ambit_waypoint_gateways gauge.
func (c *Controller) setState(k key, state string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state[k]
	if old == state {
		return
	}
	if old != "" {
		c.metrics.gateways.WithLabelValues(old).Dec()
	}
	if state == "" {
		delete(c.state, k)
		return
	}
	c.state[k] = state
	c.metrics.gateways.WithLabelValues(state).Inc()
}

func toGateway(obj any) (*gwapiv1.Gateway, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("waypoint: a Gateway in the cache is a %T, not unstructured", obj)
	}
	var gw gwapiv1.Gateway
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &gw); err != nil {
		return nil, fmt.Errorf("waypoint: Gateway %s/%s does not match the Gateway API v1 schema (are the Gateway API CRDs of deploy/ installed?): %w", u.GetNamespace(), u.GetName(), err)
	}
	return &gw, nil
}

func toGatewayClass(obj any) (*gwapiv1.GatewayClass, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("waypoint: a GatewayClass in the cache is a %T, not unstructured", obj)
	}
	var gc gwapiv1.GatewayClass
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &gc); err != nil {
		return nil, fmt.Errorf("waypoint: GatewayClass %s does not match the Gateway API v1 schema: %w", u.GetName(), err)
	}
	return &gc, nil
}

// findCondition returns the condition of type t, or a zero condition of
// that type with status Unknown.
func findCondition(cs []metav1.Condition, t string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return &metav1.Condition{Type: t, Status: metav1.ConditionUnknown}
}
