// Package kube watches Kubernetes and keeps the mesh model up to date: it
// turns Namespaces, Pods, Services, EndpointSlices and Nodes into the
// Address resources of workload discovery (through internal/model), with
// the waypoint each Service and Workload is bound to (Gateway API Gateways
// of class ambit-waypoint that are Programmed, chosen by the labels
// ambit.dev/use-waypoint: model.ServiceWaypoint, model.WorkloadWaypoint;
// a label naming a Gateway that cannot take the traffic is logged and
// counted in ambit_model_waypoint_unusable, and the traffic goes without a
// waypoint), and security.ambit.dev AuthorizationPolicies and
// PeerAuthentications into its Authorization resources (through internal/policy), and hands the resources
// that changed, and only those, to a Sink (the xDS server). The leader also
// writes each policy's Accepted condition (RunStatusWriter).
//
// It is a controller of the canonical shape: shared informers feed a typed
// workqueue keyed by object; a worker reconciles each key level-based (from
// the informer caches, never from the event), Forgets it on success and
// re-queues it rate-limited on error. What is sent is decided by comparing
// the derived resource with the one sent last (proto.Equal), so a Pod
// update that changes nothing a ztunnel sees sends nothing.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	workloadv1alpha1 "ambit.dev/api/workload/v1alpha1"
	"ambit.dev/controlplane/internal/backendpolicy"
	"ambit.dev/controlplane/internal/httproute"
	"ambit.dev/controlplane/internal/model"
	"ambit.dev/controlplane/internal/policy"
	"ambit.dev/controlplane/internal/waypointxds"
)

// Sink receives the resources that changed: updated by resource name, and
// the names of removed ones. internal/xds.Server is one.
type Sink interface {
	UpdateAddresses(updated map[string]*workloadv1alpha1.Address, removed []string) error
	UpdateAuthorizations(updated map[string]*workloadv1alpha1.Authorization, removed []string) error
}

// Config configures the Controller.
type Config struct {
	// TrustDomain of workload identities (default cluster.local).
	TrustDomain string
	// ClusterDomain is the cluster's DNS domain, used in Service hostnames
	// (default cluster.local).
	ClusterDomain string
	// RootNamespace is the mesh's root namespace: policies there apply
	// mesh-wide (see internal/policy). Required.
	RootNamespace string
	// Registerer, if set, receives the controller's metrics.
	Registerer prometheus.Registerer
	// Waypoints, if set, receives the Envoy configuration input of every
	// Programmed waypoint (see WaypointSink); nil: none is computed.
	Waypoints WaypointSink
}

// Index names of the informer caches.
const (
	podsByNode        = "node"
	slicesByService   = "service"
	defaultDomainName = "cluster.local"
)

// kind is the kind of a queued object.
type kind uint8

const (
	kindPod kind = iota
	kindService
	kindNamespace
	kindNode
	kindAuthorizationPolicy
	kindPeerAuthentication
	kindGateway
	kindHTTPRoute
	kindGRPCRoute
	kindHTTPFault
	kindBackendPolicy
)

func (k kind) String() string {
	return [...]string{"pod", "service", "namespace", "node", "authorizationpolicy", "peerauthentication", "gateway", "httproute", "grpcroute", "httpfault", "backendpolicy"}[k]
}

// key is a workqueue item: one object, by kind, namespace and name.
// EndpointSlices are queued as their Service.
type key struct {
	kind      kind
	namespace string
	name      string
}

