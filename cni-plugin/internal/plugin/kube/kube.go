// Package kube reads, with client-go, the pod and namespace ambit-cni needs
// to apply the enrolment rule when the node agent is unreachable. It is the
// ambit-cni-lookup program (Run), which ambit-cni runs only then: client-go
// stays out of the plugin binary and off every CNI call's start-up.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"ambit.dev/cni-plugin/internal/plugin"
	"ambit.dev/pkg/enrol"
)

// RequestTimeout bounds each API request.
const RequestTimeout = 5 * time.Second

// PodLookup is a plugin.PodLookup on the Kubernetes API.
type PodLookup struct {
	client     kubernetes.Interface
	kubeconfig string
}

var _ plugin.PodLookup = (*PodLookup)(nil)

// NewPodLookup builds a lookup from the kubeconfig file at path.
func NewPodLookup(path string) (plugin.PodLookup, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("cannot use the kubeconfig %s: %w", path, err)
	}
	cfg.Timeout = RequestTimeout
	cfg.UserAgent = plugin.LookupBinary
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot build a Kubernetes client from the kubeconfig %s: %w", path, err)
	}
	return NewPodLookupFromClient(client, path), nil
}

// NewPodLookupFromClient returns a lookup using client; kubeconfig is only
// named in errors.
func NewPodLookupFromClient(client kubernetes.Interface, kubeconfig string) *PodLookup {
	return &PodLookup{client: client, kubeconfig: kubeconfig}
}

// Lookup gets the namespace and the pod. A namespace that does not exist
// counts as unlabelled; a pod that does not exist is an error (the runtime
// is creating its sandbox, so it must exist).
func (l *PodLookup) Lookup(ctx context.Context, namespace, name string) (enrol.Namespace, enrol.Pod, error) {
	var ns enrol.Namespace
	nsObj, err := l.client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return enrol.Namespace{}, enrol.Pod{}, fmt.Errorf("getting namespace %q from the API server with the kubeconfig %s: %w", namespace, l.kubeconfig, err)
	default:
		ns.Labels = nsObj.Labels
	}
	podObj, err := l.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return enrol.Namespace{}, enrol.Pod{}, fmt.Errorf("getting pod %s/%s from the API server with the kubeconfig %s: %w", namespace, name, l.kubeconfig, err)
	}
	return ns, EnrolPod(podObj), nil
}

// EnrolPod copies what enrol.Decide reads from a Pod.
func EnrolPod(pod *corev1.Pod) enrol.Pod {
	names := func(cs []corev1.Container) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.Name
		}
		return out
	}
	return enrol.Pod{
		Namespace:      pod.Namespace,
		Labels:         pod.Labels,
		Annotations:    pod.Annotations,
		HostNetwork:    pod.Spec.HostNetwork,
		Containers:     names(pod.Spec.Containers),
		InitContainers: names(pod.Spec.InitContainers),
	}
}

// DefaultTimeout bounds a whole ambit-cni-lookup run when --timeout is not
// given.
const DefaultTimeout = 8 * time.Second

// usageError is an error of the arguments or the kubeconfig.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Run is the ambit-cni-lookup program: it reads the pod named by args
// (--kubeconfig, --namespace, --name, --timeout) and its namespace from the
// API, applies the enrolment rule, prints one plugin.LookupResult JSON line
// on stdout and returns 0; or prints one error line on stderr and returns
// ExitCode of the error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	if err == nil {
		return 0
	}
	if !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "%s: %v\n", plugin.LookupBinary, err)
	}
	return ExitCode(err)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(plugin.LookupBinary, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s --kubeconfig PATH --namespace NS --name POD [--timeout D]\n\n"+
			"Tells ambit-cni whether a pod is in the Ambit mesh, from the Kubernetes API, when the node agent is unreachable.\n"+
			"Prints {\"enrolled\":bool,\"reason\":\"...\"} and exits 0, or exits %d (API unreachable or refused), %d (pod not found), %d (usage, kubeconfig).\n\n",
			plugin.LookupBinary, plugin.LookupExitAPI, plugin.LookupExitNotFound, plugin.LookupExitUsage)
		fs.PrintDefaults()
	}
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (required; ambit-node-agent writes it in the CNI conf dir)")
	namespace := fs.String("namespace", "", "pod namespace (required)")
	name := fs.String("name", "", "pod name (required)")
	timeout := fs.Duration("timeout", DefaultTimeout, "bound on the whole lookup")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected arguments %q", fs.Args())
	case *kubeconfig == "" || *namespace == "" || *name == "":
		return usagef("--kubeconfig, --namespace and --name are required")
	case *timeout <= 0:
		return usagef("--timeout %s must be positive", *timeout)
	}
	lookup, err := NewPodLookup(*kubeconfig)
	if err != nil {
		return usagef("%w (ambit-node-agent writes it when it installs ambit-cni)", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	enrolled, reason, err := plugin.DecideWithoutAgent(ctx, lookup, nil, plugin.PodRef{Namespace: *namespace, Name: *name})
	if err != nil {
		return err
	}
	if err := json.NewEncoder(stdout).Encode(plugin.LookupResult{Enrolled: enrolled, Reason: reason}); err != nil {
		return fmt.Errorf("writing the result: %w", err)
	}
	return nil
}

// ExitCode is the exit code of ambit-cni-lookup for err (nil: 0):
// plugin.LookupExitNotFound when the API says the pod does not exist,
// plugin.LookupExitUsage for bad arguments or kubeconfig, and
// plugin.LookupExitAPI for every other failure (unreachable, unauthorized,
// forbidden, timeout...): ambit-cni then cannot know, and fails closed.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.As(err, new(usageError)), errors.Is(err, flag.ErrHelp):
		return plugin.LookupExitUsage
	case apierrors.IsNotFound(err):
		return plugin.LookupExitNotFound
	default:
		return plugin.LookupExitAPI
	}
}
