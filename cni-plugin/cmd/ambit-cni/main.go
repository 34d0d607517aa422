// Command ambit-cni is Ambit's chained CNI plugin: the container runtime
// runs it after the primary CNI plugin, and it hands each new pod to the
// node agent (see internal/plugin).
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"ambit.dev/cni-plugin/internal/plugin"
	"ambit.dev/cni-plugin/internal/plugin/kube"
)

func main() {
	p := plugin.New(plugin.Options{Stdout: os.Stdout, Stderr: os.Stderr, NewLookup: kube.NewPodLookup})
	skel.PluginMainFuncs(p.Funcs(), plugin.SupportedVersions, "ambit-cni")
}