// Controller watches Kubernetes and publishes Address resources. Build it
// with New and Run it once.
type Controller struct {
	log     *slog.Logger
	sink    Sink
	cfg     model.Config
	domain  string
	metrics *metrics

	factory     informers.SharedInformerFactory
	informers   []cache.SharedIndexInformer
	pods        cache.SharedIndexInformer
	nsInformer  cache.SharedIndexInformer
	svcInformer cache.SharedIndexInformer
	podLister   corelisters.PodLister
	nsLister    corelisters.NamespaceLister
	svcLister   corelisters.ServiceLister
	nodeLister  corelisters.NodeLister
	slices      cache.SharedIndexInformer

	dyn           dynamic.Interface
	dynFactory    dynamicinformer.DynamicSharedInformerFactory
	authzPolicies cache.SharedIndexInformer
	peerAuthns    cache.SharedIndexInformer
	rootNamespace string

	// discovery tells Run whether the Gateway API is installed; gwFactory
	// and gatewayInformer watch Gateways then, and gateways is set to
	// gatewayInformer once it runs (nil: no waypoints are bound).
	discovery       discovery.DiscoveryInterface
	gwFactory       dynamicinformer.DynamicSharedInformerFactory
	gatewayInformer cache.SharedIndexInformer
	gateways        cache.SharedIndexInformer
	// routeFactory and routeInformer watch HTTPRoutes when the Gateway
	// API serves them; httpRoutes is set to it once it runs. The same for
	// GRPCRoutes, with their own factory (either may be served alone).
	routeFactory      dynamicinformer.DynamicSharedInformerFactory
	routeInformer     cache.SharedIndexInformer
	httpRoutes        cache.SharedIndexInformer
	grpcRouteFactory  dynamicinformer.DynamicSharedInformerFactory
	grpcRouteInformer cache.SharedIndexInformer
	grpcRoutes        cache.SharedIndexInformer
	// faultFactory and faultInformer watch HTTPFaults when their CRD is
	// served; faults is set to it once it runs.
	faultFactory  dynamicinformer.DynamicSharedInformerFactory
	faultInformer cache.SharedIndexInformer
	faults        cache.SharedIndexInformer
	// bpFactory and bpInformer watch BackendPolicies when the API server
	// serves them; backendPolicies is set to bpInformer once it runs.
	bpFactory       dynamicinformer.DynamicSharedInformerFactory
	bpInformer      cache.SharedIndexInformer
	backendPolicies cache.SharedIndexInformer

	queue  workqueue.TypedRateLimitingInterface[key]
	synced chan struct{}

	// mu guards the model state below.
	mu sync.Mutex
	// published is every Address resource last handed to the sink.
	published map[string]*workloadv1alpha1.Address
	// podUID is the resource name (uid) published for each pod.
	podUID map[model.ObjectRef]string
	// svcMembers is, per Service, the pods that back it and their ports.
	svcMembers map[model.ObjectRef]map[model.ObjectRef][]model.PortMapping
	// podServices is the reverse of svcMembers: per pod, the Service
	// resource names it backs and its ports in each.
	podServices map[model.ObjectRef]map[string][]model.PortMapping
	// policies holds every compiled policy.
	policies *policy.Index
	// publishedAuthz is every Authorization resource last handed to the
	// sink.
	publishedAuthz map[string]*workloadv1alpha1.Authorization
	// waypoints are the Gateways of class ambit-waypoint.
	waypoints model.Waypoints
	// unusable are the resources whose waypoint label names a Gateway
	// that cannot take their traffic, by resource name.
	unusable map[string]unusableBinding

	// waypointSink receives the waypoints' configuration input (nil:
	// none). svcWaypoint is the waypoint each Service's traffic is bound
	// to, svcWaypointByName the same by Service resource name, wpServices
	// the reverse; wpSent is the input last sent per waypoint.
	waypointSink      WaypointSink
	svcWaypoint       map[model.ObjectRef]model.ObjectRef
	svcWaypointByName map[string]model.ObjectRef
	wpServices        map[model.ObjectRef]map[model.ObjectRef]bool
	wpSent            map[model.ObjectRef]waypointxds.Input
	// routes are the compiled HTTPRoutes; routesBySvc the routes naming
	// each Service, as parent or backend.
	routes      map[httproute.Ref]httproute.Compiled
	routesBySvc map[model.ObjectRef]map[httproute.Ref]bool
	// svcTargetState is, per Service, what an AuthorizationPolicy
	// targeting it resolves to (exists, selector, waypoint); a change
	// recompiles the policies with targetRefs of its namespace.
	svcTargetState map[model.ObjectRef]string
	// policiesLoaded is set once resyncAll loaded the targetRefs policies.
	policiesLoaded bool
	// routesByFault are the routes naming each HTTPFault.
	routesByFault map[httproute.FaultRef]map[httproute.Ref]bool
	// backendPolicies is the last resolution of every BackendPolicy.
	bpResult backendpolicy.Result

	// statusMu guards statusQueue, the status writer's queue while it runs
	// (nil otherwise). Lock order: mu before statusMu.
	statusMu    sync.Mutex
	statusQueue workqueue.TypedRateLimitingInterface[statusItem]
}

