package plugin

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"ambit.dev/cni-plugin/internal/cniapi"
)

// PluginType is the plugin's "type" in a network configuration list, which
// is also the name of its binary in the CNI bin dir.
const PluginType = "ambit-cni"

// Defaults and bounds of the plugin's own configuration fields.
const (
	DefaultAgentTimeout = 30 * time.Second
	MinAgentTimeout     = time.Second
	MaxAgentTimeout     = 2 * time.Minute
)

// DefaultExcludeNamespaces are the namespaces whose pods are passed through
// without asking anyone when the configuration does not say otherwise: the
// node agent itself and the cluster's DNS and CNI run there, so they must
// start while the agent is not (yet) running.
var DefaultExcludeNamespaces = []string{"kube-system"}

// SupportedVersions are the CNI spec versions the plugin speaks. 0.3.x is
// kept because common primary CNIs (flannel, older calico) still write
// cniVersion 0.3.1 conflists, and a chained plugin that refuses the list's
// version would break every pod on the node. CHECK needs 0.4.0, STATUS and
// GC 1.1.0 (skel enforces both).
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Config is the configuration the runtime passes on the plugin's stdin: the
// standard network configuration and ambit-cni's own fields.
//
//	{
//	  "type": "ambit-cni",
//	  "agentSocket": "/var/run/ambit/cni.sock",  // node agent's Unix socket
//	  "agentTimeout": "30s",                     // Go duration, 1s..2m
//	  "kubeconfig": "/etc/cni/net.d/ZZZ-ambit-cni-kubeconfig", // used only when the agent is unreachable
//	  "lookupBinary": "/opt/cni/bin/ambit-cni-lookup", // default: next to ambit-cni, else in CNI_PATH
//	  "excludeNamespaces": ["kube-system"],      // passed through without asking anyone
//	  "logLevel": "info"                         // debug, info, warn, error
//	}
type Config struct {
	// Net is the standard part (cniVersion, name, prevResult...). Its
	// PrevResult is the previous plugin's result as it was given, nil when
	// there is none.
	Net types.PluginConf
	// Result is Net.PrevResult converted to the current result type, nil
	// when there is none.
	Result       *current.Result
	AgentSocket  string
	AgentTimeout time.Duration
	Kubeconfig   string
	// LookupBinary is the ambit-cni-lookup program; empty means the
	// default of FindLookupBinary.
	LookupBinary      string
	ExcludeNamespaces []string
	LogLevel          slog.Level
}

// rawConfig is the JSON form of Config; pointers tell absent fields (which
// get defaults) from empty ones.
type rawConfig struct {
	types.PluginConf
	AgentSocket       *string   `json:"agentSocket"`
	AgentTimeout      *string   `json:"agentTimeout"`
	Kubeconfig        string    `json:"kubeconfig"`
	LookupBinary      string    `json:"lookupBinary"`
	ExcludeNamespaces *[]string `json:"excludeNamespaces"`
	LogLevel          string    `json:"logLevel"`
}

