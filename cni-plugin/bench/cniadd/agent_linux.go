package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"ambit.dev/cni-plugin/internal/agent"
	"ambit.dev/cni-plugin/internal/app"
	"ambit.dev/cni-plugin/internal/config"
	"ambit.dev/pkg/enrol"
	"ambit.dev/pkg/redirect"
)

// nodeName is the node the agent serves; every pod is scheduled there.
const nodeName = "bench-node"

// podRef names one pod of the fake cluster.
type podRef struct {
	namespace, name, uid string
}

// clusterObjects returns the namespaces (the enrolled one labelled
// ambient) and the pods, Pending on nodeName without IPs, as they are
// when the runtime sets their sandbox up.
func clusterObjects(enrolledNS string, otherNS []string, pods []podRef) []runtime.Object {
	var objs []runtime.Object
	objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: enrolledNS,
		Labels: map[string]string{enrol.LabelDataplaneMode: enrol.DataplaneModeAmbient}}})
	for _, ns := range otherNS {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	for _, p := range pods {
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.namespace, Name: p.name, UID: types.UID(p.uid)},
			Spec: corev1.PodSpec{
				NodeName:           nodeName,
				ServiceAccountName: "default",
				Containers:         []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
			},
			Status: corev1.PodStatus{Phase: corev1.PodPending},
		})
	}
	return objs
}

// apiCalls counts the requests the agent makes to the (fake) API server.
type apiCalls struct {
	gets, patches atomic.Int64
}

// count registers reactors that count pod and namespace GETs and PATCHes
// and let the fake clientset answer them.
func (c *apiCalls) count(client *fake.Clientset) {
	client.PrependReactor("get", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		c.gets.Add(1)
		return false, nil, nil
	})
	client.PrependReactor("patch", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		c.patches.Add(1)
		return false, nil, nil
	})
}

// timedRules is the real rule installer, with Apply timed.
type timedRules struct {
	in agent.Rules

	mu      sync.Mutex
	applies []time.Duration
	last    redirect.Config
	errs    int
}

func (r *timedRules) Apply(ctx context.Context, netnsPath string, cfg redirect.Config) error {
	start := time.Now()
	err := r.in.Apply(ctx, netnsPath, cfg)
	d := time.Since(start)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs++
		return err
	}
	r.applies = append(r.applies, d)
	r.last = cfg
	return nil
}

func (r *timedRules) Check(ctx context.Context, netnsPath string, cfg redirect.Config) (redirect.Status, error) {
	return r.in.Check(ctx, netnsPath, cfg)
}

func (r *timedRules) Remove(ctx context.Context, netnsPath string, cfg redirect.Config) error {
	return r.in.Remove(ctx, netnsPath, cfg)
}

// state returns the successful Apply times, the config of the last one and
// the number of failed ones.
func (r *timedRules) state() ([]time.Duration, redirect.Config, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.applies...), r.last, r.errs
}

// agentConfig is the node agent's configuration for the bench: sockets in
// dir, its HTTP servers on loopback ports of the netns it runs in, no CNI
// installation (the bench writes its own network configurations).
func agentConfig(dir string, backend redirect.Backend, level slog.Level) config.Config {
	return config.Config{
		NodeName:          nodeName,
		ZDSSocket:         filepath.Join(dir, "ztunnel.sock"),
		CNISocket:         filepath.Join(dir, "cni.sock"),
		CNIAddTimeout:     config.DefaultCNIAddTimeout,
		ZDSRequestTimeout: config.DefaultZDSRequestTimeout,
		IptablesBackend:   backend,
		MetricsAddr:       "127.0.0.1:0",
		ReadyAddr:         "127.0.0.1:0",
		LogLevel:          level,
		LogFormat:         "json",
	}
}

// waitReady polls a until it is ready (sockets listening, caches synced);
// done is closed when a's Run returned, with runErr's answer.
func waitReady(ctx context.Context, a *app.App, done <-chan struct{}, runErr func() error) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := a.Ready()
		if ok {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("node agent stopped before it was ready: %v", runErr())
		case <-ctx.Done():
			return fmt.Errorf("node agent not ready (%s): %w", why, ctx.Err())
		case <-tick.C:
		}
	}
}