// New builds a Controller that reads from client (core objects) and dyn
// (the security.ambit.dev policies) and publishes to sink. Nothing is
// started until Run.
func New(client kubernetes.Interface, dyn dynamic.Interface, sink Sink, cfg Config, log *slog.Logger) (*Controller, error) {
	if client == nil || dyn == nil || sink == nil || log == nil {
		return nil, errors.New("kube: a client, a dynamic client, a sink and a logger are required")
	}
	if cfg.RootNamespace == "" {
		return nil, errors.New("kube: the mesh root namespace is required")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Controller{
		log:         log,
		sink:        sink,
		cfg:         model.Config{TrustDomain: cmpOr(cfg.TrustDomain, defaultDomainName)},
		domain:      cmpOr(cfg.ClusterDomain, defaultDomainName),
		metrics:     m,
		factory:     informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(trim)),
		synced:      make(chan struct{}),
		published:   map[string]*workloadv1alpha1.Address{},
		podUID:      map[model.ObjectRef]string{},
		svcMembers:  map[model.ObjectRef]map[model.ObjectRef][]model.PortMapping{},
		podServices: map[model.ObjectRef]map[string][]model.PortMapping{},

		dyn:            dyn,
		dynFactory:     dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		rootNamespace:  cfg.RootNamespace,
		policies:       policy.NewIndex(),
		publishedAuthz: map[string]*workloadv1alpha1.Authorization{},

		discovery: client.Discovery(),
		gwFactory: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		// HTTPRoutes have their own factory: started only when served.
		routeFactory:     dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		grpcRouteFactory: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		bpFactory:        dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		waypoints:        model.Waypoints{},
		unusable:         map[string]unusableBinding{},

		waypointSink:      cfg.Waypoints,
		svcWaypoint:       map[model.ObjectRef]model.ObjectRef{},
		svcWaypointByName: map[string]model.ObjectRef{},
		wpServices:        map[model.ObjectRef]map[model.ObjectRef]bool{},
		wpSent:            map[model.ObjectRef]waypointxds.Input{},
		routes:            map[httproute.Ref]httproute.Compiled{},
		routesBySvc:       map[model.ObjectRef]map[httproute.Ref]bool{},
		svcTargetState:    map[model.ObjectRef]string{},
		routesByFault:     map[httproute.FaultRef]map[httproute.Ref]bool{},
		faultFactory:      dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
	}
	c.gatewayInformer = c.gwFactory.ForResource(GatewaysResource).Informer()
	c.routeInformer = c.routeFactory.ForResource(HTTPRoutesResource).Informer()
	c.grpcRouteInformer = c.grpcRouteFactory.ForResource(GRPCRoutesResource).Informer()
	c.faultInformer = c.faultFactory.ForResource(HTTPFaultsResource).Informer()
	c.bpInformer = c.bpFactory.ForResource(BackendPoliciesResource).Informer()
	c.authzPolicies = c.dynFactory.ForResource(AuthorizationPoliciesResource).Informer()
	c.peerAuthns = c.dynFactory.ForResource(PeerAuthenticationsResource).Informer()
	for _, inf := range []cache.SharedIndexInformer{c.authzPolicies, c.peerAuthns, c.gatewayInformer, c.routeInformer, c.grpcRouteInformer, c.faultInformer, c.bpInformer} {
		if err := inf.SetTransform(trimUnstructured); err != nil {
			return nil, fmt.Errorf("kube: policy or gateway informer: %w", err)
		}
	}

	core := c.factory.Core().V1()
	c.pods = core.Pods().Informer()
	c.podLister = core.Pods().Lister()
	c.nsLister = core.Namespaces().Lister()
	c.svcLister = core.Services().Lister()
	c.nodeLister = core.Nodes().Lister()
	c.slices = c.factory.Discovery().V1().EndpointSlices().Informer()
	if err := c.pods.AddIndexers(cache.Indexers{podsByNode: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("kube: pod index: %w", err)
	}
	if err := c.slices.AddIndexers(cache.Indexers{slicesByService: func(obj any) ([]string, error) {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
			return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("kube: endpointslice index: %w", err)
	}

	c.nsInformer = core.Namespaces().Informer()
	c.svcInformer = core.Services().Informer()
	nsInformer, svcInformer := c.nsInformer, c.svcInformer
	nodeInformer := core.Nodes().Informer()
	c.informers = []cache.SharedIndexInformer{nsInformer, c.pods, svcInformer, c.slices, nodeInformer, c.authzPolicies, c.peerAuthns}
	for _, inf := range []cache.SharedIndexInformer{nsInformer, c.pods, svcInformer} {
		if err := inf.AddIndexers(cache.Indexers{byWaypoint: indexByWaypoint}); err != nil {
			return nil, fmt.Errorf("kube: waypoint index: %w", err)
		}
	}

	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{c.pods, c.handler(kindPod, nil)},
		{svcInformer, c.handler(kindService, nil)},
		{nsInformer, c.handler(kindNamespace, func(o, n metav1.Object) bool {
			// Only the labels of a namespace matter.
			return !maps.Equal(o.GetLabels(), n.GetLabels())
		})},
		// Only whether a node exists matters.
		{nodeInformer, c.handler(kindNode, func(metav1.Object, metav1.Object) bool { return false })},
		// A policy matters when its spec changes (metadata.generation);
		// status-only updates, such as the status writer's own, are ignored.
		{c.authzPolicies, c.handler(kindAuthorizationPolicy, specChanged)},
		{c.peerAuthns, c.handler(kindPeerAuthentication, specChanged)},
		// A Gateway matters when its class, its waypoint-for label or its
		// Programmed condition changes.
		{c.gatewayInformer, c.handler(kindGateway, gatewayChanged)},
		// An HTTPRoute matters when its spec changes; status-only updates
		// (the status writer's own, other controllers') are ignored.
		{c.routeInformer, c.handler(kindHTTPRoute, specChanged)},
		{c.grpcRouteInformer, c.handler(kindGRPCRoute, specChanged)},
		// An HTTPFault matters when its spec changes.
		{c.faultInformer, c.handler(kindHTTPFault, specChanged)},
		{c.bpInformer, c.handler(kindBackendPolicy, specChanged)},
		{c.slices, cache.ResourceEventHandlerDetailedFuncs{
			AddFunc: func(obj any, initial bool) {
				if !initial {
					c.enqueueSlice(obj)
				}
			},
			UpdateFunc: func(o, n any) {
				c.enqueueSlice(o)
				c.enqueueSlice(n)
			},
			DeleteFunc: c.enqueueSlice,
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("kube: event handler: %w", err)
		}
	}
	return c, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// trim drops the parts of objects the controller never reads, to keep the
// informer caches small: managed fields everywhere; everything but the name
// of a Node; volumes, env, commands, probes and container statuses of a Pod.
func trim(obj any) (any, error) {
	if m, err := metaOf(obj); err == nil {
		m.SetManagedFields(nil)
	}
	switch o := obj.(type) {
	case *corev1.Node:
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}}, nil
	case *corev1.Pod:
		delete(o.Annotations, corev1.LastAppliedConfigAnnotation)
		o.Spec.Volumes = nil
		for _, cs := range [][]corev1.Container{o.Spec.Containers, o.Spec.InitContainers} {
			for i := range cs {
				cs[i] = corev1.Container{Name: cs[i].Name, Ports: cs[i].Ports}
			}
		}
		o.Spec.EphemeralContainers = nil
		o.Status.ContainerStatuses = nil
		o.Status.InitContainerStatuses = nil
		o.Status.EphemeralContainerStatuses = nil
	}
	return obj, nil
}

// trimUnstructured drops the managed fields of a cached policy.
func trimUnstructured(obj any) (any, error) {
	if m, err := metaOf(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// specChanged reports whether a policy update changed what compiles: its
// spec (metadata.generation) or, for objects without a generation, anything.
func specChanged(o, n metav1.Object) bool {
	return o.GetGeneration() != n.GetGeneration() || n.GetGeneration() == 0
}

func metaOf(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// handler returns event handlers that queue objects of kind k. changed, if
// set, filters updates.
func (c *Controller) handler(k kind, changed func(o, n metav1.Object) bool) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			// Objects of the initial list are covered by resyncAll.
			if !initial {
				c.enqueue(k, obj)
			}
		},
		UpdateFunc: func(o, n any) {
			// The informers have no resync period, so every update is a
			// change of the object; changed filters out the irrelevant ones.
			om, err1 := metaOf(o)
			nm, err2 := metaOf(n)
			if err1 == nil && err2 == nil && changed != nil && !changed(om, nm) {
				return
			}
			c.enqueue(k, n)
		},
		DeleteFunc: func(obj any) { c.enqueue(k, obj) },
	}
}

func (c *Controller) enqueue(k kind, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		ns, name, err := cache.SplitMetaNamespaceKey(t.Key)
		if err != nil {
			utilruntime.HandleError(err)
			return
		}
		c.queue.Add(key{kind: k, namespace: ns, name: name})
		return
	}
	m, err := metaOf(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(key{kind: k, namespace: m.GetNamespace(), name: m.GetName()})
}

func (c *Controller) enqueueSlice(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return
	}
	c.queue.Add(key{kind: kindService, namespace: s.Namespace, name: s.Labels[discoveryv1.LabelServiceName]})
}

// Synced is closed once the caches have synced and the first complete set
// of resources was handed to the sink.
func (c *Controller) Synced() <-chan struct{} { return c.synced }

// HasSynced reports whether Synced is closed.
func (c *Controller) HasSynced() bool {
	select {
	case <-c.synced:
		return true
	default:
		return false
	}
}

// Run starts the informers, waits for their caches, publishes the complete
// state, then reconciles changes until ctx is done. It returns when every
// goroutine it started has stopped.
func (c *Controller) Run(ctx context.Context) error {
	if c.queue != nil {
		return errors.New("kube: Run called twice")
	}
	// The queue starts a goroutine, so it is made here, not in New. The
	// event handlers that use it only run once the informers start below.
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[key](),
		workqueue.TypedRateLimitingQueueConfig[key]{Name: "ambit-model"})
	defer utilruntime.HandleCrash()
	defer c.factory.Shutdown() // runs last: waits for the informers to stop
	defer c.dynFactory.Shutdown()
	defer c.gwFactory.Shutdown()
	defer c.routeFactory.Shutdown()
	defer c.grpcRouteFactory.Shutdown()
	defer c.faultFactory.Shutdown()
	defer c.bpFactory.Shutdown()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer c.queue.ShutDown()

	served, err := gatewayAPIServed(c.discovery)
	if err != nil {
		return err
	}
	gatewayAPI := served[GatewaysResource.Resource]
	syncs := make([]cache.InformerSynced, 0, len(c.informers)+1)
	for _, inf := range c.informers {
		syncs = append(syncs, inf.HasSynced)
	}
	if gatewayAPI {
		c.mu.Lock()
		c.gateways = c.gatewayInformer
		c.mu.Unlock()
		syncs = append(syncs, c.gatewayInformer.HasSynced)
		// Each route kind starts once its resource is served (bound
		// informers stay nil otherwise: no routes of that kind).
		for _, r := range []struct {
			res     schema.GroupVersionResource
			factory dynamicinformer.DynamicSharedInformerFactory
			inf     cache.SharedIndexInformer
			set     *cache.SharedIndexInformer
		}{
			{HTTPRoutesResource, c.routeFactory, c.routeInformer, &c.httpRoutes},
			{GRPCRoutesResource, c.grpcRouteFactory, c.grpcRouteInformer, &c.grpcRoutes},
		} {
			if !served[r.res.Resource] {
				c.log.Warn("the Gateway API does not serve this route kind: waypoints get no such routes; install its CRDs and restart the control plane", "resource", r.res.String())
				continue
			}
			syncs = append(syncs, c.startServed(ctx, r.set, r.inf, r.factory))
		}
		c.gwFactory.Start(ctx.Done())
	} else {
		c.log.Warn("the Gateway API (gateway.networking.k8s.io/v1 gateways) is not installed: no traffic is bound to a waypoint; install its CRDs (deploy/, gatewayAPI.installCRDs) and restart the control plane")
	}
	// Ambit's networking CRDs: HTTPFaults (only routes name them) and
	// BackendPolicies.
	netServed, err := resourcesServed(c.discovery, BackendPoliciesResource.GroupVersion())
	if err != nil {
		return err
	}
	switch {
	case !gatewayAPI:
	case netServed[HTTPFaultsResource.Resource]:
		syncs = append(syncs, c.startServed(ctx, &c.faults, c.faultInformer, c.faultFactory))
	default:
		c.log.Warn("networking.ambit.dev/v1alpha1 httpfaults are not served: HTTPRoute rules naming an HTTPFault answer 500; install the CRDs (deploy/manifests) and restart the control plane")
	}
	if netServed[BackendPoliciesResource.Resource] {
		syncs = append(syncs, c.startServed(ctx, &c.backendPolicies, c.bpInformer, c.bpFactory))
	} else {
		c.log.Warn("the API server serves no backendpolicies (networking.ambit.dev/v1alpha1): BackendPolicies are not applied; install the CRDs (deploy/manifests) and restart the control plane")
	}
	c.factory.Start(ctx.Done())
	c.dynFactory.Start(ctx.Done())
	c.log.Info("waiting for informer caches")
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("kube: informer caches did not sync: are the security.ambit.dev CRDs installed (deploy/manifests), and can the control plane list and watch namespaces, pods, services, endpointslices, nodes, authorizationpolicies, peerauthentications and gateways (RBAC)?")
	}
	if err := c.resyncAll(); err != nil {
		return err
	}
	close(c.synced)
	c.log.Info("model synced", "addresses", c.numPublished())

	var wg sync.WaitGroup
	wg.Go(func() {
		for c.processNext() {
		}
	})
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// startServed publishes inf in *dst (under c.mu: the reconcilers read it
// to know the resource is served) and starts its factory; it returns the
// informer's HasSynced.
func (c *Controller) startServed(ctx context.Context, dst *cache.SharedIndexInformer, inf cache.SharedIndexInformer, factory dynamicinformer.DynamicSharedInformerFactory) cache.InformerSynced {
	c.mu.Lock()
	*dst = inf
	c.mu.Unlock()
	factory.Start(ctx.Done())
	return inf.HasSynced
}

