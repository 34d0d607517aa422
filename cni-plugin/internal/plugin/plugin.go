// Package plugin is the ambit-cni chained CNI plugin: on ADD it hands the
// new pod to the node agent (cniapi) and returns the previous plugin's
// result unchanged once the agent says the pod is captured or not enrolled.
//
// When the agent cannot be reached, the plugin decides alone with the
// enrolment rule (enrol.Decide) and the Kubernetes API, read by running the
// separate program ambit-cni-lookup (ExecLookup): a pod outside the
// mesh starts, a pod in the mesh does not (kubelet retries), and a pod the
// plugin cannot decide about does not either (fail closed): a mesh pod must
// never start with its traffic uncaptured.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"ambit.dev/cni-plugin/internal/cniapi"
	"ambit.dev/pkg/enrol"
)

// DelTimeout bounds the agent call of DEL, which is best effort;
// LookupTimeout bounds the Kubernetes lookup (the ambit-cni-lookup run)
// made when the agent is unreachable.
const (
	DelTimeout    = 5 * time.Second
	LookupTimeout = 10 * time.Second
)

// ErrNotChained is the message of ADD and CHECK without a prevResult.
const ErrNotChained = "ambit-cni must be chained after a primary CNI plugin (no prevResult)"

// Agent is the node agent as the plugin calls it; *cniapi.Client is one.
type Agent interface {
	Add(ctx context.Context, req cniapi.PodRequest) (cniapi.PodResponse, error)
	Del(ctx context.Context, req cniapi.PodRequest) (cniapi.PodResponse, error)
	Check(ctx context.Context, req cniapi.PodRequest) (cniapi.PodResponse, error)
}

// PodLookup reads from the Kubernetes API what enrol.Decide needs about a
// pod and its namespace. ambit-cni-lookup uses it (internal/plugin/kube);
// the plugin itself runs that program (ExecLookup), only when the agent is
// unreachable.
type PodLookup interface {
	Lookup(ctx context.Context, namespace, name string) (enrol.Namespace, enrol.Pod, error)
}

// Options are the plugin's dependencies.
type Options struct {
	// Stdout receives the result of ADD; Stderr the logs.
	Stdout, Stderr io.Writer
	// NewAgent returns the agent client; nil means cniapi.NewClient.
	NewAgent func(socketPath string, timeout time.Duration) Agent
	// NewDecider builds what decides about a pod when the agent is
	// unreachable; nil means NewExecLookup (run ambit-cni-lookup).
	NewDecider func(LookupSource) (Decider, error)
	// Executable returns the running plugin binary, next to which
	// ambit-cni-lookup is looked for; nil means os.Executable.
	Executable func() (string, error)
}

// Plugin runs the CNI commands.
type Plugin struct {
	opts Options
}

// New returns the plugin.
func New(opts Options) *Plugin {
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	if opts.NewAgent == nil {
		opts.NewAgent = func(socketPath string, timeout time.Duration) Agent {
			return cniapi.NewClient(socketPath, timeout)
		}
	}
	if opts.NewDecider == nil {
		opts.NewDecider = func(src LookupSource) (Decider, error) { return NewExecLookup(src) }
	}
	if opts.Executable == nil {
		opts.Executable = os.Executable
	}
	return &Plugin{opts: opts}
}

// Funcs returns the commands for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

func (p *Plugin) logger(level slog.Level, cmd string, args *skel.CmdArgs) *slog.Logger {
	return slog.New(slog.NewTextHandler(p.opts.Stderr, &slog.HandlerOptions{Level: level})).
		With("plugin", PluginType, "cmd", cmd, "containerID", args.ContainerID)
}

// call is what ADD, CHECK and DEL share: the parsed configuration and pod.
type call struct {
	conf Config
	ref  PodRef
	// cniPath is CNI_PATH.
	cniPath string
	// ask is false when the pod is not a Kubernetes pod or its namespace
	// is excluded: it passes through without asking anyone.
	ask bool
	log *slog.Logger
}

func (p *Plugin) prepare(cmd string, args *skel.CmdArgs, needPrev bool) (call, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return call{}, err
	}
	log := p.logger(conf.LogLevel, cmd, args)
	if needPrev && conf.Net.PrevResult == nil {
		return call{}, types.NewError(types.ErrInvalidNetworkConfig, ErrNotChained, "")
	}
	ref, ok, err := ParsePodRef(args.Args)
	if err != nil {
		return call{}, err
	}
	c := call{conf: conf, ref: ref, cniPath: args.Path, log: log}
	switch {
	case !ok:
		log.Debug("not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS): passing through")
	case slices.Contains(conf.ExcludeNamespaces, ref.Namespace):
		log.Debug("namespace is in excludeNamespaces: passing through", "pod", ref.Namespace+"/"+ref.Name)
	default:
		c.ask = true
		c.log = log.With("pod", ref.Namespace+"/"+ref.Name)
	}
	return c, nil
}

func (c call) request(args *skel.CmdArgs) cniapi.PodRequest {
	return cniapi.PodRequest{
		ContainerID:  args.ContainerID,
		Netns:        args.Netns,
		IfName:       args.IfName,
		PodNamespace: c.ref.Namespace,
		PodName:      c.ref.Name,
		PodUID:       c.ref.UID,
		IPs:          PodIPs(c.conf.Result),
	}
}