// ParseConfig parses and validates the plugin's stdin. Its errors are CNI
// errors (*types.Error) that name the wrong field.
func ParseConfig(stdin []byte) (Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return Config{}, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("ambit-cni: the network configuration on stdin is not valid JSON for ambit-cni: %v", err), "")
	}
	conf := Config{
		Net:               raw.PluginConf,
		AgentSocket:       cniapi.DefaultSocketPath,
		AgentTimeout:      DefaultAgentTimeout,
		Kubeconfig:        raw.Kubeconfig,
		LookupBinary:      raw.LookupBinary,
		ExcludeNamespaces: slices.Clone(DefaultExcludeNamespaces),
		LogLevel:          slog.LevelInfo,
	}
	invalid := func(field, format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("ambit-cni: invalid %q in the network configuration: %s", field, fmt.Sprintf(format, args...)), "")
	}
	if raw.AgentSocket != nil {
		if !filepath.IsAbs(*raw.AgentSocket) {
			return Config{}, invalid("agentSocket", "%q is not an absolute path (default %s)", *raw.AgentSocket, cniapi.DefaultSocketPath)
		}
		conf.AgentSocket = *raw.AgentSocket
	}
	if raw.AgentTimeout != nil {
		d, err := time.ParseDuration(*raw.AgentTimeout)
		if err != nil {
			return Config{}, invalid("agentTimeout", "%q is not a Go duration such as \"30s\": %v", *raw.AgentTimeout, err)
		}
		if d < MinAgentTimeout || d > MaxAgentTimeout {
			return Config{}, invalid("agentTimeout", "%s is outside %s..%s", d, MinAgentTimeout, MaxAgentTimeout)
		}
		conf.AgentTimeout = d
	}
	if conf.Kubeconfig != "" && !filepath.IsAbs(conf.Kubeconfig) {
		return Config{}, invalid("kubeconfig", "%q is not an absolute path", conf.Kubeconfig)
	}
	if conf.LookupBinary != "" && !filepath.IsAbs(conf.LookupBinary) {
		return Config{}, invalid("lookupBinary", "%q is not an absolute path (default: %s next to ambit-cni)", conf.LookupBinary, LookupBinary)
	}
	if raw.ExcludeNamespaces != nil {
		for _, ns := range *raw.ExcludeNamespaces {
			if ns == "" {
				return Config{}, invalid("excludeNamespaces", "it contains an empty namespace name")
			}
		}
		conf.ExcludeNamespaces = *raw.ExcludeNamespaces
	}
	if raw.LogLevel != "" {
		if err := conf.LogLevel.UnmarshalText([]byte(raw.LogLevel)); err != nil {
			return Config{}, invalid("logLevel", "%q is not one of debug, info, warn, error", raw.LogLevel)
		}
	}
	if err := version.ParsePrevResult(&conf.Net); err != nil {
		return Config{}, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("ambit-cni: cannot parse \"prevResult\" (the previous plugin's result) at cniVersion %q: %v", conf.Net.CNIVersion, err), "")
	}
	if conf.Net.PrevResult != nil {
		res, err := current.NewResultFromResult(conf.Net.PrevResult)
		if err != nil {
			return Config{}, types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("ambit-cni: cannot convert \"prevResult\" (cniVersion %q) to CNI %s: %v", conf.Net.CNIVersion, current.ImplementedSpecVersion, err), "")
		}
		conf.Result = res
	}
	return conf, nil
}

// K8sArgs are the Kubernetes fields of CNI_ARGS that kubelet's runtime
// (containerd, CRI-O) passes.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

// PodRef names the pod a CNI call is about.
type PodRef struct {
	Namespace, Name, UID string
}

// ParsePodRef reads the pod from CNI_ARGS. ok is false when the call is not
// about a Kubernetes pod (no K8S_POD_NAMESPACE or K8S_POD_NAME).
func ParsePodRef(cniArgs string) (ref PodRef, ok bool, err error) {
	var args K8sArgs
	// Unknown keys are others' business, whatever IgnoreUnknown says.
	args.IgnoreUnknown = true
	if err := types.LoadArgs(cniArgs, &args); err != nil {
		return PodRef{}, false, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("ambit-cni: cannot parse CNI_ARGS %q (want K=V;K2=V2): %v", cniArgs, err), "")
	}
	ref = PodRef{
		Namespace: strings.TrimSpace(string(args.K8S_POD_NAMESPACE)),
		Name:      strings.TrimSpace(string(args.K8S_POD_NAME)),
		UID:       strings.TrimSpace(string(args.K8S_POD_UID)),
	}
	return ref, ref.Namespace != "" && ref.Name != "", nil
}

// PodIPs returns the addresses of the pod from the previous plugin's
// result: those on interfaces inside the container (the ones with a
// sandbox), or all of them when none is attributed to such an interface.
func PodIPs(res *current.Result) []string {
	if res == nil {
		return nil
	}
	var inPod, all []string
	for _, ip := range res.IPs {
		if ip == nil || ip.Address.IP == nil {
			continue
		}
		addr := ip.Address.IP.String()
		if slices.Contains(all, addr) {
			continue
		}
		all = append(all, addr)
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(res.Interfaces) && res.Interfaces[*ip.Interface].Sandbox != "" {
			inPod = append(inPod, addr)
		}
	}
	if len(inPod) > 0 {
		return inPod
	}
	return all
}