func (c *Controller) numPublished() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.published)
}

// resyncAll derives every resource from the caches and publishes them in
// one batch.
func (c *Controller) resyncAll() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Policies first: the workloads derived below list the selector
	// policies that apply to them, and ztunnels get the Authorization
	// resources before the workloads that name them.
	if err := c.loadPolicies(false); err != nil {
		return err
	}
	if err := c.publishAuthorizations(); err != nil {
		return err
	}
	c.loadWaypoints()
	b := c.newBatch()
	svcs, err := c.svcLister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("kube: listing services: %w", err)
	}
	for _, s := range svcs {
		c.reconcileService(model.ObjectRef{Namespace: s.Namespace, Name: s.Name}, b)
	}
	// Policies with targetRefs once the Services' waypoints are known (a
	// waypoint-bound target must never look unbound: that would make
	// ztunnel deny its pods).
	if err := c.loadPolicies(true); err != nil {
		return err
	}
	c.policiesLoaded = true
	if err := c.publishAuthorizations(); err != nil {
		return err
	}
	pods, err := c.podLister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("kube: listing pods: %w", err)
	}
	for _, p := range pods {
		c.reconcilePod(model.ObjectRef{Namespace: p.Namespace, Name: p.Name}, b)
	}
	if err := c.loadRoutes(b); err != nil {
		return err
	}
	c.resolveBackendPolicies(b)
	c.markAllWaypoints(b)
	if err := c.publish(b); err != nil {
		return err
	}
	return c.syncWaypoints(b)
}

