// Package agent is the node agent's core: it decides which pods on its node
// are in the mesh (enrol.Decide), captures them (their netns held open, the
// redirection rules installed inside it, the netns handed to ztunnel over
// ZDS, the pod annotated ambit.dev/redirection) and releases them.
//
// Two paths lead to a capture, and both end in the same code:
//
//   - the controller: shared informers of this node's Pods (field
//     selector spec.nodeName) and of all Namespaces feed a workqueue keyed
//     by pod; reconcile is level-based (from the caches), decided by the
//     pure Plan and WantAnnotation; pods already running when their
//     namespace is labelled (or when the agent restarts) are found by their
//     IPs among the node's network namespaces;
//   - the CNI plugin: CNIAdd captures a new sandbox from the netns path the
//     runtime gave the plugin, and answers only once ztunnel acked it.
//
// Restart safety: at start, before ztunnel may replay, every enrolled
// running pod is recorded as a Keep, so ztunnel drops nothing; reconcile
// then re-finds each netns, re-applies the rules (idempotent) and sends the
// Add. On shutdown nothing is removed and ztunnel is told nothing.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"ambit.dev/cni-plugin/internal/zdsserver"
	"ambit.dev/pkg/redirect"
)

// Rules installs the redirection rules in a netns; *redirect.Installer is
// one.
type Rules interface {
	Apply(ctx context.Context, netnsPath string, cfg redirect.Config) error
	Check(ctx context.Context, netnsPath string, cfg redirect.Config) (redirect.Status, error)
	Remove(ctx context.Context, netnsPath string, cfg redirect.Config) error
}

// Namespaces finds pods' network namespaces; *netns.Scanner is one.
type Namespaces interface {
	// Find opens the netns holding ips (errors wrap netns.ErrNotFound or
	// netns.ErrAmbiguous).
	Find(ips []netip.Addr) (*os.File, error)
	// Gateways returns the default gateways inside the netns.
	Gateways(netns *os.File) ([]netip.Addr, error)
}

// Ztunnel hands netns to the connected ztunnels; *zdsserver.Server is one.
type Ztunnel interface {
	Add(ctx context.Context, w zdsserver.Workload, netns *os.File) error
	Keep(w zdsserver.Workload)
	Del(uid string)
	Has(uid string) bool
	Acked(uid string) bool
	WaitLive(ctx context.Context) error
	SetReady()
}

// Config configures the Agent.
type Config struct {
	// NodeName is this node (required).
	NodeName string
	// Backend is the iptables backend of the rules.
	Backend redirect.Backend
	// CNIAddTimeout bounds CNIAdd of an enrolled pod (default 20s).
	CNIAddTimeout time.Duration
	// ZtunnelTimeout bounds reconcile's wait for ztunnel's ack of one pod
	// (default 10s).
	ZtunnelTimeout time.Duration
	// Workers is the number of reconcile workers (default 4).
	Workers int
	// Registerer, if set, receives the agent's metrics.
	Registerer prometheus.Registerer
}

// Agent captures this node's enrolled pods. Build it with New; Run runs the
// controller; CNIAdd, CNIDel and CNICheck serve the CNI plugin (also before
// Run synced: they read the API server directly then).
type Agent struct {
	cfg     Config
	log     *slog.Logger
	client  kubernetes.Interface
	rules   Rules
	netns   Namespaces
	zt      Ztunnel
	metrics *metrics

	factory   informers.SharedInformerFactory
	nsFactory informers.SharedInformerFactory
	pods      cache.SharedIndexInformer
	nss       cache.SharedIndexInformer
	podLister corelisters.PodLister
	nsLister  corelisters.NamespaceLister

	queue   atomic.Pointer[workqueue.TypedRateLimitingInterface[string]]
	started atomic.Bool
	synced  chan struct{}

	locks keyedMutex
	mu    sync.Mutex
	// records are the pods whose netns the agent holds, by uid.
	records map[string]*record
	// deleted are the IPs of sandboxes a CNI DEL removed, by pod uid: the
	// informer may still show the pod running with those IPs for a moment
	// (a finishing pod), and reconcile must not look for a netns that is
	// gone. A CNI ADD of a new sandbox, or new IPs, clear it.
	deleted map[string]deletedSandbox
}

// deletedSandbox is the pod (namespace/name) and IPs of a sandbox a CNI
// DEL removed.
type deletedSandbox struct {
	key string
	ips []netip.Addr
}

// record is one captured pod.
type record struct {
	pod Pod
	// netns is the agent's descriptor of the pod's netns.
	netns *os.File
	// cfg is what the rules were (or are to be) applied with; Remove and
	// Check use the same.
	cfg redirect.Config
	// applied: the rules were applied since the netns was opened.
	applied bool
	// containerID is the sandbox of a CNI ADD capture ("" when found by
	// the /proc scan).
	containerID string
	// counted: the capture was counted in the metrics.
	counted bool
}

// Pod is the part of a pod the capture needs.
type Pod struct {
	UID, Namespace, Name, ServiceAccount string
	IPs                                  []netip.Addr
}

func (p Pod) workload() zdsserver.Workload {
	return zdsserver.Workload{UID: p.UID, Name: p.Name, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount}
}