// Add hands the pod to the agent and prints the previous result unchanged.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	c, err := p.prepare("ADD", args, true)
	if err != nil {
		return err
	}
	if c.ask {
		ctx, cancel := context.WithTimeout(context.Background(), c.conf.AgentTimeout)
		defer cancel()
		req := c.request(args)
		resp, err := p.opts.NewAgent(c.conf.AgentSocket, c.conf.AgentTimeout).Add(ctx, req)
		switch {
		case errors.Is(err, cniapi.ErrUnreachable):
			if err := p.withoutAgent(c, err); err != nil {
				return err
			}
		case err != nil:
			return types.NewError(types.ErrInternal, fmt.Sprintf("ambit-cni: pod %s/%s cannot start: %v", c.ref.Namespace, c.ref.Name, err), "")
		default:
			c.log.Info("node agent answered", "enrolled", resp.Enrolled, "reason", resp.Reason, "ips", req.IPs)
		}
	}
	out, err := c.conf.Net.PrevResult.GetAsVersion(c.conf.Net.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("ambit-cni: cannot print prevResult at cniVersion %q: %v", c.conf.Net.CNIVersion, err), "")
	}
	return out.PrintTo(p.opts.Stdout)
}

// Del tells the agent the sandbox is going away, best effort: DEL never
// fails because of ambit-cni, or the runtime could not clean the sandbox
// up while the agent is down (the agent also notices deleted pods from the
// Kubernetes API).
func (p *Plugin) Del(args *skel.CmdArgs) error {
	c, err := p.prepare("DEL", args, false)
	if err != nil {
		p.logger(slog.LevelInfo, "DEL", args).Warn("ignoring a bad configuration on DEL", "error", err)
		return nil
	}
	if !c.ask {
		return nil
	}
	timeout := min(c.conf.AgentTimeout, DelTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := p.opts.NewAgent(c.conf.AgentSocket, timeout).Del(ctx, c.request(args)); err != nil {
		c.log.Warn("could not tell the node agent about DEL (ignored)", "error", err)
		return nil
	}
	c.log.Debug("node agent told about DEL")
	return nil
}

// Check asks the agent whether an enrolled pod is still captured.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	c, err := p.prepare("CHECK", args, true)
	if err != nil {
		return err
	}
	if !c.ask {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.conf.AgentTimeout)
	defer cancel()
	resp, err := p.opts.NewAgent(c.conf.AgentSocket, c.conf.AgentTimeout).Check(ctx, c.request(args))
	switch {
	case errors.Is(err, cniapi.ErrUnreachable):
		return p.withoutAgent(c, err)
	case err != nil:
		return types.NewError(types.ErrInternal, fmt.Sprintf("ambit-cni: CHECK of pod %s/%s failed: %v", c.ref.Namespace, c.ref.Name, err), "")
	}
	c.log.Debug("node agent answered", "enrolled", resp.Enrolled, "reason", resp.Reason)
	return nil
}

// Status always succeeds. A runtime that gets an error from STATUS marks the
// node's network NotReady, which would stop every pod from being scheduled
// there, mesh or not; a broken agent only concerns mesh pods, whose ADD
// already fails closed.
func (p *Plugin) Status(*skel.CmdArgs) error { return nil }

// GC always succeeds: ambit-cni keeps no state on the node; the agent
// forgets deleted pods from the Kubernetes API.
func (p *Plugin) GC(*skel.CmdArgs) error { return nil }

// withoutAgent decides whether the pod may go on when the agent is
// unreachable (agentErr): nil when the pod is not in the mesh, an error
// when it is or when that cannot be known.
func (p *Plugin) withoutAgent(c call, agentErr error) error {
	ctx, cancel := context.WithTimeout(context.Background(), LookupTimeout)
	defer cancel()
	var decider Decider
	var err error
	if c.conf.Kubeconfig == "" {
		err = errors.New(`no "kubeconfig" in the ambit-cni network configuration`)
	} else {
		src := LookupSource{Kubeconfig: c.conf.Kubeconfig, Binary: c.conf.LookupBinary, CNIPath: c.cniPath}
		if exe, exeErr := p.opts.Executable(); exeErr == nil {
			src.Executable = exe
		}
		decider, err = p.opts.NewDecider(src)
	}
	var enrolled bool
	var reason string
	if err == nil {
		enrolled, reason, err = decider.Decide(ctx, c.ref)
	}
	if err != nil {
		hint := fmt.Sprintf("that the API server is reachable from the node with the kubeconfig %s", c.conf.Kubeconfig)
		switch {
		case errors.Is(err, ErrPodNotFound):
			hint = "that the pod still exists (the runtime may be setting up a pod already deleted)"
		case c.conf.Kubeconfig == "":
			hint = `the "kubeconfig" of the ambit-cni entry in the node's CNI configuration (ambit-node-agent's installer sets it)`
		}
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf(
			"ambit-cni: pod %s/%s cannot start yet: %v, and without it ambit-cni cannot tell whether the pod is in the mesh: %v; "+
				"check that the ambit-node-agent pod runs on this node, and %s",
			c.ref.Namespace, c.ref.Name, agentErr, err, hint), "")
	}
	if enrolled {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf(
			"ambit-cni: pod %s/%s is in the mesh (%s) but %v, so the pod cannot start yet (kubelet retries): "+
				"check the ambit-node-agent pod on this node",
			c.ref.Namespace, c.ref.Name, reason, agentErr), "")
	}
	c.log.Info("node agent unreachable; pod is not in the mesh: passing through", "reason", reason, "agentError", agentErr)
	return nil
}

// DecideWithoutAgent applies the enrolment rule to the pod read with
// lookup. lookupErr is the error building lookup, if any; every error means
// the pod's enrolment is unknown. ambit-cni-lookup runs it.
func DecideWithoutAgent(ctx context.Context, lookup PodLookup, lookupErr error, ref PodRef) (enrolled bool, reason string, err error) {
	if lookupErr != nil {
		return false, "", lookupErr
	}
	ns, pod, err := lookup.Lookup(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return false, "", err
	}
	enrolled, reason = enrol.Decide(ns, pod)
	return enrolled, reason, nil
}