func (c *Controller) processNext() bool {
	k, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(k)
	err := c.reconcile(k)
	if err == nil {
		c.queue.Forget(k)
		c.metrics.reconciles.WithLabelValues(k.kind.String(), "success").Inc()
		return true
	}
	c.metrics.reconciles.WithLabelValues(k.kind.String(), "error").Inc()
	c.log.Error("reconcile failed; retrying", "kind", k.kind.String(), "namespace", k.namespace, "name", k.name, "error", err)
	c.queue.AddRateLimited(k)
	return true
}

// reconcile re-derives what depends on the object k and publishes the
// resources that changed. On error, the pods whose resources could not be
// published are queued again too.
func (c *Controller) reconcile(k key) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.newBatch()
	switch k.kind {
	case kindPod:
		c.reconcilePod(model.ObjectRef{Namespace: k.namespace, Name: k.name}, b)
	case kindService:
		c.reconcileService(model.ObjectRef{Namespace: k.namespace, Name: k.name}, b)
	case kindNamespace:
		// Its labels decide enrolment (pods) and waypoints (pods and
		// Services).
		pods, svcs := map[model.ObjectRef]bool{}, map[model.ObjectRef]bool{}
		if err := c.namespaceObjects(k.name, pods, svcs); err != nil {
			return err
		}
		for svc := range svcs {
			c.reconcileService(svc, b)
		}
		for p := range pods {
			c.reconcilePod(p, b)
		}
	case kindGateway:
		if err := c.reconcileGateway(model.ObjectRef{Namespace: k.namespace, Name: k.name}, b); err != nil {
			return err
		}
	case kindHTTPRoute:
		if err := c.reconcileRoute(httproute.Ref{Namespace: k.namespace, Name: k.name}, b); err != nil {
			return err
		}
	case kindGRPCRoute:
		if err := c.reconcileRoute(httproute.Ref{Kind: httproute.KindGRPCRoute, Namespace: k.namespace, Name: k.name}, b); err != nil {
			return err
		}
	case kindHTTPFault:
		if err := c.reconcileHTTPFault(httproute.FaultRef{Namespace: k.namespace, Name: k.name}, b); err != nil {
			return err
		}
	case kindAuthorizationPolicy, kindPeerAuthentication:
		if err := c.reconcilePolicy(policy.Ref{Kind: policyKind(k.kind), Namespace: k.namespace, Name: k.name}, b); err != nil {
			return err
		}
	case kindBackendPolicy:
		// Resolved below: policies compete for ports, so all together.
	case kindNode:
		objs, err := c.pods.GetIndexer().ByIndex(podsByNode, k.name)
		if err != nil {
			return fmt.Errorf("kube: listing pods of node %s: %w", k.name, err)
		}
		for _, o := range objs {
			if p, ok := o.(*corev1.Pod); ok {
				c.reconcilePod(model.ObjectRef{Namespace: p.Namespace, Name: p.Name}, b)
			}
		}
	}
	switch k.kind {
	case kindBackendPolicy, kindService, kindNamespace, kindGateway:
		// A policy, or a Service's ports or waypoint binding, changed.
		c.resolveBackendPolicies(b)
	}
	if err := c.publish(b); err != nil {
		for _, ref := range b.pods {
			c.queue.AddRateLimited(key{kind: kindPod, namespace: ref.Namespace, name: ref.Name})
		}
		return err
	}
	return c.syncWaypoints(b)
}