// String is "namespace/name".
func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// New builds an Agent. Nothing is started until Run.
func New(client kubernetes.Interface, rules Rules, ns Namespaces, zt Ztunnel, cfg Config, log *slog.Logger) (*Agent, error) {
	if client == nil || rules == nil || ns == nil || zt == nil || log == nil {
		return nil, errors.New("agent: a Kubernetes client, rules, namespaces, ztunnel and a logger are required")
	}
	if cfg.NodeName == "" {
		return nil, errors.New("agent: the node name is required")
	}
	if cfg.CNIAddTimeout <= 0 {
		cfg.CNIAddTimeout = 20 * time.Second
	}
	if cfg.ZtunnelTimeout <= 0 {
		cfg.ZtunnelTimeout = 10 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if _, _, err := cfg.Backend.Binaries(redirect.IPv4); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, log: log, client: client, rules: rules, netns: ns, zt: zt, metrics: m,
		synced:  make(chan struct{}),
		records: map[string]*record{},
		deleted: map[string]deletedSandbox{},
		locks:   keyedMutex{m: map[string]*keyedEntry{}},
	}
	a.factory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTransform(trim),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	a.nsFactory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(trim))
	a.pods = a.factory.Core().V1().Pods().Informer()
	a.podLister = a.factory.Core().V1().Pods().Lister()
	a.nss = a.nsFactory.Core().V1().Namespaces().Informer()
	a.nsLister = a.nsFactory.Core().V1().Namespaces().Lister()
	if _, err := a.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: a.enqueuePod,
		UpdateFunc: func(o, n any) {
			op, ok1 := o.(*corev1.Pod)
			np, ok2 := n.(*corev1.Pod)
			if ok1 && ok2 && !podChanged(op, np) {
				return
			}
			a.enqueuePod(n)
		},
		DeleteFunc: a.enqueuePod,
	}); err != nil {
		return nil, fmt.Errorf("agent: pod event handler: %w", err)
	}
	if _, err := a.nss.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			if !initial {
				a.enqueueNamespace(obj)
			}
		},
		UpdateFunc: func(o, n any) {
			on, ok1 := o.(*corev1.Namespace)
			nn, ok2 := n.(*corev1.Namespace)
			if ok1 && ok2 && on.Labels[labelKey] == nn.Labels[labelKey] {
				return
			}
			a.enqueueNamespace(n)
		},
	}); err != nil {
		return nil, fmt.Errorf("agent: namespace event handler: %w", err)
	}
	return a, nil
}

// Synced is closed once the caches synced and every enrolled running pod
// was recorded for ztunnel (so ZDS replays are complete).
func (a *Agent) Synced() <-chan struct{} { return a.synced }

// HasSynced reports whether Synced is closed.
func (a *Agent) HasSynced() bool {
	select {
	case <-a.synced:
		return true
	default:
		return false
	}
}

// Run starts the informers, waits for their caches, records every enrolled
// running pod for ztunnel (Keep) and lets ZDS replay, then reconciles pods
// until ctx ends. It returns when every goroutine it started has stopped.
// It removes no rule and tells ztunnel nothing on the way out: a restarted
// agent picks every pod up again.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "ambit-node-agent"})
	a.queue.Store(&q)
	ctx, cancel := context.WithCancel(ctx)
	defer a.closeAll()
	defer a.nsFactory.Shutdown()
	defer a.factory.Shutdown()
	defer cancel()
	defer q.ShutDown()

	a.factory.Start(ctx.Done())
	a.nsFactory.Start(ctx.Done())
	a.log.Info("waiting for informer caches", "node", a.cfg.NodeName)
	if !cache.WaitForCacheSync(ctx.Done(), a.pods.HasSynced, a.nss.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("agent: informer caches did not sync: can the node agent list and watch pods and namespaces (RBAC)?")
	}
	kept := a.prime()
	a.zt.SetReady()
	close(a.synced)
	a.log.Info("synced; ztunnel may replay", "kept", kept)
	a.EnqueueAll()

	var wg sync.WaitGroup
	for range a.cfg.Workers {
		wg.Go(func() {
			for a.processNext(ctx, q) {
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
	return nil
}

// closeAll closes every held netns, without touching rules or ztunnel.
func (a *Agent) closeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, r := range a.records {
		r.netns.Close()
		delete(a.records, uid)
	}
	a.metrics.captured.Set(0)
}

// Captured returns the uids of the pods whose netns the agent holds.
func (a *Agent) Captured() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.records))
	for uid := range a.records {
		out = append(out, uid)
	}
	return out
}

func (a *Agent) record(uid string) *record {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.records[uid]
}

func (a *Agent) setRecord(r *record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.deleted, r.pod.UID)
	if old := a.records[r.pod.UID]; old != nil && old != r {
		old.netns.Close()
	}
	a.records[r.pod.UID] = r
	a.metrics.captured.Set(float64(len(a.records)))
}

// dropRecord closes and forgets uid's record, if any.
func (a *Agent) dropRecord(uid string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.records[uid]
	if ok {
		r.netns.Close()
		delete(a.records, uid)
		a.metrics.captured.Set(float64(len(a.records)))
	}
	return ok
}

// sandboxDeleted reports whether a CNI DEL removed the sandbox that held
// ips for pod uid.
func (a *Agent) sandboxDeleted(uid string, ips []netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	old, ok := a.deleted[uid]
	return ok && sameIPs(old.ips, ips)
}

// markDeleted records the deleted sandbox of pod p; with no IPs it clears
// uid's entry.
func (a *Agent) markDeleted(uid string, p Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(p.IPs) == 0 {
		delete(a.deleted, uid)
		return
	}
	a.deleted[uid] = deletedSandbox{key: p.String(), ips: p.IPs}
}

// deletedOf returns the uids with a deleted sandbox of pod namespace/name.
func (a *Agent) deletedOf(namespace, name string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for uid, d := range a.deleted {
		if d.key == namespace+"/"+name {
			out = append(out, uid)
		}
	}
	return out
}

// recordsOf returns the uids of records of pod namespace/name.
func (a *Agent) recordsOf(namespace, name string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for uid, r := range a.records {
		if r.pod.Namespace == namespace && r.pod.Name == name {
			out = append(out, uid)
		}
	}
	return out
}
