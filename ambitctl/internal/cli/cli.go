// Package cli is the ambitctl command tree (cobra). Each command parses its
// flags and hands over to the domain packages; the Kubernetes clients, the
// chart renderer and the terminal come from Env so tests can inject fakes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"ambit.dev/ambitctl/internal/components"
	"ambit.dev/ambitctl/internal/kube"
	"ambit.dev/ambitctl/internal/ztunneladmin"
)

// RenderFunc renders Ambit's Helm chart for namespace with values into a
// multi-document YAML stream (ambit.dev/deploy/charts.Render).
type RenderFunc func(namespace string, values map[string]any) ([]byte, error)

// Env is what the commands need from their surroundings.
type Env struct {
	Out, Err io.Writer
	// Connect builds the clients of the selected cluster.
	Connect func(kube.Flags) (*kube.Clients, error)
	// Render renders the chart (install, uninstall).
	Render RenderFunc
	// ReadFile reads -f values files.
	ReadFile func(string) ([]byte, error)
	// Getter reaches ztunnel's admin port; nil means a port-forward
	// through the apiserver.
	Getter func(*kube.Clients) ztunneladmin.Getter
	// Terminal says Out is a terminal (progress is redrawn in place).
	Terminal bool
	// Now is the clock of the ztunnel tables (default time.Now).
	Now func() time.Time
	// Version is ambitctl's version.
	Version string
}

// ErrChecksFailed is returned by check when a check failed; the failures
// are already printed.
var ErrChecksFailed = errors.New("some checks failed (see above)")

type globals struct {
	env       Env
	flags     kube.Flags
	namespace string
	clients   *kube.Clients
}

// connect builds the clients once per run.
func (g *globals) connect() (*kube.Clients, error) {
	if g.clients != nil {
		return g.clients, nil
	}
	c, err := g.env.Connect(g.flags)
	if err != nil {
		return nil, err
	}
	g.clients = c
	return c, nil
}

// NewCommand returns the ambitctl root command.
func NewCommand(env Env) *cobra.Command {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Out == nil {
		env.Out = io.Discard
	}
	if env.Err == nil {
		env.Err = io.Discard
	}
	g := &globals{env: env}
	root := &cobra.Command{
		Use:   "ambitctl",
		Short: "Install, check and inspect Ambit, the ambient service mesh",
		Long: "ambitctl installs Ambit on a Kubernetes cluster, checks it, enrols namespaces in the mesh,\n" +
			"shows what ztunnel sees on each node and manages waypoints. It talks to the cluster like\n" +
			"kubectl: --kubeconfig and --context select it.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(env.Out)
	root.SetErr(env.Err)
	pf := root.PersistentFlags()
	pf.StringVar(&g.flags.Kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&g.flags.Context, "context", "", "kubeconfig context (default the current one)")
	pf.StringVarP(&g.namespace, "namespace", "n", components.DefaultNamespace, "the namespace Ambit runs in")

	root.AddCommand(
		g.installCommand(),
		g.uninstallCommand(),
		g.checkCommand(),
		g.enrollCommand(),
		g.unenrollCommand(),
		g.statusCommand(),
		g.ztunnelCommand(),
		g.waypointCommand(),
		g.migrateCommand(),
		g.versionCommand(),
	)
	return root
}

func (g *globals) println(lines ...string) {
	for _, l := range lines {
		fmt.Fprintln(g.env.Out, l)
	}
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, d)
}