// batch collects the resources one reconcile changed.
type batch struct {
	updated map[string]*workloadv1alpha1.Address
	removed map[string]bool
	// pods whose resource is in the batch, to retry them if publishing fails.
	pods []model.ObjectRef
	// waypoints whose configuration input may have changed.
	waypoints map[model.ObjectRef]bool
}

func (c *Controller) newBatch() *batch {
	return &batch{updated: map[string]*workloadv1alpha1.Address{}, removed: map[string]bool{}}
}

// set puts a in the batch unless it equals what was published.
func (c *Controller) set(b *batch, name string, a *workloadv1alpha1.Address) {
	delete(b.removed, name)
	if old, ok := c.published[name]; ok && proto.Equal(old, a) {
		delete(b.updated, name)
		return
	}
	b.updated[name] = a
}

// remove puts the removal of name in the batch if it was published.
func (c *Controller) remove(b *batch, name string) {
	delete(b.updated, name)
	if _, ok := c.published[name]; ok {
		b.removed[name] = true
	}
}

// publish hands the batch to the sink and, if that worked, records it as
// published.
func (c *Controller) publish(b *batch) error {
	if len(b.updated) == 0 && len(b.removed) == 0 {
		return nil
	}
	removed := slices.Sorted(maps.Keys(b.removed))
	start := time.Now()
	if err := c.sink.UpdateAddresses(b.updated, removed); err != nil {
		return fmt.Errorf("kube: publishing %d updated and %d removed addresses: %w", len(b.updated), len(removed), err)
	}
	for name, a := range b.updated {
		if _, ok := c.published[name]; !ok {
			c.metrics.addresses.WithLabelValues(addressKind(a)).Inc()
		}
		c.published[name] = a
	}
	for _, name := range removed {
		c.metrics.addresses.WithLabelValues(addressKind(c.published[name])).Dec()
		delete(c.published, name)
	}
	c.log.Debug("published addresses", "updated", len(b.updated), "removed", len(removed), "took", time.Since(start))
	return nil
}

