package benchkit

import (
	"context"

	"ambit.dev/ztunnel/internal/testtopo"
)

// The topology of network namespaces the benchmarks run in; see the
// testtopo package for the address plan (nothing in the root netns).
type (
	Topology = testtopo.Topology
	Options  = testtopo.Options
	Node     = testtopo.Node
	Pod      = testtopo.Pod
	Process  = testtopo.Process
)

// NewTopology builds a topology (removing namespaces of earlier, killed
// runs first); Close removes it.
func NewTopology(ctx context.Context, o Options) (*Topology, error) { return testtopo.New(ctx, o) }
