// Command ambit-cni-lookup tells ambit-cni whether a pod is in the mesh,
// from the Kubernetes API, when the node agent is unreachable; ambit-cni
// runs it only then, so that its own start stays free of client-go (see
// internal/plugin/kube).
package main

import (
	"context"
	"os"

	"ambit.dev/cni-plugin/internal/plugin/kube"
)

func main() {
	os.Exit(kube.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