func addressKind(a *workloadv1alpha1.Address) string {
	if a.GetWorkload() != nil {
		return "workload"
	}
	return "service"
}

// reconcilePod re-derives the Workload of pod ref. Caller holds c.mu.
func (c *Controller) reconcilePod(ref model.ObjectRef, b *batch) {
	old := c.podUID[ref]
	pod, err := c.podLister.Pods(ref.Namespace).Get(ref.Name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			utilruntime.HandleError(err)
		}
		pod = nil
	}
	c.markPodWaypoints(ref, pod, b)
	var w model.Workload
	ok := false
	if pod != nil {
		mp := toPod(pod)
		var ns *corev1.Namespace
		if n, err := c.nsLister.Get(ref.Namespace); err == nil {
			ns = n
		}
		nodeExists := false
		if mp.NodeName != "" {
			_, err := c.nodeLister.Get(mp.NodeName)
			nodeExists = err == nil
		}
		mns := toNamespace(ns)
		w, ok, _ = model.DeriveWorkload(c.cfg, mns, mp, c.podServices[ref], nodeExists)
		if ok {
			w.AuthorizationPolicies = c.policies.ForWorkload(mp.Namespace, mp.Labels)
			wb := model.WorkloadWaypoint(mns, mp, c.waypoints, c.domain)
			w = model.WaypointWorkload(w, mp, c.waypoints, wb)
			if old != "" && old != w.UID {
				c.noteBinding(old, model.TrafficWorkload, nil)
			}
			c.noteBinding(w.UID, model.TrafficWorkload, &wb)
		}
	}
	if !ok {
		if old != "" {
			c.noteBinding(old, model.TrafficWorkload, nil)
			c.remove(b, old)
			delete(c.podUID, ref)
			b.pods = append(b.pods, ref)
		}
		return
	}
	if old != "" && old != w.UID {
		c.remove(b, old) // the pod was recreated under the same name
	}
	c.podUID[ref] = w.UID
	c.set(b, w.UID, model.WorkloadAddress(w))
	b.pods = append(b.pods, ref)
}

