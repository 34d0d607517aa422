// Package kube is ambitctl's Kubernetes I/O: it loads the kubeconfig,
// applies and deletes objects with a dynamic client, port-forwards to
// ztunnel's admin port, and reads the objects the check, status, enroll
// and version commands judge with the pure functions of internal/check,
// internal/enrolment and internal/readiness. It is the only package that
// imports client-go.
package kube

import (
	"fmt"

	istio "istio.io/client-go/pkg/clientset/versioned"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// Flags select the cluster, like kubectl's flags of the same names.
type Flags struct {
	// Kubeconfig is a kubeconfig file; empty means $KUBECONFIG or
	// ~/.kube/config (client-go's usual rules).
	Kubeconfig string
	// Context is a context of the kubeconfig; empty means its current one.
	Context string
}

// Clients are the clients of one cluster.
type Clients struct {
	Config  *rest.Config
	Typed   kubernetes.Interface
	Dynamic dynamic.Interface
	// Mapper maps kinds to resources from the apiserver's discovery; it is
	// read lazily and Reset when a kind is not found (a CRD just created).
	Mapper meta.ResettableRESTMapper
	// Istio reads Istio's objects (migrate).
	Istio istio.Interface
}

// Connect builds the clients for f. It reads the kubeconfig but does not
// contact the apiserver.
func Connect(f Flags) (*Clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.Context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig (--kubeconfig %q, --context %q; kubectl config view shows what is there): %w", f.Kubeconfig, f.Context, err)
	}
	cfg.UserAgent = "ambitctl"
	// The defaults (5 qps, burst 10) make install wait on itself.
	cfg.QPS, cfg.Burst = 50, 100
	typed, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the Kubernetes client for %s: %w", cfg.Host, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the dynamic client for %s: %w", cfg.Host, err)
	}
	ic, err := istio.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the Istio client for %s: %w", cfg.Host, err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(typed.Discovery()))
	return &Clients{Config: cfg, Typed: typed, Dynamic: dyn, Mapper: mapper, Istio: ic}, nil
}
