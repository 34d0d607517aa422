// Command ambit-cni is Ambit's chained CNI plugin: the container runtime
// runs it after the primary CNI plugin, and it hands each new pod to the
// node agent (see internal/plugin). When the agent is unreachable it runs
// ambit-cni-lookup, which holds the Kubernetes client, so that this binary
// stays small and starts fast.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"ambit.dev/cni-plugin/internal/plugin"
)

func main() {
	p := plugin.New(plugin.Options{Stdout: os.Stdout, Stderr: os.Stderr})
	skel.PluginMainFuncs(p.Funcs(), plugin.SupportedVersions, plugin.PluginType)
}