// reconcileService re-derives the Service ref and its membership, and the
// Workloads whose membership changed. Caller holds c.mu.
func (c *Controller) reconcileService(ref model.ObjectRef, b *batch) {
	name := workloadv1alpha1.ServiceResourceName(ref.Namespace, model.Hostname(ref.Name, ref.Namespace, c.domain))
	svc, err := c.svcLister.Services(ref.Namespace).Get(ref.Name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			utilruntime.HandleError(err)
		}
		svc = nil
	}
	var members map[model.ObjectRef][]model.PortMapping
	if svc == nil {
		c.noteBinding(name, model.TrafficService, nil)
		c.bindService(ref, name, model.ObjectRef{}, b)
		c.remove(b, name)
	} else if ms := toService(svc, c.domain); !ms.Published() {
		c.noteBinding(name, model.TrafficService, nil)
		c.bindService(ref, name, model.ObjectRef{}, b)
		c.remove(b, name)
	} else {
		var ns *corev1.Namespace
		if n, err := c.nsLister.Get(ref.Namespace); err == nil {
			ns = n
		}
		sb := model.ServiceWaypoint(toNamespace(ns), ms, c.waypoints, c.domain)
		ms.Waypoint = sb.Waypoint
		c.noteBinding(name, model.TrafficService, &sb)
		var wp model.ObjectRef
		if sb.Waypoint != nil {
			wp = sb.Waypoint.Gateway
		}
		c.bindService(ref, name, wp, b)
		objs, err := c.slices.GetIndexer().ByIndex(slicesByService, ref.String())
		if err != nil {
			utilruntime.HandleError(err)
		}
		var sl []model.EndpointSlice
		for _, o := range objs {
			if s, ok := o.(*discoveryv1.EndpointSlice); ok {
				sl = append(sl, toEndpointSlice(s))
			}
		}
		members = model.ServiceMembers(ms, sl)
		c.set(b, name, model.ServiceAddress(ms))
	}

	old := c.svcMembers[ref]
	for pod := range mergeKeys(old, members) {
		nw, inNew := members[pod]
		ow, inOld := old[pod]
		if inNew == inOld && slices.Equal(nw, ow) {
			continue
		}
		ps := c.podServices[pod]
		if inNew {
			if ps == nil {
				ps = map[string][]model.PortMapping{}
				c.podServices[pod] = ps
			}
			ps[name] = nw
		} else {
			delete(ps, name)
			if len(ps) == 0 {
				delete(c.podServices, pod)
			}
		}
		c.reconcilePod(pod, b)
	}
	if len(members) == 0 {
		delete(c.svcMembers, ref)
	} else {
		c.svcMembers[ref] = members
	}
	c.serviceRoutesChanged(ref, b)
	state := ""
	if svc != nil {
		state = fmt.Sprintf("selector=%v waypoint=%s", svc.Spec.Selector, c.svcWaypoint[ref])
	}
	c.noteTargetState(ref, state, b)
}

func mergeKeys[V any](a, b map[model.ObjectRef]V) map[model.ObjectRef]struct{} {
	out := make(map[model.ObjectRef]struct{}, len(a)+len(b))
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}
